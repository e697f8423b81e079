"""Benchmark: our Mask R-CNN R50-FPN (timm resnet50 + lit_papers detection) vs torchvision's
``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``, same input size, batch and number of classes.

    python tests/benchmarks/mask_rcnn_step.py [--size 384] [--batch 2] [--rounds 7] [--device cpu|cuda]
    python tests/benchmarks/mask_rcnn_step.py --profile          # torch.profiler table of OUR inference
    GPU:  python tests/benchmarks/mask_rcnn_step.py --device cuda --size 800 --rounds 20 --warmup 3

Timing is **interleaved** so that machine load cannot fake a ratio: both models live in one process and, in
each round, one training step (forward + backward + SGD step) and one inference pass of each model are timed
back to back, alternating which model goes first. Per round we get ours / torchvision; the JSON reports both
medians, the median of the per-round ratios and their spread (min, max, interquartile range over rounds). A
load burst hits both models of the same round, so it moves the ratio far less than the medians.
Peak memory: CUDA -> ``max_memory_allocated`` per model (reset before each); CPU -> peak RSS of a child process
per model (memory does not depend on load; ``--skip-memory`` to skip). torchvision's internal resize is a no-op
(min_size = max_size = the input size), since our datamodule resizes before the model.
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


def make_model(which: str, num_classes: int, size: int):
    """Both models with THE SAME weights (torchvision's random init, copied into ours in parameter order; the two
    state dicts have the same order and shapes) and ``aligned=False`` (torchvision's RoIAlign), so both compute
    the same function and do the same work: with different random inits the number of detections that pass the
    score threshold (and so the mask head's work) differs between models and the timing compares nothing.
    ``tests/detection/test_parity.py`` checks that the outputs are then equal."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    theirs = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes + 1, min_size=size,
                                   max_size=size)
    if which == "torchvision":
        return theirs
    from lit_papers.papers.mask_rcnn.model import MaskRCNN

    ours = MaskRCNN(num_classes=num_classes, backbone="resnet50", aligned=False)
    with torch.no_grad():
        for (name, mine), (_, value) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            if mine.shape != value.shape:
                raise RuntimeError(f"cannot copy torchvision's weights: {name} {tuple(mine.shape)} vs {tuple(value.shape)}")
            mine.copy_(value)
    return ours


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


class Runner:
    """One model, its optimizer and inputs; ``train_step()`` / ``infer()`` return seconds."""

    def __init__(self, which: str, args) -> None:
        self.which, self.device = which, args.device
        self.model = make_model(which, 80, args.size).to(args.device)
        self.images, self.targets = inputs(args.batch, args.size, args.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.001, momentum=0.9)
        self.sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def train_step(self) -> float:
        self.model.train()
        self.sync()
        t = time.perf_counter()
        loss = sum(self.model(self.images, self.targets).values())
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.sync()
        return time.perf_counter() - t

    @torch.no_grad()
    def infer(self) -> float:
        self.model.eval()
        self.sync()
        t = time.perf_counter()
        self.model(self.images)
        self.sync()
        return time.perf_counter() - t


def spread(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q[0], "q3": q[2]}


def interleaved(args) -> dict:
    runners = {w: Runner(w, args) for w in ("ours", "torchvision")}
    times = {w: {"train": [], "infer": []} for w in runners}
    for r in range(args.warmup + args.rounds):
        order = ("ours", "torchvision") if r % 2 == 0 else ("torchvision", "ours")
        for kind in ("train", "infer"):
            for w in order:
                t = runners[w].train_step() if kind == "train" else runners[w].infer()
                if r >= args.warmup:
                    times[w][kind].append(t)
    out = {}
    for kind, key in (("train", "train_step"), ("infer", "inference")):
        ratios = [a / b for a, b in zip(times["ours"][kind], times["torchvision"][kind])]
        out[f"ours_{key}_s"] = statistics.median(times["ours"][kind])
        out[f"torchvision_{key}_s"] = statistics.median(times["torchvision"][kind])
        out[f"ratio_{key}"] = statistics.median(ratios)
        out[f"ratio_{key}_spread"] = {k: round(v, 3) for k, v in spread(ratios).items()}
    return out


def peak_memory_child(which: str, args) -> float:
    """Peak memory (MiB) of one training step + one inference of ``which``, measured in this process."""
    runner = Runner(which, args)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:  # building ours goes through torchvision's model (its weights are copied): reset the high-water mark
        try:  # to the current RSS (Linux >= 4.0), so the peak counts the resident model, not both models
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
    runner.train_step()
    runner.infer()
    if args.device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    # VmHWM (this process's peak RSS) rather than getrusage's ru_maxrss, which Linux carries over from the parent
    # across fork + exec (a child of a big parent would report the parent's peak)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(args) -> dict:
    out = {}
    for which in ("ours", "torchvision"):
        if args.device == "cuda":
            torch.cuda.empty_cache()
        cmd = [sys.executable, __file__, "--memory-of", which, "--size", str(args.size), "--batch", str(args.batch),
               "--device", args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        out[f"{which}_peak_mem_mib"] = round(float(proc.stdout.strip().splitlines()[-1]), 1)
    out["ratio_peak_mem"] = out["ours_peak_mem_mib"] / out["torchvision_peak_mem_mib"]
    return out


def loader_speed(args) -> dict:
    """The COCO loader's images/s with augmentation at 800 px (``--loader``; needs $LIT_PAPERS_DATA/coco)."""
    from lit_papers.data.coco import COCODataModule

    dm = COCODataModule(min_size=800, max_size=1333, batch_size=2, num_workers=args.workers)
    dm.setup("fit")
    n, t0 = 0, None
    for i, (images, _) in enumerate(dm.train_dataloader()):
        if i == 1:
            t0 = time.perf_counter()  # skip worker start-up
        elif i > 1:
            n += len(images)
        if i >= 15:
            break
    return {"coco_loader_images_per_s": round(n / (time.perf_counter() - t0), 2), "workers": args.workers}


def profile(args) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    runner = Runner(args.profile_model, args)
    runner.infer()  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with torch_profile(activities=activities, record_shapes=False) as prof:
        runner.infer()
    sort = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=args.profile_rows)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--memory-only", action="store_true")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of one inference and exit")
    p.add_argument("--profile-rows", type=int, default=20)
    p.add_argument("--profile-model", choices=["ours", "torchvision"], default="ours")
    p.add_argument("--loader", action="store_true", help="also time the COCO loader (800 px, augmentation)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-of", choices=["ours", "torchvision"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_of:
        print(peak_memory_child(args.memory_of, args))
        return
    if args.profile:
        print(profile(args))
        return
    if args.memory_only:
        print(json.dumps({"device": args.device, "size": args.size, "batch": args.batch, **peak_memory(args)}, indent=2))
        return
    t0 = time.time()
    report = {"device": args.device, "size": args.size, "batch": args.batch, "rounds": args.rounds,
              "warmup_rounds": args.warmup, "threads": torch.get_num_threads()}
    if not args.skip_memory:  # first, while this process is small
        report.update(peak_memory(args))
    report["load_average_start"] = os.getloadavg()[0]
    report.update(interleaved(args))
    report["load_average_end"] = os.getloadavg()[0]
    if args.loader:
        if not os.environ.get("LIT_PAPERS_DATA") and (REPO.parent / "shared" / "data").is_dir():
            os.environ["LIT_PAPERS_DATA"] = str(REPO.parent / "shared" / "data")
        report["loader"] = loader_speed(args)
    report["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
