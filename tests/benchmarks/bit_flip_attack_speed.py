"""Bit-Flip Attack search speed: seconds per progressive-bit-search iteration (one flipped bit with n_b = 1) of
:class:`BitFlipAttack` (vectorised in-layer ranking over all bits at once, in-place flip-and-undo per layer trial)
vs a naive loop (the same rule written plainly: per layer a Python loop over the 8 bit positions, and every
cross-layer trial on a deep copy of the network re-quantised from scratch). Both must pick the same flips.
Untrained ResNet-20 victim (speed does not depend on training), attack batch 128. Prints one JSON line.

    python tests/benchmarks/bit_flip_attack_speed.py [--iterations 3] [--threads 1] [--depth 20]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import torch
import torch.nn.functional as F

from lit_papers.attacks.victim import Victim
from lit_papers.papers.bit_flip_attack.model import (
    BitFlipAttack,
    QuantizedWeights,
    bit_values,
    flip_bits,
    to_bits,
)
from lit_papers.papers.resnet_cifar.model import ResNetCifar


def naive_step(victim, weights: QuantizedWeights, x, y):
    """One iteration written the slow, obvious way; returns (layer, index, bit) and applies it."""
    victim.zero_grad()
    F.cross_entropy(victim(x), y).backward()
    best = None
    values = bit_values(weights.bits)
    for name, m in weights.layers:
        q, grad_q = weights.q[name].flatten(), m.weight.grad.flatten() * weights.step[name]
        bits = to_bits(q, weights.bits)
        top_gain, top = -1.0, None
        for i in range(weights.bits):  # one bit position at a time
            gain = grad_q * values[i] * (1 - 2 * bits[:, i]).float()
            j = int(gain.argmax())
            if float(gain[j]) > top_gain:
                top_gain, top = float(gain[j]), (j, i)
        if top_gain <= 0:
            continue
        trial = copy.deepcopy(victim)  # a fresh network per trial
        layer = dict(trial.network.named_modules())[name.removeprefix("network.")]
        with torch.no_grad():
            layer.weight.copy_(flip_bits(weights.q[name], torch.tensor([top[0]]), torch.tensor([top[1]])).float()
                               * weights.step[name])
            loss = float(F.cross_entropy(trial(x), y))
        if best is None or loss > best[0]:
            best = (loss, name, top)
    _, name, (j, i) = best
    weights.q[name] = flip_bits(weights.q[name], torch.tensor([j]), torch.tensor([i]))
    weights.write(name)
    victim.zero_grad()
    return name, [j], [i]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--depth", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.rand(128, 3, 32, 32), torch.randint(0, 10, (128,))
    base = Victim(network=ResNetCifar(depth=args.depth)).eval()
    timings, picks = {}, {}
    for name in ("ours", "naive"):
        victim = copy.deepcopy(base)
        weights = QuantizedWeights(victim.network, 8)
        attack = BitFlipAttack(victim, weights, x, y, top_k=1)
        start, chosen = time.perf_counter(), []
        for _ in range(args.iterations):
            if name == "ours":
                flip = attack.step()
                chosen.append((flip.layer, flip.index, flip.bit))
            else:
                chosen.append(naive_step(victim, weights, x, y))
        timings[name] = (time.perf_counter() - start) / args.iterations
        picks[name] = chosen
    print(json.dumps({"benchmark": "bit_flip_attack_speed", "depth": args.depth, "attack_batch": 128,
                      "threads": args.threads, "iterations": args.iterations,
                      "search_s_per_flip": round(timings["ours"], 4), "naive_s_per_flip": round(timings["naive"], 4),
                      "speedup_vs_naive": round(timings["naive"] / timings["ours"], 3),
                      "same_flips": picks["ours"] == [tuple(p) for p in picks["naive"]],
                      "torch": torch.__version__, "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
