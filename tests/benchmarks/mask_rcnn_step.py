"""Benchmark: our Mask R-CNN R50-FPN (timm resnet50 + lit_papers detection) vs torchvision's
``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``, same input size, batch and number of classes;
plus the COCO loader's images/s with augmentation.

    python tests/benchmarks/mask_rcnn_step.py [--size 512] [--batch 2] [--steps 5] [--device cpu|cuda]

Prints one JSON object: per model the training-step median (forward + backward + SGD step) and inference
median in seconds and the peak memory (CUDA: max allocated; CPU: the measuring child process's peak RSS, MiB),
and the ratios ours / torchvision (target <= 1.05). Each model is measured in its own child process (clean peak
memory). torchvision's internal resize is made a no-op (min_size = max_size = the input size), since our
datamodule resizes before the model. The default run is short (CPU, 384 px, batch 2, 3 timed steps).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
if not os.environ.get("LIT_PAPERS_DATA") and (REPO.parent / "shared" / "data").is_dir():
    os.environ["LIT_PAPERS_DATA"] = str(REPO.parent / "shared" / "data")  # the real COCO sample, as the tests


def make_model(which: str, num_classes: int, size: int):
    if which == "ours":
        from lit_papers.papers.mask_rcnn.model import MaskRCNN

        return MaskRCNN(num_classes=num_classes, backbone="resnet50")
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes + 1, min_size=size,
                                 max_size=size)


def inputs(batch: int, size: int, device: str):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g).to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        n = 4
        xy = torch.rand(n, 2, generator=g) * size * 0.6
        wh = torch.rand(n, 2, generator=g) * size * 0.3 + 16
        boxes = torch.cat([xy, xy + wh], 1).round()
        masks = torch.zeros(n, size, size, dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        targets.append({"boxes": boxes.to(device), "labels": torch.randint(1, 81, (n,), generator=g).to(device),
                        "masks": masks.to(device)})
    return images, targets


def measure(which: str, args) -> dict:
    torch.manual_seed(0)
    device = args.device
    model = make_model(which, 80, args.size).to(device)
    images, targets = inputs(args.batch, args.size, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_times, infer_times = [], []
    model.train()
    for step in range(args.warmup + args.steps):
        sync()
        t = time.perf_counter()
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        if step >= args.warmup:
            train_times.append(time.perf_counter() - t)
    model.eval()
    with torch.no_grad():
        for step in range(args.warmup + args.steps):
            sync()
            t = time.perf_counter()
            model(images)
            sync()
            if step >= args.warmup:
                infer_times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"train_step_s": statistics.median(train_times), "inference_s": statistics.median(infer_times),
            "peak_mem_mib": round(peak, 1), "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


def loader_speed(args) -> dict:
    from lit_papers.data.coco import COCODataModule

    dm = COCODataModule(min_size=800, max_size=1333, batch_size=2, num_workers=args.workers)
    dm.setup("fit")
    loader = dm.train_dataloader()
    n, t0 = 0, None
    for i, (images, _) in enumerate(loader):
        if i == 1:
            t0 = time.perf_counter()  # skip worker start-up
        elif i > 1:
            n += len(images)
        if i >= args.loader_batches:
            break
    return {"coco_loader_images_per_s": round(n / (time.perf_counter() - t0), 2), "workers": args.workers,
            "min_size": 800}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--loader-batches", type=int, default=15)
    p.add_argument("--only", choices=["ours", "torchvision"], help=argparse.SUPPRESS)
    p.add_argument("--skip-loader", action="store_true")
    args = p.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args)))
        return
    results = {}
    for which in ("ours", "torchvision"):
        cmd = [sys.executable, __file__, "--only", which] + [a for a in sys.argv[1:] if a != "--skip-loader"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        results[which] = json.loads(out.stdout.strip().splitlines()[-1])
    report = {"device": args.device, "size": args.size, "batch": args.batch, "steps": args.steps,
              "threads": torch.get_num_threads(), **results,
              "ratio_train_step": results["ours"]["train_step_s"] / results["torchvision"]["train_step_s"],
              "ratio_inference": results["ours"]["inference_s"] / results["torchvision"]["inference_s"],
              "ratio_peak_mem": results["ours"]["peak_mem_mib"] / results["torchvision"]["peak_mem_mib"]}
    if not args.skip_loader:
        report["loader"] = loader_speed(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
