"""PASCAL VOC detection AP (Everingham et al. 2010; the devkit's ``VOCevaldet`` / py-faster-rcnn ``voc_eval``).

Per class: detections of all images sorted by score (descending, stable); each is a true positive when its IoU
with the best-overlapping ground-truth box of that image is >= ``iou_thresh`` (0.5; the devkit's
``VOCevaldet.m``: ``if ovmax>=VOCopts.minoverlap``) and that box is not yet matched, else a false
positive; a detection whose best match is a ``difficult`` object is neither (ignored); difficult objects do not
count in the number of positives. IoU uses VOC's inclusive pixel convention (+1 on widths) when
``inclusive=True`` (the devkit's, for 1-based integer boxes); ``False`` for continuous xyxy boxes.

AP: ``metric="11point"`` (VOC2007: mean over recall r in {0, 0.1, ..., 1} of the max precision at recall >= r)
or ``"area"`` (VOC2010+: area under the precision envelope, summed over recall changes).

:func:`bootstrap_map`: the 95 % interval of a mAP over images (percentile bootstrap; images are the sampling
unit, the per-image true/false-positive flags are reused across resamples).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def voc_ap(recall: np.ndarray, precision: np.ndarray, metric: str = "area") -> float:
    """AP from a recall/precision curve (arrays over detections in score order)."""
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if metric == "11point":
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    if metric != "area":
        raise ValueError(f"metric must be '11point' or 'area', got {metric!r}")
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope (monotone non-increasing)
    changes = np.where(r[1:] != r[:-1])[0]
    return float(np.sum((r[changes + 1] - r[changes]) * p[changes + 1]))


def _iou(box: np.ndarray, gts: np.ndarray, inclusive: bool) -> np.ndarray:
    one = 1.0 if inclusive else 0.0
    iw = np.clip(np.minimum(box[2], gts[:, 2]) - np.maximum(box[0], gts[:, 0]) + one, 0, None)
    ih = np.clip(np.minimum(box[3], gts[:, 3]) - np.maximum(box[1], gts[:, 1]) + one, 0, None)
    inter = iw * ih
    area = (box[2] - box[0] + one) * (box[3] - box[1] + one)
    areas = (gts[:, 2] - gts[:, 0] + one) * (gts[:, 3] - gts[:, 1] + one)
    return inter / (area + areas - inter)


def voc_class_ap(detections: Sequence[tuple], ground_truth: dict, *, iou_thresh: float = 0.5, metric: str = "area",
                 inclusive: bool = True) -> float:
    """``detections``: [(image_id, score, box xyxy)] of one class; ``ground_truth``: {image_id: (boxes (G, 4),
    difficult (G,) bool)} of that class. Returns AP (0 when the class has no non-difficult object... NaN-free).

    The devkit walks all detections in score order and matches each against its own image's boxes; a flag
    depends on the detections of the same image only, so each image is matched on its own (:func:`_match`, the one
    matching rule, shared with :func:`image_flags`) and the flags are then put in the global score order (stable:
    ties keep the order of ``detections``)."""
    npos = int(sum((~np.asarray(d, bool)).sum() for _, d in ground_truth.values()))
    tp, fp = np.zeros(len(detections)), np.zeros(len(detections))
    by_image: dict = {}
    for i, det in enumerate(detections):
        by_image.setdefault(det[0], []).append(i)
    for image_id, index in by_image.items():
        order, t, f = _match([(detections[i][1], detections[i][2]) for i in index], ground_truth.get(image_id),
                             iou_thresh, inclusive)
        where = np.asarray(index)[order]
        tp[where], fp[where] = t, f
    if npos == 0:
        return 0.0
    order = sorted(range(len(detections)), key=lambda i: -detections[i][1])
    tp, fp = np.cumsum(tp[order]), np.cumsum(fp[order])
    recall = tp / npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(recall, precision, metric)


def voc_map(detections: dict, ground_truth: dict, *, iou_thresh: float = 0.5, metric: str = "area",
            inclusive: bool = True) -> dict[str, float]:
    """Per-class AP and their mean over classes with ground truth: ``detections`` {class: [(image, score, box)]},
    ``ground_truth`` {class: {image: (boxes, difficult)}}. Returns {class: AP, ..., "mAP": mean}."""
    out = {c: voc_class_ap(detections.get(c, []), gt, iou_thresh=iou_thresh, metric=metric, inclusive=inclusive)
           for c, gt in ground_truth.items()}
    out["mAP"] = float(np.mean(list(out.values()))) if out else 0.0
    return out


def _match(dets: list[tuple[float, list[float]]], gt, iou_thresh: float, inclusive: bool
           ) -> tuple[list[int], np.ndarray, np.ndarray]:
    """One image and class, the devkit's greedy matching: ``dets`` [(score, box)] in score order (descending,
    stable), each a true positive when its best-overlapping box (IoU >= ``iou_thresh``; the devkit's
    ``ovmax>=VOCopts.minoverlap``, py-faster-rcnn's voc_eval.py uses >) is not yet matched, ignored (neither flag)
    when that box is difficult, else a false positive. Returns (order, tp, fp): the score order of ``dets`` and
    the flags in that order."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i][0])
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    boxes, difficult = (np.zeros((0, 4)), np.zeros(0, bool)) if gt is None else gt
    boxes, difficult = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(difficult, bool)
    used = np.zeros(len(boxes), bool)
    for rank, i in enumerate(order):
        if len(boxes) == 0:
            fp[rank] = 1
            continue
        overlaps = _iou(np.asarray(dets[i][1], np.float64), boxes, inclusive)
        j = int(np.argmax(overlaps))
        if overlaps[j] >= iou_thresh:
            if difficult[j]:
                continue  # ignored
            if not used[j]:
                tp[rank], used[j] = 1, True
            else:
                fp[rank] = 1
        else:
            fp[rank] = 1
    return order, tp, fp


def image_flags(dets: list[tuple[float, list[float]]], gt, iou_thresh: float = 0.5
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image and class: (scores, tp, fp) of its detections in score order (descending, stable), exactly as
    :func:`voc_class_ap` flags them (continuous boxes); a detection matching a difficult object is neither."""
    order, tp, fp = _match(dets, gt, iou_thresh, inclusive=False)
    return np.array([dets[i][0] for i in order], np.float64), tp, fp


def bootstrap_map(results: dict, ground_truth: dict, *, metric: str, reps: int, seed: int = 0) -> float:
    """Half-width of the 95% percentile-bootstrap interval of VOC mAP over images.

    ``results`` {image: [(class, score, box)]} (a :class:`VOCMeanAP`'s), ``ground_truth`` {class: {image: (boxes,
    difficult)}}. Each resample draws the images with replacement; a drawn image counts as a new image (twice
    drawn, twice counted). A detection's true/false-positive flag depends on its own image only, so the flags are
    computed once per (image, class) and each resample only re-sorts and integrates them: the same value as
    :func:`voc_map` on the resampled images (tested), at numpy speed."""
    images = sorted(set(results) | {i for per in ground_truth.values() for i in per})
    if not images or reps <= 0:
        return float("nan")
    flags: dict = {}  # (class, image) -> (scores, tp, fp, npos)
    for cat, per in ground_truth.items():
        for image in images:
            dets = [(score, box) for c, score, box in results.get(image, []) if c == cat]
            gt = per.get(image)
            npos = 0 if gt is None else int((~np.asarray(gt[1], bool)).sum())
            flags[cat, image] = (*image_flags(dets, gt), npos, gt is not None)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        drawn = rng.choice(images, size=len(images), replace=True)
        aps = []
        for cat in ground_truth:
            parts = [flags[cat, int(i)] for i in drawn]
            if not any(p[4] for p in parts):
                continue  # the class has no ground truth among the drawn images
            npos = sum(p[3] for p in parts)
            scores = np.concatenate([p[0] for p in parts])
            order = np.argsort(-scores, kind="stable")
            tp = np.cumsum(np.concatenate([p[1] for p in parts])[order])
            fp = np.cumsum(np.concatenate([p[2] for p in parts])[order])
            aps.append(0.0 if npos == 0 else voc_ap(tp / npos, tp / np.maximum(tp + fp, np.finfo(np.float64).eps),
                                                    metric))
        values.append(float(np.mean(aps)) if aps else 0.0)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(high - low) / 2


def map_images(results: dict, ground_truth: dict) -> int:
    """The number of images a VOC mAP is over: those with detections or ground truth (the bootstrap's unit)."""
    return len(set(results) | {i for per in ground_truth.values() for i in per})
