"""Training speed of the Gated PixelCNN (and the plain PixelCNN arm) on CPU: images/s of our
``GatedPixelCNNLitModule`` under a Lightning ``Trainer`` vs a plain PyTorch loop of the same network, optimizer and
pre-collated batches (the exact CIFAR-10 pickle sample, ``normalization: none``). Prints JSON with the median
images/s of each, ``ratio`` = ours / plain (1.0 = no framework cost) and the per-round ratios.

    OMP_NUM_THREADS=1 python tests/benchmarks/gated_pixelcnn_speed.py [--steps 20] [--rounds 2] [--arm gated|plain]

The network is the one of ``configs/gated_pixelcnn/cifar_<arm>_cpu.yaml`` (batch size from the config). Rounds
alternate plain / ours in one process, so background load affects both alike. A step is timed from one batch start
to the next (everything between steps counts); the first two steps of each run are warm-up and left out.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lit_papers.data.cifar import CIFARDataModule  # noqa: E402
from lit_papers.metrics.bits_per_dim import categorical_nll_nats  # noqa: E402
from lit_papers.papers.gated_pixelcnn import model as models  # noqa: E402
from lit_papers.papers.gated_pixelcnn.module import GatedPixelCNNLitModule, to_levels  # noqa: E402

WARMUP = 2


def recipe(arm: str) -> dict:
    return yaml.safe_load((REPO / "configs" / "gated_pixelcnn" / f"cifar_{arm}_cpu.yaml").read_text())


def build(cfg: dict) -> torch.nn.Module:
    spec = cfg["model"]["init_args"]["model"]
    torch.manual_seed(0)
    return getattr(models, spec["class_path"].rsplit(".", 1)[1])(**spec["init_args"])


def make_batches(n: int, batch_size: int) -> list:
    dm = CIFARDataModule(val_size=250, batch_size=batch_size, num_workers=0, download=False, normalization="none",
                         augment=False)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    return [batches[i % len(batches)] for i in range(n)]


def plain_loop(net: torch.nn.Module, batches: list, lr: float) -> list[float]:
    """The same objective as the module (mean NLL per sub-pixel, class-conditional) in a bare loop."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    stamps = []
    for images, labels in batches:
        stamps.append(time.perf_counter())
        targets = to_levels(images)
        nll = categorical_nll_nats(net(images, labels), targets)
        loss = nll.mean() / targets[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)][WARMUP:]


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.stamps.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.stamps.append(time.perf_counter())

    def steps(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)][WARMUP:]


class Batches(L.LightningDataModule):
    def __init__(self, batches: list) -> None:
        super().__init__()
        self.batches = batches

    def train_dataloader(self):
        return DataLoader(self.batches, batch_size=None, shuffle=False)


def ours(net: torch.nn.Module, batches: list, lr: float, conditional: bool, tmp: Path) -> list[float]:
    module = GatedPixelCNNLitModule(model=net, optimizer=lambda p: torch.optim.Adam(p, lr=lr),
                                    conditional=conditional, num_classes=10)
    timer = StepTimer()
    trainer = L.Trainer(max_steps=len(batches), accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[timer], default_root_dir=str(tmp), log_every_n_steps=50)
    trainer.fit(module, datamodule=Batches(batches))
    return timer.steps()


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arm", choices=["gated", "plain"], default="gated")
    args = parser.parse_args()
    cfg = recipe(args.arm)
    batch_size = cfg["data"]["init_args"]["batch_size"]
    lr = cfg["model"]["init_args"]["optimizer"]["init_args"]["lr"]
    conditional = cfg["model"]["init_args"]["conditional"]
    batches = make_batches(args.steps + WARMUP, batch_size)
    per_round, plain_ips, ours_ips = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            p = statistics.median(plain_loop(build(cfg), batches, lr))
            o = statistics.median(ours(build(cfg), batches, lr, conditional, Path(tmp)))
            plain_ips.append(batch_size / p)
            ours_ips.append(batch_size / o)
            per_round.append(round(p / o, 4))
    net = build(cfg)
    out = {
        "model": f"configs/gated_pixelcnn/cifar_{args.arm}_cpu.yaml",
        "parameters": sum(q.numel() for q in net.parameters()),
        "batch_size": batch_size,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "plain_images_per_s": round(statistics.median(plain_ips), 2),
        "ours_images_per_s": round(statistics.median(ours_ips), 2),
        "ratio": round(statistics.median(ours_ips) / statistics.median(plain_ips), 4),
        "ratio_per_round": per_round,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
