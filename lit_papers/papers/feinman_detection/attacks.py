"""The five attacks of Feinman et al. 2017 (sec. 2 / 4.1) on a classifier taking images in [0, 1]:

* FGSM (Goodfellow et al. 2015): ``torchattacks.FGSM``;
* BIM-B (Kurakin et al. 2016, fixed number of iterations): ``torchattacks.BIM``;
* BIM-A (BIM stopping per image as soon as it is misclassified): :func:`bim` with ``early_stop=True`` (torchattacks
  has no early stop); :func:`bim` without it is our own 10-line BIM, checked against ``torchattacks.BIM`` by the
  tests (the same iterates);
* JSMA (Papernot et al. 2016): ``torchattacks.JSMA`` (targeted, target = label + 1 mod 10, torchattacks' default);
* C&W L2 (Carlini & Wagner 2017): ``torchattacks.CW``.

:func:`build_attacks` turns the config's ``{name: settings}`` into callables ``(x, y) -> x_adv``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn


def bim(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
        early_stop: bool = False) -> torch.Tensor:
    """Basic iterative method: ``steps`` signed-gradient steps of size ``alpha`` on the cross-entropy, projected
    on the L-inf ball of radius ``eps`` around ``x`` and on [0, 1]. ``early_stop``: BIM-A (an image stops moving
    once the model misclassifies it)."""
    adv, done = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        step = torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0.0, 1.0)
        adv = torch.where(done.view(-1, 1, 1, 1), adv.detach(), step) if early_stop else step
        if early_stop:
            with torch.no_grad():
                done |= model(adv).argmax(dim=1) != y
            if done.all():
                break
    return adv.detach()


def _library(cls, model: nn.Module, **settings) -> Callable:
    attack = cls(model, **settings)
    return lambda x, y: attack(x, y)


BUILDERS: dict[str, Callable] = {
    "fgsm": partial(_library, torchattacks.FGSM),
    "bim-b": partial(_library, torchattacks.BIM),
    "jsma": partial(_library, torchattacks.JSMA),
    "cw": partial(_library, torchattacks.CW),
    "bim-a": lambda model, **s: (lambda x, y: bim(model, x, y, early_stop=True, **s)),
}


def build_attacks(model: nn.Module, settings: dict[str, dict]) -> dict[str, Callable]:
    """``{"fgsm": {"eps": 0.05}, ...}`` -> ``{"fgsm": attack(x, y) -> x_adv, ...}``; unknown names are an error."""
    unknown = sorted(set(settings) - set(BUILDERS))
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown} in model.init_args.attacks; known: {sorted(BUILDERS)}")
    return {name: BUILDERS[name](model, **(kw or {})) for name, kw in settings.items()}
