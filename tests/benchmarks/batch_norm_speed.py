"""Training speed of the BN experiment (Ioffe & Szegedy 2015): our full ``lit-papers fit`` of a batch_norm config
against a plain PyTorch loop of the same network, optimizer and augmented DataLoader, interleaved in one process
(:mod:`tests.benchmarks.interleave`). Prints JSON: per config, training images/s of ours and of the plain loop, and
their ratio (1.0 = no overhead). Both our ``BatchNorm`` layer (``bn``) and the network without it (``no_bn``) are
timed, so the cost of the layer itself is in the JSON too (``bn`` vs ``no_bn`` plain images/s).

    OMP_NUM_THREADS=1 LIT_PAPERS_DATA=../shared/data python tests/benchmarks/batch_norm_speed.py \
        [--configs configs/batch_norm/bn.yaml configs/batch_norm/no_bn.yaml] [--steps 40] [--block 5]

The configs read the CIFAR-10 JPEG folder (first use decodes it into the uint8 cache; later runs start at once).
Validation is off in both loops (``limit_val_batches 0``): it is the same forward pass in either.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lit_papers.papers.batch_norm.model import BNConvNet  # noqa: E402
from tests.benchmarks.interleave import fit_vs_plain  # noqa: E402


def plain_step_factory(model_args: dict, lr: float, momentum: float):
    """-> factory(datamodule) -> step(): SGD on the network of the config, fed by the datamodule's own training
    loader (same decoded images, same augmentation)."""

    def factory(dm):
        torch.manual_seed(0)
        model = BNConvNet(**model_args).train()
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        loader = dm.train_dataloader()
        batches = iter(loader)

        def step() -> None:
            nonlocal batches
            try:
                images, labels = next(batches)
            except StopIteration:
                batches = iter(loader)
                images, labels = next(batches)
            loss = F.cross_entropy(model(images), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step

    return factory


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", nargs="+", default=["configs/batch_norm/bn.yaml", "configs/batch_norm/no_bn.yaml"])
    parser.add_argument("--steps", type=int, default=40, help="training steps of ours (the plain loop runs as many)")
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    out: dict = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                 "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu": platform.processor() or platform.machine(),
                 "configs": {}}
    for config in args.configs:
        cfg = yaml.safe_load((REPO / config).read_text())
        model_args = cfg["model"]["init_args"]["model"]["init_args"]
        opt_args = cfg["model"]["init_args"]["optimizer"]["init_args"]
        batch = cfg["data"]["init_args"]["batch_size"]
        # the config's workers would add processes to the timing of ours only; one in-process loader for both
        r = fit_vs_plain(str(REPO / config), plain_step_factory(model_args, opt_args["lr"], opt_args["momentum"]),
                         steps=args.steps + args.warmup, block=args.block, warmup=args.warmup,
                         extra_args=["--data.init_args.num_workers", "0"])
        out["configs"][config] = {"batch_size": batch, "ours_images_per_s": round(r["ours_per_s"] * batch, 1),
                                  "plain_images_per_s": round(r["plain_per_s"] * batch, 1),
                                  "ratio_vs_plain": r["ratio_vs_plain"], "ours_steps_timed": r["ours_steps_timed"],
                                  "plain_steps_timed": r["plain_steps_timed"]}
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
