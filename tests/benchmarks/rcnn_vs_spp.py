"""Seconds per image at test time, R-CNN vs SPP-net, on the same proposals and the same conv body (He et al. 2014,
sec. 4.2: the speed claim at comparable accuracy). Prints JSON. Run (one thread, as the CPU recipes):

    OMP_NUM_THREADS=1 PYTHONPATH=. python tests/benchmarks/rcnn_vs_spp.py [--voc-proposals 2000] [--repeats 3]

Two settings, each with both detectors built from the same conv body weights (copied):

- ``shapes``: 20 generated 64-px VOC-format shapes images, the networks of configs/{rcnn,spp_net}/shapes.yaml
  (R-CNN: 32-px crops; SPP-net: the image at 2x), selective search proposals as in those recipes;
- ``voc``: the real VOC images under ``$LIT_PAPERS_DATA/voc`` (about 500 x 375), selective search fast mode with
  OpenCV's defaults capped at ``--voc-proposals``, R-CNN crops of ``--voc-crop`` pixels (227 in the paper; 64 by
  default so that the benchmark runs in minutes on one core), SPP-net at the image's own size.

Timed per image as CPU seconds of this process (``time.process_time``: on a shared machine the wall time mostly
measures the other jobs; wall seconds are printed too), proposals excluded (computed once beforehand, as the paper reports them separately): the region
features, the SVM scores, box regression and class-wise NMS (``RegionDetectorLitModule.detect``; the SVMs and
regressors hold random weights, which does not change the cost). ``ratio`` = R-CNN seconds / SPP-net seconds
(the paper: 24-102x with ZF-5 on ~2000 proposals on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from lit_papers.data.images import read_image
from lit_papers.detection.region_classifiers import (
    LinearSVMs,
    RegionDetectorLitModule,
    RidgeBoxRegressors,
    SelectiveSearch,
    image_key,
)
from lit_papers.papers.rcnn.model import RCNN, ConvNet
from lit_papers.papers.spp_net.model import SPPNet
from lit_papers.papers.spp_net.module import SPPNetLitModule


def _with_random_classifiers(module, num_classes: int, image: torch.Tensor) -> None:
    """Random SVMs / regressors sized for the module's features (the cost does not depend on the values)."""
    with torch.no_grad():
        out = module.model(image, torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    module.svms = LinearSVMs(num_classes=num_classes, dim=out["fc7"].shape[1])
    module.regressors = RidgeBoxRegressors(num_classes=num_classes, dim=out["pool5"].shape[1])
    torch.nn.init.normal_(module.svms.weight, std=0.01)
    torch.nn.init.normal_(module.regressors.weight, std=1e-4)
    module.fitted_at_step.fill_(0)


def _detectors(*, num_classes: int, widths, crop: int, image_scale: float, levels, fc_dim: int):
    torch.manual_seed(0)
    body = ConvNet(widths=widths)
    other = ConvNet(widths=widths)
    other.load_state_dict(body.state_dict())  # the same conv body weights in both
    rcnn = RCNN(backbone=body, num_classes=num_classes, crop_size=crop, context_padding=16 * crop / 227,
                pool5_kernel=2, pool5_stride=2, fc_dim=fc_dim)
    spp = SPPNet(backbone=other, num_classes=num_classes, levels=levels, image_scale=image_scale, fc_dim=fc_dim)
    opt = lambda p: torch.optim.SGD(p, lr=0.0)  # noqa: E731 (never stepped)
    return (RegionDetectorLitModule(model=rcnn, optimizer=opt, num_classes=num_classes).eval(),
            SPPNetLitModule(model=spp, optimizer=opt, num_classes=num_classes).eval())


def _time(module, images: list[torch.Tensor], repeats: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per image, medians over ``repeats``. The CPU time of this process is the
    number to compare on a shared machine (one thread: it is the single-core time, whatever else runs)."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        for image in images:
            module.detect(image)
        cpu.append((time.process_time() - c0) / len(images))
        wall.append((time.perf_counter() - w0) / len(images))
    return statistics.median(cpu), statistics.median(wall)


def run_setting(name: str, images: list[torch.Tensor], search: SelectiveSearch, repeats: int, **net) -> dict:
    start = time.process_time()
    proposals = [search(image) for image in images]
    proposal_s = (time.process_time() - start) / len(images)
    rcnn, spp = _detectors(**net)
    for module in (rcnn, spp):
        _with_random_classifiers(module, net["num_classes"], images[0])
        for image, boxes in zip(images, proposals):  # the same proposals for both
            module._proposal_cache[image_key(image)] = boxes
    with torch.no_grad():
        for module in (rcnn, spp):
            module.detect(images[0])  # warm-up
        rcnn_s, spp_s = _time(rcnn, images, repeats), _time(spp, images, repeats)
    return {"setting": name, "images": len(images), "image_hw": list(images[0].shape[-2:]),
            "proposals_per_image": float(np.mean([len(p) for p in proposals])),
            "selective_search_cpu_s_per_image": round(proposal_s, 4), "network": net,
            "rcnn_s_per_image": round(rcnn_s[0], 4), "spp_s_per_image": round(spp_s[0], 4),
            "ratio": round(rcnn_s[0] / spp_s[0], 2),
            "wall": {"rcnn_s_per_image": round(rcnn_s[1], 4), "spp_s_per_image": round(spp_s[1], 4)}}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--voc-proposals", type=int, default=2000)
    parser.add_argument("--voc-crop", type=int, default=64)
    parser.add_argument("--voc-images", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from lit_papers.data.voc_shapes import render_voc_image

    rng = np.random.default_rng(0)
    shapes = [torch.from_numpy(render_voc_image(rng, size=64, max_objects=3, border=2, difficult_visible=0.6,
                                                margin=8)[0]).permute(2, 0, 1).float() / 255 for _ in range(20)]
    results = [run_setting("shapes", shapes, SelectiveSearch(base_k=20, inc_k=20), args.repeats, num_classes=3,
                           widths=[16, 32, 64], crop=32, image_scale=2.0, levels=[1, 2, 4], fc_dim=256)]
    root = Path(os.environ.get("LIT_PAPERS_DATA", "../shared/data")) / "voc" / "VOCdevkit" / "VOC2007" / "JPEGImages"
    files = sorted(root.glob("*.jpg"))[: args.voc_images]
    if files:
        voc = [torch.from_numpy(np.ascontiguousarray(read_image(f))).permute(2, 0, 1).float() / 255 for f in files]
        results.append(run_setting("voc", voc, SelectiveSearch(max_proposals=args.voc_proposals), args.repeats,
                                   num_classes=20, widths=[16, 32, 64], crop=args.voc_crop, image_scale=1.0,
                                   levels=[1, 2, 3, 6], fc_dim=256))
    out = {"benchmark": "rcnn_vs_spp", "results": results, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
