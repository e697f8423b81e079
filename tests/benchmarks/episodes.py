"""ProtoNet training speed. Two measurements, printed as one JSON line:

1. ``ratio_vs_plain`` (issue 19, target >= 1.0): our full ``fit`` (LitPapersCLI: Trainer + OmniglotDataModule +
   ProtoNetLitModule, with the CLI's callbacks and loggers, ``configs/protonet/vinyals_1shot.yaml``) in episodes/s,
   divided by a plain PyTorch loop's episodes/s: the same conv-4 and loss (eq. 2), 60-way 1-shot 5-query episodes
   built by the simplest correct code (index a float tensor of the training classes' images, no Lightning), Adam.
   Interleaved in one process (see ``tests/benchmarks/interleave.py``).
2. ``ratio`` (target >= 0.9): a training step fed by the real pipeline (seeded sampler -> uint8 cache indexing ->
   rotation -> float) vs the same step on one pre-built episode.

    python tests/benchmarks/episodes.py [--way 60] [--shot 1] [--query 5] [--episodes 12] [--fit-steps 60]
                                        [--block 10] [--threads 1]

The two kinds of step are interleaved (pipeline, model, pipeline, ...), so load from other processes on a shared
machine hits both alike. Runs with ``torch.set_num_threads(--threads)`` (1 by default, to be frugal on shared CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from lit_papers.backbones.conv4 import Conv4
from lit_papers.data.omniglot import OmniglotDataModule
from lit_papers.papers.protonet.model import PrototypicalNetwork

try:
    from tests.benchmarks.interleave import fit_vs_plain
except ImportError:  # run as a script: tests/benchmarks is on sys.path
    from interleave import fit_vs_plain


def plain_protonet_step(dm, *, way: int = 60, shot: int = 1, query: int = 5, seed: int = 0):
    """The peer: a plain ProtoNet training step on the datamodule's training classes, simplest correct code."""
    table = dm.tables["train"]  # (C, 2): character, quarter turns
    images = []
    for char, turns in table.tolist():  # every training class as a float stack of its 20 drawings
        start, count = int(dm.characters.starts[char]), int(dm.characters.counts[char])
        x = torch.from_numpy(dm.characters.images[start:start + count]).float() / 255.0  # (20, 28, 28)
        images.append(torch.rot90(x, turns, dims=(1, 2)))
    data = torch.stack(images).unsqueeze(2)  # (C, 20, 1, 28, 28)
    encoder = Conv4()
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)

    def step() -> None:
        classes = torch.randperm(len(data), generator=gen)[:way]  # (N,)
        picks = torch.rand(way, data.shape[1], generator=gen).argsort(dim=1)[:, :shot + query]  # (N, K+Q)
        x = data[classes[:, None], picks]  # (N, K+Q, 1, 28, 28)
        z = encoder(x.flatten(0, 1))["block4"].flatten(1).view(way, shot + query, -1)  # (N, K+Q, 64)
        prototypes = z[:, :shot].mean(1)  # (N, 64), eq. 1
        q = z[:, shot:].reshape(way * query, -1)  # (N*Q, 64)
        logits = -torch.cdist(q, prototypes).pow(2)  # (N*Q, N), eq. 2
        loss = F.cross_entropy(logits, torch.arange(way).repeat_interleave(query))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--way", type=int, default=60)
    parser.add_argument("--shot", type=int, default=1)
    parser.add_argument("--query", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fit-steps", type=int, default=30, help="episodes of our fit (plain: the same count)")
    parser.add_argument("--block", type=int, default=10, help="episodes per interleaved block")
    parser.add_argument("--config", default="configs/protonet/vinyals_1shot.yaml")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vs_plain = fit_vs_plain(args.config, lambda dm: plain_protonet_step(dm, way=args.way, shot=args.shot,
                                                                        query=args.query),
                            steps=args.fit_steps + args.block, block=args.block, warmup=args.block,
                            extra_args=["--data.init_args.way", str(args.way), "--data.init_args.shot",
                                        str(args.shot), "--data.init_args.query", str(args.query)])
    dm = OmniglotDataModule(test_size=16, way=args.way, shot=args.shot, query=args.query,
                            episodes_per_epoch=args.episodes + 2, official_runs=False, download=False, seed=0)
    t0 = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - t0
    model = PrototypicalNetwork(encoder=Conv4())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch: dict) -> None:
        logits = model(batch["support"], batch["support_labels"], batch["query"], batch["classes"].shape[1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch["query_labels"].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()

    loader = iter(dm.train_dataloader())
    fixed = next(loader)
    step(fixed)  # warm-up
    pipeline_s = model_s = 0.0
    for _ in range(args.episodes):
        start = time.perf_counter()
        step(next(loader))
        pipeline_s += time.perf_counter() - start
        start = time.perf_counter()
        step(fixed)
        model_s += time.perf_counter() - start
    # the data part alone (sampling + cache indexing + tensors), for reference
    sampler = dm.train_dataloader().sampler
    builder = dm.train_dataloader().dataset
    start = time.perf_counter()
    n = 0
    for episode in sampler:
        builder[episode]
        n += 1
    data_rate = n / (time.perf_counter() - start)
    print(json.dumps({
        "benchmark": "protonet_episodes", "way": args.way, "shot": args.shot, "query": args.query,
        "episodes": args.episodes, "threads": args.threads, "cache_setup_s": round(setup_s, 2),
        "pipeline_episodes_per_s": round(args.episodes / pipeline_s, 3),
        "model_episodes_per_s": round(args.episodes / model_s, 3),
        "ratio": round(model_s / pipeline_s, 3),
        "data_only_episodes_per_s": round(data_rate, 1),
        "target_ratio": 0.9, "pass": model_s / pipeline_s >= 0.9,
        "config": args.config, **{f"fit_{k}" if k != "ratio_vs_plain" else k: v for k, v in vs_plain.items()},
        "target_ratio_vs_plain": 1.0, "pass_vs_plain": vs_plain["ratio_vs_plain"] >= 1.0,
        "torch": torch.__version__,
        "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
