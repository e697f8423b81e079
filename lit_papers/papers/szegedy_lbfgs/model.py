"""Szegedy, Zaremba, Sutskever, Bruna, Erhan, Goodfellow, Fergus. Intriguing properties of neural networks.
ICLR 2014 (arXiv 1312.6199), sec. 4.1 "Experimental results" / 4.2 "blind spots".

For an image x in [0, 1]^m and a target label l != f(x), the paper seeks the smallest r with f(x + r) = l and
x + r in [0, 1]^m, approximated by box-constrained L-BFGS on

    minimise  c * |r| + loss_f(x + r, l)   subject to  x + r in [0, 1]^m            (sec. 4.1)

with a line search over c. **Norm**: we minimise c * |r|_2^2 (the squared norm). |r|_2 is not differentiable at
r = 0, the natural starting point, and L-BFGS assumes a smooth objective; the squared norm has the same minimiser
set for the original constrained problem (minimal |r| <=> minimal |r|^2) and a gradient 2 c r everywhere
(:func:`objective`). **Line search on c**: a larger c weighs the distortion more, so the minimiser is classified
as l for every c below some threshold and the distortion falls as c grows. The paper's "minimum c > 0" is written
for the loss-weighted form |r| + c' * loss (c' = 1 / c): the smallest c' (= the largest c) whose minimiser is
classified as l, found by bracketing and bisection in log c (:func:`line_search_c`).

The problem is solved for a batch at once: the objective is a sum of per-image terms with per-image c, so its
gradient is block-separable and one L-BFGS-B run (scipy) on the concatenated variables reaches each image's
stationary point (the naive per-image loop is the benchmark's peer). Distortion is the paper's
sqrt(mean_i r_i^2) over the m pixel values (:func:`rms_distortion`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize


def objective(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, target: torch.Tensor, c: torch.Tensor,
              r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_i c_i |r_i|^2 + CE(model(x_i + r_i), l_i) and its gradient w.r.t. ``r`` (B, C, H, W)."""
    r = r.detach().requires_grad_(True)
    logits = model(x + r)
    value = (c * r.flatten(1).pow(2).sum(dim=1)).sum() + F.cross_entropy(logits, target, reduction="sum")
    (grad,) = torch.autograd.grad(value, r)
    return value.detach(), grad


def box_lbfgs(model, x: torch.Tensor, target: torch.Tensor, c: torch.Tensor, *, max_iter: int = 100) -> torch.Tensor:
    """One L-BFGS-B solve (scipy) from r = 0 with bounds -x <= r <= 1 - x; returns x + r (B, C, H, W), in the box."""
    shape, dtype = x.shape, x.dtype

    def fun(z: np.ndarray):
        r = torch.from_numpy(z).to(dtype=dtype, device=x.device).view(shape)
        value, grad = objective(model, x, target, c, r)
        return float(value), grad.double().flatten().cpu().numpy()

    lower = (-x).double().flatten().cpu().numpy()
    upper = (1.0 - x).double().flatten().cpu().numpy()
    result = minimize(fun, np.zeros(x.numel()), jac=True, method="L-BFGS-B", bounds=list(zip(lower, upper)),
                      options={"maxiter": max_iter})
    r = torch.from_numpy(result.x).to(dtype=dtype, device=x.device).view(shape)
    return (x + r).clamp(0.0, 1.0)  # float32 rounding of x + r may leave the box by one ulp


def rms_distortion(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The paper's distortion sqrt(mean r^2) per image (B,), pixel values in [0, 1]."""
    return (x_adv - x).flatten(1).pow(2).mean(dim=1).sqrt()


@torch.no_grad()
def predict(model, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(dim=1)


def line_search_c(model, x: torch.Tensor, target: torch.Tensor, *, c_init: float = 1.0, steps: int = 8,
                  factor: float = 10.0, max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image, the largest c (bracketing by ``factor``, then bisection in log c, ``steps`` solves in all) whose
    L-BFGS-B minimiser is classified as ``target``. Returns (x_adv (B, ...), success (B,) bool, c (B,)): for a
    success the least-distorted minimiser classified as the target, else ``x`` itself."""
    b = len(x)
    c = torch.full((b,), float(c_init), dtype=x.dtype, device=x.device)
    low = torch.full_like(c, float("nan"))  # largest c that succeeded
    high = torch.full_like(c, float("nan"))  # smallest c that failed
    best, best_d = x.clone(), torch.full_like(c, float("inf"))
    for _ in range(steps):
        x_adv = box_lbfgs(model, x, target, c, max_iter=max_iter)
        hit = predict(model, x_adv) == target
        d = rms_distortion(x_adv, x)
        better = hit & (d < best_d)
        best[better], best_d[better] = x_adv[better], d[better]
        low = torch.where(hit, torch.fmax(low, c), low)
        high = torch.where(~hit, torch.fmin(high, c), high)
        both = ~low.isnan() & ~high.isnan()
        c = torch.where(both, (low * high).sqrt(), torch.where(low.isnan(), c / factor, c * factor))
    success = best_d.isfinite()
    return best, success, torch.where(success, low, torch.full_like(c, float("nan")))
