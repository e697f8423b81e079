"""COCO box and mask AP, exactly as the official pycocotools ``COCOeval`` computes them, and exact under DDP.

* :func:`detections_to_coco` turns model outputs (boxes xyxy in *original* image pixels, contiguous labels,
  binary masks at the original size) into official results records: ``{"image_id", "category_id", "bbox":
  [x, y, w, h], "score"}`` plus ``"segmentation"`` = compressed RLE (``counts`` as str) for masks.
* :class:`COCOEvaluator` accumulates records per image; :meth:`COCOEvaluator.gather` collects them from all
  ranks (``all_gather_object``) keyed by image id, so an image seen twice (a padded sampler's duplicate) counts
  once; :meth:`COCOEvaluator.compute` runs ``COCOeval`` with ``params.imgIds`` = the evaluated images (so images
  without any detection still count their ground truth as misses) and returns the 12 standard numbers.
  ``iscrowd`` ground truth is "ignore" inside COCOeval itself: nothing is filtered here.
* :func:`write_results` writes the records as the official results JSON (atomically).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def encode_masks(masks: np.ndarray) -> list[dict]:
    """(N, H, W) binary -> compressed RLEs with ``counts`` decoded to str (JSON-serialisable)."""
    rles = mask_utils.encode(np.asfortranarray(masks.astype(np.uint8).transpose(1, 2, 0)))  # (H, W, N) Fortran
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def detections_to_coco(image_id: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                       cat_ids: Sequence[int], masks: torch.Tensor | None = None) -> list[dict]:
    """One image's detections -> results records. ``boxes`` (N, 4) xyxy original pixels; ``labels`` (N,) in
    1..K mapped to COCO ids by ``cat_ids[label - 1]``; ``masks`` (N, H, W) bool/uint8 or None."""
    boxes = boxes.detach().double().cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores_l, labels_l = scores.detach().cpu().tolist(), labels.detach().cpu().tolist()
    rles = encode_masks(masks.detach().cpu().numpy()) if masks is not None and len(masks) else None
    records = []
    for i, (box, score, label) in enumerate(zip(xywh, scores_l, labels_l)):
        rec = {"image_id": int(image_id), "category_id": int(cat_ids[int(label) - 1]), "bbox": [float(v) for v in box],
               "score": float(score)}
        if rles is not None:
            rec["segmentation"] = rles[i]
        records.append(rec)
    return records


def evaluate_records(coco_gt: COCO, records: list[dict], iou_type: str, image_ids: Iterable[int] | None = None
                     ) -> dict[str, float]:
    """pycocotools COCOeval of results ``records`` on ``image_ids`` (default: all GT images). Returns the 12
    summary numbers (-1 where undefined, as COCOeval). Empty results give all-zero AP (COCOeval cannot load them)."""
    ids = sorted(set(int(i) for i in image_ids)) if image_ids is not None else sorted(coco_gt.getImgIds())
    if iou_type == "segm":
        records = [r for r in records if "segmentation" in r]
    if not records:
        return dict.fromkeys(STAT_NAMES, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(records))  # loadRes mutates records (adds area, id, bbox)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}


def summary_table(stats: dict[str, dict[str, float]]) -> str:
    """{'bbox': {...}, 'segm': {...}} -> a small text table of AP / AP50 / AP75 / APs / APm / APl."""
    cols = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    lines = [f"{'':6s}" + "".join(f"{c:>8s}" for c in cols)]
    for kind, s in stats.items():
        lines.append(f"{kind:6s}" + "".join(f"{s[c]:8.3f}" for c in cols))
    return "\n".join(lines)


def write_results(records: list[dict], path: str | os.PathLike) -> Path:
    """Official results JSON (a list of records), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(records))
    os.replace(tmp, path)
    return path


class COCOEvaluator:
    """Accumulate per-image results, gather across ranks without duplicates, evaluate with pycocotools."""

    def __init__(self, coco_gt: COCO, cat_ids: Sequence[int], iou_types: Sequence[str] = ("bbox", "segm")) -> None:
        self.coco_gt = coco_gt
        self.cat_ids = list(cat_ids)
        self.iou_types = tuple(iou_types)
        self.results: dict[int, list[dict]] = {}

    def reset(self) -> None:
        self.results = {}

    def update(self, image_id: int, boxes, scores, labels, masks=None) -> None:
        self.results[int(image_id)] = detections_to_coco(image_id, boxes, scores, labels, self.cat_ids, masks)

    def gather(self) -> None:
        """Merge every rank's results (a no-op without torch.distributed). Keyed by image id: duplicates from
        padded samplers collapse (they hold identical detections for the same image)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        parts: list[dict[int, list[dict]] | None] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, self.results)
        merged: dict[int, list[dict]] = {}
        for part in parts:
            merged.update(part or {})
        self.results = merged

    @property
    def records(self) -> list[dict]:
        return [r for image_id in sorted(self.results) for r in self.results[image_id]]

    def compute(self) -> dict[str, dict[str, float]]:
        """{iou_type: {AP, AP50, ...}} over the images seen (call :meth:`gather` first under DDP)."""
        records = self.records
        return {t: evaluate_records(self.coco_gt, records, t, self.results.keys()) for t in self.iou_types}
