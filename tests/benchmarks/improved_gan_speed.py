"""Training speed of the semi-supervised GAN (Salimans et al. 2016): our full ``lit-papers fit`` of an improved_gan
config against a plain PyTorch loop of the same networks and iteration (D step on labelled + unlabelled + generated
images, then a feature-matching G step), interleaved in one process (:mod:`tests.benchmarks.interleave`), on the same
decoded images. Prints JSON: training images/s (unlabelled real images per iteration x iterations/s) of ours and of
the plain loop, and their ratio.

    OMP_NUM_THREADS=1 LIT_PAPERS_DATA=../shared/data python tests/benchmarks/improved_gan_speed.py \
        [--config configs/improved_gan/cpu_1000.yaml] [--iterations 30] [--block 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lit_papers.papers.improved_gan.model import (  # noqa: E402
    Discriminator,
    Generator,
    feature_matching_loss,
    supervised_loss,
    unsupervised_loss,
)
from tests.benchmarks.interleave import fit_vs_plain  # noqa: E402


def plain_gan_step(dm, model_args: dict, batch_size: int, labelled_batch: int, lr: float, unsup_weight: float,
                   distance: str):
    """A plain loop's iteration over the datamodule's decoded training set (the same images as ours)."""
    d = Discriminator(**model_args["discriminator"]["init_args"])
    g = Generator(**model_args["generator"]["init_args"])
    opt_d = torch.optim.Adam(d.parameters(), lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr, betas=(0.5, 0.999))
    dataset = dm.train_set
    labelled = torch.nonzero(torch.as_tensor(dataset.labels) >= 0).squeeze(1)
    rng = torch.Generator().manual_seed(0)

    def batch(indices):
        items = [dataset[int(i)] for i in indices]
        return torch.stack([x for x, _ in items]) * 2 - 1, torch.as_tensor([int(y) for _, y in items])

    def step() -> None:
        x_real, _ = batch(torch.randint(len(dataset), (batch_size,), generator=rng))
        x_lab, y_lab = batch(labelled[torch.randint(len(labelled), (labelled_batch,), generator=rng)])
        with torch.no_grad():
            x_fake = g(g.sample_noise(batch_size))
        f_lab, f_real, f_fake = d.features(torch.cat([x_lab, x_real, x_fake])).split(
            [len(x_lab), batch_size, batch_size])
        loss_d = supervised_loss(d.classify(f_lab), y_lab) + unsup_weight * unsupervised_loss(
            d.classify(f_real), d.classify(f_fake))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        x_fake = g(g.sample_noise(batch_size))
        f_real, f_fake = d.features(torch.cat([x_real, x_fake])).split([batch_size, batch_size])
        loss_g = feature_matching_loss(f_real.detach(), f_fake, distance=distance)
        opt_g.zero_grad()
        loss_g.backward()  # (also fills D's grads; zeroed by the next D step)
        opt_g.step()

    return step


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/improved_gan/cpu_1000.yaml")
    parser.add_argument("--iterations", type=int, default=30, help="timed iterations of ours")
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    cfg = yaml.safe_load((REPO / args.config).read_text())
    model_args = cfg["model"]["init_args"]
    batch_size = cfg["data"]["init_args"]["batch_size"]
    labelled_batch = model_args.get("labelled_batch_size", 100)
    lr = model_args["optimizer_d"]["init_args"]["lr"]
    iterations = args.warmup + args.iterations
    result = fit_vs_plain(
        args.config,
        lambda dm: plain_gan_step(dm, model_args, batch_size, labelled_batch, lr,
                                  model_args.get("unsupervised_weight", 1.0),
                                  model_args.get("feature_distance", "squared_l2")),
        steps=2 * iterations,  # Lightning counts the D and the G optimizer step of each iteration
        block=args.block, warmup=args.warmup)
    return {
        "config": args.config,
        "batch_size": batch_size,
        "labelled_batch_size": labelled_batch,
        "ours_images_per_s": round(result["ours_per_s"] * batch_size, 2),
        "plain_images_per_s": round(result["plain_per_s"] * batch_size, 2),
        "ratio_vs_plain": result["ratio_vs_plain"],
        "ours_iterations_timed": result["ours_steps_timed"],
        "plain_iterations_timed": result["plain_steps_timed"],
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
