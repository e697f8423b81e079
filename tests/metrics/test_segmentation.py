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


def _images(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (n, 6, 5), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.1] = 255
    good = torch.rand(n, 1, 1, generator=g) < 0.5  # some images well predicted, some not: the metrics vary
    pred = torch.where(good & (torch.rand(target.shape, generator=g) < 0.9), target.clamp(max=2),
                       torch.randint(0, 3, target.shape, generator=g))
    return pred, target


def test_per_image_matrices_sum_to_the_total():
    pred, target = _images()
    metric = SegmentationMetrics(num_classes=3, per_image=True)
    metric.update(pred[:5], target[:5])
    metric.update(pred[5:], target[5:])
    out = metric.compute()
    assert out["per_image"].shape == (12, 3, 3)
    assert torch.equal(out["per_image"].sum(0), confusion_matrix(pred, target, 3))
    assert torch.equal(out["per_image"][7], confusion_matrix(pred[7], target[7], 3))


def test_bootstrap_interval_equals_a_slow_resample_of_the_pixels():
    """The oracle concatenates the drawn images' pixels (the same draws) and scores them from scratch."""
    import numpy as np

    from lit_papers.metrics.segmentation import METRIC_NAMES, bootstrap_ci95

    pred, target = _images()
    metric = SegmentationMetrics(num_classes=3, per_image=True)
    metric.update(pred, target)
    fast = bootstrap_ci95(metric.compute()["per_image"], resamples=40, seed=3)
    rng = np.random.default_rng(3)
    values = {name: [] for name in METRIC_NAMES}
    for _ in range(40):
        drawn = torch.from_numpy(rng.integers(0, 12, size=12))
        scores = segmentation_scores(confusion_matrix(pred[drawn], target[drawn], 3))
        for name in METRIC_NAMES:
            values[name].append(float(scores[name]))
    for name in METRIC_NAMES:
        slow = 1.96 * np.std(values[name], ddof=1)
        assert slow > 0 and fast[name] == pytest.approx(slow, abs=1e-12), name
    same = SegmentationMetrics(num_classes=3, per_image=True)
    same.update(pred[:1].repeat(8, 1, 1), target[:1].repeat(8, 1, 1))
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in bootstrap_ci95(same.compute()["per_image"]).values())
