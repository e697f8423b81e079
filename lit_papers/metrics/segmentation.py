"""The four semantic-segmentation metrics of Long et al. 2015 (FCN, sec. 5), from one confusion matrix.

With ``n_ij`` the number of pixels of class ``i`` predicted as class ``j``, ``t_i = sum_j n_ij`` the pixels of
class ``i`` and ``n_cl`` the number of classes:

* pixel accuracy          ``sum_i n_ii / sum_i t_i``
* mean accuracy           ``(1 / n_cl) sum_i n_ii / t_i``
* mean IU                 ``(1 / n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)``
* frequency weighted IU   ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``

As in the paper's released evaluation (``score.py`` of fcn.berkeleyvision.org, ``np.nanmean``), a class whose
ratio is 0/0 (no ground-truth pixel for the accuracy; neither ground truth nor prediction for IU) is left out of
the mean rather than counted as 0 or 1. Pixels labelled ``ignore_index`` (VOC's 255 "void") are not counted.

:class:`SegmentationMetrics` accumulates the matrix across batches as a ``torchmetrics.Metric`` state with
``dist_reduce_fx="sum"``: under DDP the matrices of all ranks are summed before the ratios are taken, so the
result equals the single-process one on the same images (no mean of per-rank means).

Intervals: with ``per_image=True`` it also keeps each image's matrix (gathered from all ranks), and
:func:`bootstrap_ci95` gives the 95 % half-width of each metric over images (resampled with replacement; the
metrics are ratios of pixel sums, so a resample sums the drawn images' matrices).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

METRIC_NAMES = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
                     ) -> torch.Tensor:
    """``pred``, ``target``: integer tensors of the same shape (e.g. (B, H, W)). Returns (K, K) int64, rows =
    ground truth, columns = prediction. Pixels with ``target == ignore_index`` are dropped; any other target
    outside ``0..K-1`` is an error."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    keep = target != ignore_index
    t, p = target[keep].long(), pred[keep].long()
    if t.numel() and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"target holds values outside 0..{num_classes - 1} and {ignore_index}: "
                         f"{sorted(set(t.unique().tolist()) - set(range(num_classes)))[:10]}")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).view(num_classes, num_classes)


def _nanmean(x: torch.Tensor) -> torch.Tensor:
    keep = ~torch.isnan(x)
    return x[keep].mean() if keep.any() else torch.tensor(float("nan"), dtype=x.dtype)


def segmentation_scores(conf: torch.Tensor) -> dict[str, torch.Tensor]:
    """(K, K) confusion matrix (rows ground truth) -> the four metrics of sec. 5 as float64 scalars in [0, 1]."""
    conf = conf.double()
    n_ii = conf.diagonal()
    t = conf.sum(dim=1)  # t_i: ground-truth pixels of class i
    predicted = conf.sum(dim=0)  # sum_j n_ji: pixels predicted as class i
    union = t + predicted - n_ii
    with torch.no_grad():
        acc = n_ii / t  # nan where t_i = 0
        iu = n_ii / union  # nan where class i is neither present nor predicted
    fw = (t[union > 0] * iu[union > 0]).sum() / t.sum()
    return {"pixel_acc": n_ii.sum() / t.sum(), "mean_acc": _nanmean(acc), "mean_iu": _nanmean(iu), "fw_iu": fw,
            "iu": iu}


def bootstrap_ci95(per_image: torch.Tensor, *, resamples: int = 200, seed: int = 0) -> dict[str, float]:
    """95 % half-widths (1.96 x the bootstrap standard deviation) of the four metrics over images: ``per_image``
    (N, K, K) confusion matrices; each resample draws N images with replacement and scores the sum of their
    matrices (an image drawn twice counts twice). Fewer than 2 images: 0."""
    n = len(per_image)
    if n < 2 or resamples <= 0:
        return {name: 0.0 for name in METRIC_NAMES}
    flat = per_image.reshape(n, -1).double()
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
    for _ in range(resamples):
        weights = torch.from_numpy(np.bincount(rng.integers(0, n, size=n), minlength=n)).double()
        scores = segmentation_scores((weights @ flat).view(per_image.shape[1:]))
        for name in METRIC_NAMES:
            values[name].append(float(scores[name]))
    return {name: float(1.96 * np.std(v, ddof=1)) for name, v in values.items()}


class SegmentationMetrics(Metric):
    """Accumulates the (K, K) confusion matrix; ``compute()`` -> {pixel_acc, mean_acc, mean_iu, fw_iu, iu (K,)}.
    ``update(pred, target)``: ``pred`` class indices (B, H, W) or scores (B, K, H, W) (argmax over dim 1).
    ``per_image``: also keep every image's matrix; ``compute()`` then adds ``per_image`` (N, K, K), gathered from
    all ranks with the sums (inside ``compute``'s sync), for :func:`bootstrap_ci95`."""

    full_state_update = False

    def __init__(self, *, num_classes: int, ignore_index: int = 255, per_image: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.per_image = per_image
        self.add_state("conf", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")
        if per_image:
            self.add_state("images", default=[], dist_reduce_fx="cat")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)  # (B, K, H, W) -> (B, H, W)
        if not self.per_image:
            self.conf += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
            return
        if pred.dim() == 2:
            pred, target = pred[None], target[None]
        each = torch.stack([confusion_matrix(p, t, self.num_classes, self.ignore_index) for p, t in zip(pred, target)])
        self.conf += each.sum(dim=0)
        self.images.append(each)

    def compute(self) -> dict[str, torch.Tensor]:
        out = segmentation_scores(self.conf)
        if self.per_image:
            empty = isinstance(self.images, list) and not self.images
            out["per_image"] = (torch.zeros(0, self.num_classes, self.num_classes, dtype=torch.long) if empty
                                else dim_zero_cat(self.images))
        return out
