"""Does the episodic pipeline slow ProtoNet training? Episodes/s of a training step fed by the real pipeline
(OmniglotDataModule's DataLoader: seeded sampler -> uint8 cache indexing -> rotation -> float) vs the same step on
one pre-built episode. Target: pipeline rate / model rate >= 0.9.

    python tests/benchmarks/episodes.py [--way 60] [--shot 1] [--query 5] [--episodes 12] [--threads 1]

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--way", type=int, default=60)
    parser.add_argument("--shot", type=int, default=1)
    parser.add_argument("--query", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
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
        "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
