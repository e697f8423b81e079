"""Proposal time per image, DeepMask alone vs SharpMask (DeepMask + refinement), on held-out shapes images.

    PYTHONPATH=. python tests/benchmarks/sharpmask_speed.py --checkpoint <sharpmask run>/checkpoints/last.ckpt \
        --config configs/sharpmask/shapes.yaml [--images 20]

Prints one JSON object: seconds per image for each, the ratio, device, threads. Without a checkpoint, random
weights of the config's architecture are timed (the mask count, hence the time, then differs from a trained run).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import yaml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/sharpmask/shapes.yaml")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    from jsonargparse import ArgumentParser

    from lit_papers.data.coco_patches import ShapesPatchesDataModule

    config = yaml.safe_load(open(args.config))
    p = ArgumentParser()
    p.add_argument("--model", type=torch.nn.Module)
    model = p.instantiate_classes(p.parse_object({"model": config["model"]["init_args"]["model"]})).model
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    hp = config["model"]["init_args"]
    dm = ShapesPatchesDataModule(**{k: v for k, v in config["data"]["init_args"].items()})
    dm.setup("test")
    images = [dm.datasets["test"][i][0] for i in range(min(args.images, len(dm.datasets["test"])))]
    kw = dict(scales=hp["scales"], max_proposals=hp["max_proposals"], mask_threshold=hp["mask_threshold"])
    out = {"images": len(images), "threads": torch.get_num_threads(), "device": "cpu"}
    with torch.no_grad():
        for name, fn in (("deepmask", lambda im: model.deepmask.propose(im, **kw)),
                         ("sharpmask", lambda im: model.propose_sets(im, **kw)[""])):
            fn(images[0])  # warm-up
            start = time.perf_counter()
            for im in images:
                fn(im)
            out[f"{name}_seconds_per_image"] = (time.perf_counter() - start) / len(images)
    out["sharpmask_over_deepmask"] = out["sharpmask_seconds_per_image"] / out["deepmask_seconds_per_image"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
