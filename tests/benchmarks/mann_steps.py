"""MANN training speed: our full ``fit`` (LitPapersCLI: Trainer + OmniglotDataModule + MANNLitModule with the CLI's
callbacks and loggers, ``configs/mann/small1_mann.yaml``: 16 episodes of 5 classes x 10 drawings per step) in
steps/s, divided by a plain PyTorch loop's steps/s (issue 19, target >= 1.0): the same MemoryAugmentedNetwork,
loss (cross-entropy at every step of the sequence) and RMSprop, episodes built by the simplest correct code (index a
float tensor of the training classes' drawings, shuffle, stack), no Lightning. Interleaved in one process
(``tests/benchmarks/interleave.py``). Prints one JSON line with ``ratio_vs_plain``.

    python tests/benchmarks/mann_steps.py [--fit-steps 30] [--block 5] [--threads 1] [--config ...]
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F

from lit_papers.papers.mann.model import MemoryAugmentedNetwork

try:
    from tests.benchmarks.interleave import fit_vs_plain
except ImportError:  # run as a script: tests/benchmarks is on sys.path
    from interleave import fit_vs_plain


def plain_mann_step(dm, model_args: dict, *, way: int = 5, shot: int = 10, batch: int = 16, lr: float = 1e-3,
                    seed: int = 0):
    """The peer: a plain MANN training step on the datamodule's training classes."""
    images = []
    for char, turns in dm.tables["train"].tolist():
        start, count = int(dm.characters.starts[char]), int(dm.characters.counts[char])
        x = torch.from_numpy(dm.characters.images[start:start + count]).float() / 255.0  # (20, S, S)
        images.append(torch.rot90(x, turns, dims=(1, 2)))
    data = torch.stack(images)  # (C, 20, S, S)
    model = MemoryAugmentedNetwork(**model_args)
    opt = torch.optim.RMSprop(model.parameters(), lr=lr, alpha=0.95, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)

    def step() -> None:
        xs, ys = [], []
        for _ in range(batch):
            classes = torch.randperm(len(data), generator=gen)[:way]  # (N,)
            picks = torch.rand(way, data.shape[1], generator=gen).argsort(dim=1)[:, :shot]  # (N, K)
            x = data[classes[:, None], picks].flatten(0, 1)  # (N*K, S, S)
            y = torch.arange(way).repeat_interleave(shot)  # (N*K,)
            order = torch.randperm(way * shot, generator=gen)
            xs.append(x[order])
            ys.append(y[order])
        x, y = torch.stack(xs).unsqueeze(2), torch.stack(ys)  # (B, T, 1, S, S), (B, T)
        logits = model(x, y)  # (B, T, N)
        loss = F.cross_entropy(logits.transpose(1, 2), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit-steps", type=int, default=30)
    parser.add_argument("--block", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--config", default="configs/mann/small1_mann.yaml")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_args = dict(input_size=400, num_classes=5, hidden_size=200, memory_slots=128, memory_width=40,
                      read_heads=4, gamma=0.95)  # = the config's model
    result = fit_vs_plain(args.config, lambda dm: plain_mann_step(dm, model_args), steps=args.fit_steps + args.block,
                          block=args.block, warmup=args.block)
    print(json.dumps({"benchmark": "mann_steps", "config": args.config, "threads": args.threads,
                      **{f"fit_{k}" if k != "ratio_vs_plain" else k: v for k, v in result.items()},
                      "target_ratio_vs_plain": 1.0, "pass_vs_plain": result["ratio_vs_plain"] >= 1.0,
                      "torch": torch.__version__, "load_average_1min": os.getloadavg()[0],
                      "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
