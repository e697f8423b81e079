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
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

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


class SegmentationMetrics(Metric):
    """Accumulates the (K, K) confusion matrix; ``compute()`` -> {pixel_acc, mean_acc, mean_iu, fw_iu, iu (K,)}.
    ``update(pred, target)``: ``pred`` class indices (B, H, W) or scores (B, K, H, W) (argmax over dim 1)."""

    full_state_update = False

    def __init__(self, *, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("conf", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)  # (B, K, H, W) -> (B, H, W)
        self.conf += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, torch.Tensor]:
        return segmentation_scores(self.conf)
