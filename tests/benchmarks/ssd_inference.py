"""Benchmark: images per second at inference, our SSD300 (lit_papers.papers.ssd.model.SSD) vs torchvision's
``ssd300_vgg16(weights=None, weights_backbone=None)``, 21 outputs (VOC), the same weights in both.

    python tests/benchmarks/ssd_inference.py [--batch 8] [--rounds 7] [--warmup 1] [--device cpu|cuda]

Both models hold the same weights (torchvision's random init copied into ours with ``load_torchvision_ssd300``)
and the same default-box configuration, so they compute the same detections (``tests/papers/test_ssd.py`` checks
that) and do the same work, including the per-class NMS on the same candidates. Timing is **interleaved**: in each
round one batch of ``--batch`` 300x300 images goes through each model back to back, alternating which goes first,
so a load burst of the shared machine hits both. The JSON reports each model's median images/s over rounds, the
median of the per-round ratios ours / torchvision and their spread (min, max). Inputs are already 300x300, so
torchvision's internal resize and our warp are no-ops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

TV_COCO_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)  # torchvision's default-box scales, used by both


def make_models(device: str):
    from torchvision.models.detection import ssd300_vgg16

    from lit_papers.papers.ssd.model import SSD, load_torchvision_ssd300

    torch.manual_seed(0)
    theirs = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)
    theirs.anchor_generator.clip = False
    ours = SSD(num_classes=20, scales=TV_COCO_SCALES, steps=(8, 16, 32, 64, 100, 300),
               mean=(0.48235, 0.45882, 0.40784), std=(1 / 255, 1 / 255, 1 / 255))
    load_torchvision_ssd300(ours, theirs)
    return ours.eval().to(device), theirs.eval().to(device)


def timed(model, images, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        model(images)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    ours, theirs = make_models(args.device)
    torch.manual_seed(1)
    images = [torch.rand(3, 300, 300, device=args.device) for _ in range(args.batch)]
    for _ in range(args.warmup):
        timed(ours, images, args.device), timed(theirs, images, args.device)
    ours_ips, theirs_ips, ratios = [], [], []
    for r in range(args.rounds):
        order = (("ours", ours), ("torchvision", theirs)) if r % 2 == 0 else (("torchvision", theirs), ("ours", ours))
        seconds = {name: timed(model, images, args.device) for name, model in order}
        ours_ips.append(args.batch / seconds["ours"])
        theirs_ips.append(args.batch / seconds["torchvision"])
        ratios.append(ours_ips[-1] / theirs_ips[-1])
    result = {
        "benchmark": "ssd300_inference",
        "device": args.device if args.device != "cuda" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(), "batch": args.batch, "rounds": args.rounds, "input": [300, 300],
        "ours_images_per_s": round(statistics.median(ours_ips), 3),
        "torchvision_images_per_s": round(statistics.median(theirs_ips), 3),
        "ratio_ours_vs_torchvision": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
