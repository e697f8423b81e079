"""FCN's four metrics (Long et al. 2015, sec. 5) on a hand-computed confusion matrix and against torchmetrics."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from lit_papers.metrics.segmentation import SegmentationMetrics, confusion_matrix, segmentation_scores

# rows = ground truth, columns = prediction
CONF = torch.tensor([[3, 1, 0],
                     [0, 2, 2],
                     [1, 0, 1]])


def _pixels(conf: torch.Tensor, void: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel lists realising ``conf`` plus ``void`` ignored pixels, shaped (1, 1, N)."""
    t, p = [], []
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            t += [i] * int(conf[i, j])
            p += [j] * int(conf[i, j])
    t += [255] * void
    p += [0] * void
    return torch.tensor(p).view(1, 1, -1), torch.tensor(t).view(1, 1, -1)


def test_confusion_matrix_drops_void_and_rejects_unknown_labels():
    pred, target = _pixels(CONF)
    assert torch.equal(confusion_matrix(pred, target, 3), CONF)
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix(torch.zeros(1, 2), torch.tensor([[0, 7]]), 3)


def test_the_four_metrics_by_hand():
    s = segmentation_scores(CONF)
    # t = (4, 4, 2), n_ii = (3, 2, 1), predicted = (4, 3, 3), union = (5, 5, 4)
    assert s["pixel_acc"].item() == pytest.approx(6 / 10)
    assert s["mean_acc"].item() == pytest.approx((3 / 4 + 2 / 4 + 1 / 2) / 3)
    assert s["mean_iu"].item() == pytest.approx((3 / 5 + 2 / 5 + 1 / 4) / 3)
    assert s["fw_iu"].item() == pytest.approx((4 * 3 / 5 + 4 * 2 / 5 + 2 * 1 / 4) / 10)


def test_absent_classes_are_left_out_of_the_means_as_the_reference_nanmean():
    conf = torch.zeros(4, 4, dtype=torch.long)
    conf[:3, :3] = CONF
    same = segmentation_scores(conf)  # class 3 neither present nor predicted: no effect
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert same[key].item() == pytest.approx(segmentation_scores(CONF)[key].item())
    conf[0, 3] = 2  # class 3 predicted but absent: IU 0 counts, its accuracy is undefined
    s = segmentation_scores(conf)
    assert s["mean_iu"].item() == pytest.approx((3 / 7 + 2 / 5 + 1 / 4 + 0) / 4)
    assert s["mean_acc"].item() == pytest.approx((3 / 6 + 2 / 4 + 1 / 2) / 3)


def test_accumulated_over_batches_equals_torchmetrics():
    g = torch.Generator().manual_seed(0)
    k = 5
    ours = SegmentationMetrics(num_classes=k)
    oracle = {"pixel_acc": MulticlassAccuracy(k, average="micro", ignore_index=255),
              "mean_acc": MulticlassAccuracy(k, average="macro", ignore_index=255),
              "mean_iu": MulticlassJaccardIndex(k, average="macro", ignore_index=255),
              "fw_iu": MulticlassJaccardIndex(k, average="weighted", ignore_index=255)}
    for _ in range(3):
        target = torch.randint(0, k, (2, 9, 7), generator=g)
        target[torch.rand(target.shape, generator=g) < 0.1] = 255
        logits = torch.randn(2, k, 9, 7, generator=g) + 2.0 * torch.nn.functional.one_hot(
            target.clamp(max=k - 1), k).permute(0, 3, 1, 2)
        ours.update(logits, target)
        for m in oracle.values():
            m.update(logits.argmax(1), target)
    got = ours.compute()
    for key, m in oracle.items():
        assert got[key].item() == pytest.approx(m.compute().item(), abs=1e-6), key


def test_ranks_are_summed_before_the_ratios():
    pred, target = _pixels(CONF)
    whole, a, b = (SegmentationMetrics(num_classes=3) for _ in range(3))
    whole.update(pred, target)
    a.update(pred[..., :5], target[..., :5])
    b.update(pred[..., 5:], target[..., 5:])
    assert whole._reductions["conf"] is not None  # summed by torchmetrics' sync under DDP
    a.merge_state(b)  # what the sum reduction does across ranks
    assert torch.equal(a.conf, whole.conf)
    assert a.compute()["mean_iu"] == whole.compute()["mean_iu"]
    # not the mean of the per-rank mean IUs
    parts = [segmentation_scores(confusion_matrix(pred[..., s], target[..., s], 3))["mean_iu"]
             for s in (slice(0, 5), slice(5, None))]
    assert abs(sum(parts) / 2 - whole.compute()["mean_iu"]) > 1e-3
