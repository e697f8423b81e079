"""Accuracy vs number of flipped bits, BFA vs random flips, from a run's ``bfa_curve.json``
(:class:`BitFlipAttackLitModule` writes it). ``python -m lit_papers.papers.bit_flip_attack.pictures <run>/bfa_curve.json
lit_papers/papers/bit_flip_attack/results/<variant>_curve.png``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lit_papers.attacks.plots import line_plot


def accuracy_vs_flips(curve: dict, path: str | Path, title: str = "") -> Path:
    bfa_x = [0] + [f["flips"] for f in curve["bfa_flips"]]
    random = curve["random"]
    return line_plot({"progressive bit search": (bfa_x, [100 * a for a in curve["bfa_accuracy"]]),
                      "random flips": ([r["flips"] for r in random], [100 * r["accuracy"] for r in random])},
                     path, title=title or f"8-bit victim, {curve['eval_images']} test images",
                     xlabel="bits flipped", ylabel="test accuracy (%)", ylim=(0, 100))


if __name__ == "__main__":
    accuracy_vs_flips(json.loads(Path(sys.argv[1]).read_text()), sys.argv[2], " ".join(sys.argv[3:]))
