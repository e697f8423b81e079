"""PASCAL VOC detection AP (Everingham et al. 2010; the devkit's ``VOCevaldet`` / py-faster-rcnn ``voc_eval``).

Per class: detections of all images sorted by score (descending, stable); each is a true positive when its IoU
with the best-overlapping ground-truth box of that image is >= ``iou_thresh`` (0.5; the devkit's
``VOCevaldet.m``: ``if ovmax>=VOCopts.minoverlap``) and that box is not yet matched, else a false
positive; a detection whose best match is a ``difficult`` object is neither (ignored); difficult objects do not
count in the number of positives. IoU uses VOC's inclusive pixel convention (+1 on widths) when
``inclusive=True`` (the devkit's, for 1-based integer boxes); ``False`` for continuous xyxy boxes.

AP: ``metric="11point"`` (VOC2007: mean over recall r in {0, 0.1, ..., 1} of the max precision at recall >= r)
or ``"area"`` (VOC2010+: area under the precision envelope, summed over recall changes).
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
    difficult (G,) bool)} of that class. Returns AP (0 when the class has no non-difficult object... NaN-free)."""
    npos = int(sum((~np.asarray(d, bool)).sum() for _, d in ground_truth.values()))
    order = sorted(range(len(detections)), key=lambda i: -detections[i][1])
    used = {k: np.zeros(len(b), bool) for k, (b, _) in ground_truth.items()}
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for rank, i in enumerate(order):
        image_id, _, box = detections[i]
        gts, difficult = ground_truth.get(image_id, (np.zeros((0, 4)), np.zeros(0, bool)))
        gts, difficult = np.asarray(gts, np.float64).reshape(-1, 4), np.asarray(difficult, bool)
        if len(gts) == 0:
            fp[rank] = 1
            continue
        overlaps = _iou(np.asarray(box, np.float64), gts, inclusive)
        j = int(np.argmax(overlaps))
        if overlaps[j] >= iou_thresh:  # the devkit's >= (py-faster-rcnn's voc_eval.py uses >)
            if difficult[j]:
                continue  # ignored
            if not used[image_id][j]:
                tp[rank], used[image_id][j] = 1, True
            else:
                fp[rank] = 1
        else:
            fp[rank] = 1
    if npos == 0:
        return 0.0
    tp, fp = np.cumsum(tp), np.cumsum(fp)
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
