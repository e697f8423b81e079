"""VOC AP (07 11-point and area under the curve) on cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lit_papers.metrics.voc_eval import voc_ap, voc_class_ap, voc_map

# 3 ground-truth objects in one image, 4 detections: scores .9 TP, .8 FP, .7 TP, .6 FP (third object missed)
GT = {"img": (np.array([[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 49, 49]]), np.array([False, False, False]))}
DETS = [("img", 0.9, [0, 0, 9, 9]), ("img", 0.8, [60, 60, 69, 69]), ("img", 0.7, [20, 20, 29, 29]),
        ("img", 0.6, [0, 0, 9, 9])]  # the last is a duplicate of an already-matched object -> FP


def test_area_ap_by_hand():
    # recall 1/3, 1/3, 2/3, 2/3; precision 1, 1/2, 2/3, 1/2. Envelope: 1 up to r = 1/3, 2/3 up to r = 2/3.
    # AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    assert voc_class_ap(DETS, GT, metric="area") == pytest.approx(5 / 9)


def test_11point_ap_by_hand():
    # thresholds 0, .1, .2, .3 -> max precision at recall >= t is 1 (4 points); .4, .5, .6 -> 2/3 (3 points);
    # .7 ... 1.0 -> 0 (4 points). AP = (4 + 3 * 2/3) / 11 = 6/11
    assert voc_class_ap(DETS, GT, metric="11point") == pytest.approx(6 / 11)


def test_difficult_objects_are_ignored():
    gt = {"img": (GT["img"][0], np.array([False, False, True]))}  # third object difficult: 2 positives
    dets = DETS + [("img", 0.95, [40, 40, 49, 49])]  # a detection of the difficult object: ignored, not TP/FP
    # order .95 (ignored), .9 TP, .8 FP, .7 TP, .6 FP: recall .5, .5, 1, 1; precision 1, .5, 2/3, .5
    # area: .5 * 1 + .5 * 2/3 = 5/6
    assert voc_class_ap(dets, gt, metric="area") == pytest.approx(5 / 6)


def test_inclusive_iou_convention():
    # boxes (0,0,9,9) and (5,0,14,9): inclusive widths 10, overlap 5 -> IoU 50 / 150 = 1/3 (< 0.5: FP)
    # continuous: widths 9, overlap 4 -> 36 / 126 = 0.29. Both FP; a box (1,0,10,9): inclusive 90/110 = .82 TP
    gt = {"a": (np.array([[0, 0, 9, 9]]), np.array([False]))}
    assert voc_class_ap([("a", 1.0, [5, 0, 14, 9])], gt) == 0.0
    assert voc_class_ap([("a", 1.0, [1, 0, 10, 9])], gt) == pytest.approx(1.0)


def test_curve_helpers_and_map():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0]), "area") == pytest.approx(1.0)
    assert voc_ap(np.array([0.5]), np.array([1.0]), "11point") == pytest.approx(6 / 11)
    out = voc_map({"dog": DETS}, {"dog": GT, "cat": {"img": (np.array([[0, 0, 5, 5]]), np.array([False]))}})
    assert out["cat"] == 0.0 and out["mAP"] == pytest.approx((5 / 9) / 2)
    with pytest.raises(ValueError):
        voc_ap(np.array([1.0]), np.array([1.0]), "bogus")


def test_iou_exactly_one_half_is_a_hit_as_in_the_devkit():
    # VOCevaldet.m: `if ovmax>=VOCopts.minoverlap` -> true positive. Inclusive pixels: ground truth (1,1,10,10) is
    # 10 x 10 = 100 px; detection (1,1,10,5) is 10 x 5 = 50 px, all inside it: IoU = 50 / (100 + 50 - 50) = 0.5.
    gt = {"a": (np.array([[1, 1, 10, 10]]), np.array([False]))}
    assert voc_class_ap([("a", 1.0, [1, 1, 10, 5])], gt) == pytest.approx(1.0)
    # continuous boxes: (0,0,10,10) vs (0,0,10,5): 50 / 100 = 0.5 exactly in floating point
    gt_c = {"a": (np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([False]))}
    assert voc_class_ap([("a", 1.0, [0.0, 0.0, 10.0, 5.0])], gt_c, inclusive=False) == pytest.approx(1.0)
    # just below the boundary: (1,1,10,4) is 40 px -> IoU 0.4, a miss
    assert voc_class_ap([("a", 1.0, [1, 1, 10, 4])], gt) == 0.0


def _slow_bootstrap(results, ground_truth, *, metric, reps, seed=0):
    """The oracle: voc_map on each resample, drawn images renamed so that duplicates are distinct images."""
    from lit_papers.metrics.voc_eval import voc_map

    images = sorted(set(results) | {i for per in ground_truth.values() for i in per})
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        dets, gts = {}, {c: {} for c in ground_truth}
        for new_id, old in enumerate(rng.choice(images, size=len(images), replace=True)):
            for cat, score, box in results.get(int(old), []):
                dets.setdefault(cat, []).append((new_id, score, box))
            for cat, per in ground_truth.items():
                if int(old) in per:
                    gts[cat][new_id] = per[int(old)]
        values.append(voc_map(dets, {c: p for c, p in gts.items() if p}, metric=metric, inclusive=False)["mAP"])
    low, high = np.percentile(values, [2.5, 97.5])
    return (high - low) / 2


@pytest.mark.parametrize("metric", ["11point", "area"])
def test_bootstrap_interval_equals_voc_map_on_each_resample(metric):
    from lit_papers.metrics.voc_eval import bootstrap_map

    rng = np.random.default_rng(0)
    gt, results = {1: {}, 2: {}}, {}
    for image in range(25):
        for cat in (1, 2):
            if rng.uniform() < 0.7:
                xy = rng.uniform(0, 50, size=(2, 2))
                boxes = np.concatenate([xy, xy + rng.uniform(5, 20, size=(2, 2))], axis=1)
                gt[cat][image] = (boxes, np.array([False, rng.uniform() < 0.2]))
        results[image] = []
        for _ in range(int(rng.integers(0, 6))):  # near-misses, hits, duplicates, tied scores
            cat = int(rng.integers(1, 3))
            base = gt[cat][image][0][0] if image in gt[cat] else np.array([0.0, 0, 10, 10])
            results[image].append((cat, float(rng.choice([0.3, 0.5, rng.uniform()])),
                                   (base + rng.normal(0, 2, 4)).tolist()))
    fast = bootstrap_map(results, gt, metric=metric, reps=30)
    assert fast > 0
    assert fast == pytest.approx(_slow_bootstrap(results, gt, metric=metric, reps=30), abs=1e-12)
    perfect = {i: [(1, 0.9, [0.0, 0, 10, 10])] for i in range(20)}
    one = {1: {i: (np.array([[0.0, 0, 10, 10]]), np.array([False])) for i in range(20)}}
    assert bootstrap_map(perfect, one, metric=metric, reps=20) == 0.0  # every resample has mAP 1


class _VOCSet:
    """The part of a VOC eval dataset an evaluator reads: the ground truth and the category ids."""
    cat_ids = [1]

    def __init__(self, images: int) -> None:
        self.images = images

    def voc_ground_truth(self):
        return {1: {i: (np.array([[0.0, 0, 10, 10]]), np.array([False])) for i in range(self.images)}}


def _run_voc(stage: str, images: int, **options) -> dict:
    import torch

    from lit_papers.detection.evaluators import VOCMeanAP

    evaluator = VOCMeanAP(**{"bootstrap": 50, **options})
    evaluator.start(_VOCSet(images), ("bbox",), stage=stage)
    for i in range(images):  # every other image is a hit, the rest a miss: AP varies between resamples
        box = [0.0, 0, 10, 10] if i % 2 else [20.0, 20, 30, 30]
        evaluator.update(i, {"boxes": torch.tensor([box]), "scores": torch.tensor([0.5 + i / 100]),
                             "labels": torch.tensor([1])})
    return evaluator.finish()


def test_voc_evaluator_interval_at_test_only_and_from_enough_images():
    out = _run_voc("test", 30)
    assert out["voc07_mAP_n"] == 30 and 0.0 < out["voc07_mAP_ci95"] < 0.5
    assert "voc07_mAP_ci95" not in _run_voc("val", 30)                       # validation: off unless asked
    assert "voc07_mAP_ci95" in _run_voc("val", 30, bootstrap_val=True)
    assert "voc07_mAP_ci95" not in _run_voc("test", 10)                      # below bootstrap_min_images (20)
    assert "voc07_mAP_ci95" in _run_voc("test", 10, bootstrap_min_images=5)
    assert "voc07_mAP_ci95" not in _run_voc("test", 30, bootstrap=0)


def _devkit_walk(detections, ground_truth, iou_thresh=0.5, metric="area", inclusive=True):
    """The devkit's loop as written (VOCevaldet.m): every detection of the class in global score order, matched
    against its image's boxes; the slow oracle of the per-image matching."""
    one = 1.0 if inclusive else 0.0
    npos = sum(int((~np.asarray(d, bool)).sum()) for _, d in ground_truth.values())
    order = sorted(range(len(detections)), key=lambda i: -detections[i][1])
    used = {k: [False] * len(b) for k, (b, _) in ground_truth.items()}
    tp, fp = [], []
    for i in order:
        image, _, b = detections[i]
        boxes, difficult = ground_truth.get(image, ([], []))
        best, j = -1.0, -1
        for k, g in enumerate(boxes):
            iw = min(b[2], g[2]) - max(b[0], g[0]) + one
            ih = min(b[3], g[3]) - max(b[1], g[1]) + one
            if iw > 0 and ih > 0:
                inter = iw * ih
                ov = inter / ((b[2] - b[0] + one) * (b[3] - b[1] + one) + (g[2] - g[0] + one) * (g[3] - g[1] + one)
                              - inter)
                if ov > best:
                    best, j = ov, k
        if best >= iou_thresh:
            if difficult[j]:
                continue
            if not used[image][j]:
                used[image][j] = True
                tp.append(1.0), fp.append(0.0)
            else:
                tp.append(0.0), fp.append(1.0)
        else:
            tp.append(0.0), fp.append(1.0)
    if npos == 0:
        return 0.0
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return voc_ap(tp / npos, tp / np.maximum(tp + fp, np.finfo(np.float64).eps), metric)


@pytest.mark.parametrize("inclusive", [True, False])
def test_per_image_matching_equals_the_devkit_walk_with_ties_and_difficult(inclusive):
    rng = np.random.default_rng(3)
    for trial in range(30):
        ground_truth, detections = {}, []
        for image in range(6):
            g = int(rng.integers(0, 4))
            xy = rng.uniform(0, 60, size=(g, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(10, 40, size=(g, 2))], 1).round()
            if g or rng.random() < 0.5:
                ground_truth[image] = (boxes, rng.random(g) < 0.25)
            for _ in range(int(rng.integers(0, 6))):
                base = boxes[int(rng.integers(0, g))] if g and rng.random() < 0.7 else np.array([0, 0, 20, 20.0])
                box = (base + rng.normal(0, 4, size=4)).round().tolist()
                box[2], box[3] = max(box[2], box[0] + 1), max(box[3], box[1] + 1)
                detections.append((image, float(rng.integers(0, 5)) / 4, box))  # few distinct scores: ties
        for metric in ("area", "11point"):
            ours = voc_class_ap(detections, ground_truth, metric=metric, inclusive=inclusive)
            assert ours == pytest.approx(_devkit_walk(detections, ground_truth, metric=metric, inclusive=inclusive),
                                         abs=1e-12), (trial, metric)
