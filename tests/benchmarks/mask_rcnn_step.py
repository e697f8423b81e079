"""Benchmark: our Mask R-CNN R50-FPN (timm resnet50 + lit_papers detection) vs torchvision's
``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``, same input size, batch and number of classes.

    python tests/benchmarks/mask_rcnn_step.py [--size 384] [--batch 2] [--rounds 7] [--device cpu|cuda]
    python tests/benchmarks/mask_rcnn_step.py --profile --rounds 3   # where the time goes, ours vs torchvision
    GPU:  python tests/benchmarks/mask_rcnn_step.py --device cuda --size 800 --rounds 20 --warmup 3

Timing is **interleaved** so that machine load cannot fake a ratio: both models live in one process and, in
each round, one training step (forward + backward + SGD step) and one inference pass of each model are timed
back to back, alternating which model goes first. Per round we get ours / torchvision; the JSON reports both
medians, the median of the per-round ratios and their spread (min, max, interquartile range over rounds). A
load burst hits both models of the same round, so it moves the ratio far less than the medians.
Peak memory: CUDA -> ``max_memory_allocated`` per model (reset before each); CPU -> peak RSS of a child process
per model (memory does not depend on load; ``--skip-memory`` to skip). The two children are made alike before
the high-water mark is reset: each imports both packages and builds **both** models (ours needs torchvision's
weights anyway), then drops the one it does not measure, so neither peak counts the other's imports (timm and
lit_papers add ~50 MiB) or the allocator's memory of freed weights; ``peak_step_mib`` is the part of the peak the
step adds to the resident process. torchvision's internal resize is a no-op
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

    def __init__(self, which: str, args, model: torch.nn.Module | None = None) -> None:
        self.which, self.device = which, args.device
        self.model = (model if model is not None else make_model(which, 80, args.size)).to(args.device)
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


def _status_mib(key: str) -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return None


def peak_memory_child(which: str, args) -> tuple[float, float]:
    """(peak, peak added by the step) in MiB of one training step + one inference of ``which``, in this process.
    Both models are built first (ours = torchvision's weights copied) and the other one is dropped, so the two
    children have the same imports and allocation history."""
    import gc

    models = {"ours": make_model("ours", 80, args.size), "torchvision": make_model("torchvision", 80, args.size)}
    model = models.pop(which)
    del models
    gc.collect()
    runner = Runner(which, args, model=model)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:  # reset the high-water mark to the current RSS (Linux >= 4.0): the peak from here on
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        before = _status_mib("VmRSS") or 0.0
    runner.train_step()
    runner.infer()
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:  # VmHWM (this process's peak RSS) rather than getrusage's ru_maxrss, which Linux carries over from the
        # parent across fork + exec (a child of a big parent would report the parent's peak)
        peak = _status_mib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak, peak - before


def peak_memory(args) -> dict:
    out = {}
    for which in ("ours", "torchvision"):
        if args.device == "cuda":
            torch.cuda.empty_cache()
        cmd = [sys.executable, __file__, "--memory-of", which, "--size", str(args.size), "--batch", str(args.batch),
               "--device", args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        peak, step = (float(v) for v in proc.stdout.strip().splitlines()[-1].split())
        out[f"{which}_peak_mem_mib"], out[f"{which}_peak_step_mib"] = round(peak, 1), round(step, 1)
    out["ratio_peak_mem"] = out["ours_peak_mem_mib"] / out["torchvision_peak_mem_mib"]
    out["ratio_peak_step_mem"] = out["ours_peak_step_mib"] / out["torchvision_peak_step_mib"]
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


# The stages compared in ``--profile``: (ours, torchvision) module paths ("a+b": the sum of both modules' times;
# "@a.b": the method b of submodule a, for work that is not a module's forward); each pair does the same computation.
STAGES = (
    ("normalise + pad (torchvision: + resize)", "@batch_images", "transform"),
    ("backbone + FPN", "features", "backbone"),
    ("RPN", "rpn", "rpn"),
    ("RoI heads (all)", "roi_heads", "roi_heads"),
    ("  box RoIAlign", "roi_heads.box_roi_pool", "roi_heads.box_roi_pool"),
    ("  box head (fc6/fc7)", "roi_heads.box_head", "roi_heads.box_head"),
    ("  mask RoIAlign", "roi_heads.mask_branch.pooler", "roi_heads.mask_roi_pool"),
    ("  mask head (convs, deconv, logits)", "roi_heads.mask_branch.head", "roi_heads.mask_head+roi_heads.mask_predictor"),
    ("postprocess (box rescale, mask paste)", "@postprocess", "@transform.postprocess"),
)


def stage_timers(model: torch.nn.Module, paths: list[str], sync) -> dict[str, list[float]]:
    """Hooks that append each listed submodule's forward wall time (s) to ``times[key]`` ("a+b": both modules'
    times under one key; "@a.b": a wrapper around the method ``b`` of submodule ``a``)."""
    times: dict[str, list[float]] = {key: [] for key in paths}
    for key, path in ((k, part) for k in paths for part in k.split("+")):
        if path.startswith("@"):
            owner, _, name = path[1:].rpartition(".")
            module = model.get_submodule(owner)
            method = getattr(module, name)

            def timed(*args, method=method, key=key, **kwargs):
                sync()
                t = time.perf_counter()
                out = method(*args, **kwargs)
                sync()
                times[key].append(time.perf_counter() - t)
                return out

            setattr(module, name, timed)
            continue
        module = model.get_submodule(path)
        start: list[float] = []

        def pre(_m, _a, start=start):
            sync()
            start.append(time.perf_counter())

        def post(_m, _a, _o, key=key, start=start):
            sync()
            times[key].append(time.perf_counter() - start.pop())

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)
    return times


def profile(args) -> None:
    """Where the time goes, ours against torchvision, measured interleaved like the ratios (same weights, same
    inputs, alternating order per round): (1) forward wall time of each stage (module forward hooks), median over
    rounds, for the training step's forward and for inference, with the whole step (training: forward + backward
    + SGD step) beside it; (2) torch.profiler self CPU time per op for one training step and one inference of
    each model, the ops sorted by how much more time ours spends in them. Prints markdown tables."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    runners = {w: Runner(w, args) for w in ("ours", "torchvision")}
    col = {"ours": 1, "torchvision": 2}
    timers = {w: stage_timers(r.model, [s[col[w]] for s in STAGES], r.sync) for w, r in runners.items()}
    totals = {w: {"train": [], "infer": []} for w in runners}
    stage = {w: {"train": {s[0]: [] for s in STAGES}, "infer": {s[0]: [] for s in STAGES}} for w in runners}
    for r in range(args.warmup + args.rounds):
        order = ("ours", "torchvision") if r % 2 == 0 else ("torchvision", "ours")
        for kind in ("train", "infer"):
            for w in order:
                for times in timers[w].values():
                    times.clear()
                t = runners[w].train_step() if kind == "train" else runners[w].infer()
                if r < args.warmup:
                    continue
                totals[w][kind].append(t)
                for name, *paths in STAGES:
                    stage[w][kind][name].append(sum(timers[w][paths[col[w] - 1]]))
    med = statistics.median
    lines = [f"stage forward wall time, median of {args.rounds} interleaved rounds (s), {args.device}, "
             f"{args.size} px, batch {args.batch}, {torch.get_num_threads()} thread(s), "
             f"load average {os.getloadavg()[0]:.1f}", "",
             "| stage | train: ours | train: torchvision | ratio | inference: ours | inference: torchvision | ratio |",
             "|---|---|---|---|---|---|---|"]
    rows = [("whole step (train: fwd + bwd + SGD)", {w: {k: totals[w][k] for k in totals[w]} for w in runners})]
    rows += [(name, {w: {k: stage[w][k][name] for k in ("train", "infer")} for w in runners}) for name, *_ in STAGES]
    for name, t in rows:
        cells = []
        for kind in ("train", "infer"):
            a, b = med(t["ours"][kind]), med(t["torchvision"][kind])
            cells += [f"{a:.3f}", f"{b:.3f}", f"{a / b:.2f}" if b > 0 else "-"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    print("\n".join(lines), flush=True)  # the stage table survives a run cut short during the op profiles
    lines = []
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    for kind in ("train", "infer"):
        self_us: dict[str, dict[str, float]] = {}
        calls: dict[str, dict[str, int]] = {}
        for w in ("torchvision", "ours") if kind == "train" else ("ours", "torchvision"):
            with torch_profile(activities=activities, record_shapes=False) as prof:
                runners[w].train_step() if kind == "train" else runners[w].infer()
            for e in prof.key_averages():
                self_us.setdefault(e.key, {})[w] = e.self_device_time_total if args.device == "cuda" else e.self_cpu_time_total
                calls.setdefault(e.key, {})[w] = e.count
        total = {w: sum(v.get(w, 0.0) for v in self_us.values()) for w in runners}
        lines += ["", f"torch.profiler self {'CUDA' if args.device == 'cuda' else 'CPU'} time per op, one "
                  f"{'training step' if kind == 'train' else 'inference'} each (ms; total ours "
                  f"{total['ours'] / 1e3:.0f}, torchvision {total['torchvision'] / 1e3:.0f}); the "
                  f"{args.profile_rows} ops with the largest |ours - torchvision|", "",
                  "| op | ours ms | calls | torchvision ms | calls | ours - torchvision ms |", "|---|---|---|---|---|---|"]
        diff = sorted(self_us, key=lambda k: -abs(self_us[k].get("ours", 0.0) - self_us[k].get("torchvision", 0.0)))
        for key in diff[:args.profile_rows]:
            a, b = self_us[key].get("ours", 0.0) / 1e3, self_us[key].get("torchvision", 0.0) / 1e3
            lines.append(f"| `{key}` | {a:.1f} | {calls[key].get('ours', 0)} | {b:.1f} | "
                         f"{calls[key].get('torchvision', 0)} | {a - b:+.1f} |")
    print("\n".join(lines), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--memory-only", action="store_true")
    p.add_argument("--profile", action="store_true",
                   help="print per-stage and per-op tables, ours vs torchvision (interleaved), and exit")
    p.add_argument("--profile-rows", type=int, default=15)
    p.add_argument("--loader", action="store_true", help="also time the COCO loader (800 px, augmentation)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-of", choices=["ours", "torchvision"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_of:
        print(*peak_memory_child(args.memory_of, args))
        return
    if args.profile:
        profile(args)
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
