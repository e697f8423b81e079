"""Box-constrained L-BFGS attack speed: images attacked per second (the whole line search on c) of the batched
solve (``line_search_c`` on ``--images`` images at once: one scipy L-BFGS-B run per line-search step) vs the naive
loop (the same line search, one image at a time). Untrained ResNet-20 victim on uniform-noise images with random
targets (speed, not success, is measured; success rates are printed for both). Prints one JSON line.

    python tests/benchmarks/szegedy_lbfgs_speed.py [--images 8] [--steps 3] [--max-iter 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from lit_papers.attacks.victim import Victim
from lit_papers.papers.resnet_cifar.model import ResNetCifar
from lit_papers.papers.szegedy_lbfgs.model import line_search_c


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    victim = Victim(network=ResNetCifar(depth=20)).eval()
    x, t = torch.rand(args.images, 3, 32, 32), torch.randint(0, 10, (args.images,))
    start = time.perf_counter()
    _, ok_batched, _ = line_search_c(victim, x, t, steps=args.steps, max_iter=args.max_iter)
    batched = time.perf_counter() - start
    start, ok_loop = time.perf_counter(), []
    for i in range(args.images):
        ok_loop.append(bool(line_search_c(victim, x[i:i + 1], t[i:i + 1], steps=args.steps, max_iter=args.max_iter)[1]))
    loop = time.perf_counter() - start
    print(json.dumps({"benchmark": "szegedy_lbfgs_speed", "images": args.images, "line_search_steps": args.steps,
                      "max_iter": args.max_iter, "threads": args.threads,
                      "attacks_per_s": round(args.images / batched, 4), "naive_attacks_per_s": round(args.images / loop, 4),
                      "speedup_vs_naive": round(loop / batched, 3), "success_batched": float(ok_batched.float().mean()),
                      "success_naive": sum(ok_loop) / len(ok_loop), "torch": torch.__version__,
                      "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
