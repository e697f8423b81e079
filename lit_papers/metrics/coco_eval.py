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


BOOTSTRAP_STATS = ("AP", "AP50", "AP75")


def _ap_of_accumulated(evaluator: COCOeval, iou: float | None = None) -> float:
    """AP at area "all", 100 detections from ``evaluator.eval`` (what ``summarize`` reports): averaged over the IoU
    thresholds .50:.95 (``iou=None``, COCO's AP) or at one threshold (0.5: AP50, 0.75: AP75)."""
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # (T, R, K) at area "all", maxDets[-1] = 100
    if iou is not None:
        precision = precision[np.flatnonzero(np.isclose(evaluator.params.iouThrs, iou))]
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else -1.0


def _stats_of_accumulated(evaluator: COCOeval) -> dict[str, float]:
    return {"AP": _ap_of_accumulated(evaluator), "AP50": _ap_of_accumulated(evaluator, 0.5),
            "AP75": _ap_of_accumulated(evaluator, 0.75)}


def bootstrap_ap_ci95(evaluator: COCOeval, resamples: int = 200, seed: int = 0) -> float:
    """95 % half-width of AP over the evaluated images (:func:`bootstrap_ci95`'s ``AP``)."""
    return bootstrap_ci95(evaluator, resamples=resamples, seed=seed)["AP"]


def bootstrap_ci95(evaluator: COCOeval, resamples: int = 200, seed: int = 0) -> dict[str, float]:
    """95 % half-widths of AP, AP50 and AP75 over the evaluated images: ``1.96 x`` the standard deviation of each
    over ``resamples`` sets of the same number of images drawn with replacement (the images are the sampling unit:
    detections within an image are not independent). ``evaluator`` has run ``evaluate()``; its per-image
    matches are reused, only ``accumulate()`` runs per resample, and the evaluator is left as it was.

    pycocotools indexes ``evalImgs`` as [category][area][image] by position in ``imgIds``; a resample lists the
    chosen images' blocks in that order (a duplicate image is two entries), with both ``params`` and the
    evaluated params' ``imgIds`` set to the chosen list, so ``accumulate`` treats every draw as an image."""
    n = len(evaluator._paramsEval.imgIds)
    if n < 2:
        return dict.fromkeys(BOOTSTRAP_STATS, 0.0)
    rng = np.random.default_rng(seed)
    values = resampled_stats(evaluator, [rng.integers(0, n, size=n) for _ in range(resamples)])
    return {name: float(1.96 * np.std([v[name] for v in values], ddof=1)) for name in BOOTSTRAP_STATS}


def resampled_ap(evaluator: COCOeval, picks: list) -> list[float]:
    """AP of an evaluated ``COCOeval`` on each list of image positions in ``picks`` (see :func:`resampled_stats`)."""
    return [v["AP"] for v in resampled_stats(evaluator, picks)]


def resampled_stats(evaluator: COCOeval, picks: list) -> list[dict[str, float]]:
    """{AP, AP50, AP75} of an evaluated ``COCOeval`` on each list of image positions in ``picks`` (into the
    evaluated ``imgIds``; repeats allowed), by ``accumulate`` on the reordered per-image matches; the evaluator is
    restored."""
    params, evaluated = evaluator.params, evaluator._paramsEval
    ids = list(evaluated.imgIds)
    n, areas = len(ids), len(evaluated.areaRng)
    cats = len(evaluated.catIds) if evaluated.useCats else 1
    base, saved = evaluator.evalImgs, (evaluator.evalImgs, list(params.imgIds), ids, evaluator.eval)
    values = []
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for pick in picks:
                evaluator.evalImgs = [base[(k * areas + a) * n + int(i)] for k in range(cats) for a in range(areas)
                                      for i in pick]
                params.imgIds = evaluated.imgIds = [ids[int(i)] for i in pick]
                evaluator.accumulate()
                values.append(_stats_of_accumulated(evaluator))
    finally:
        evaluator.evalImgs, params.imgIds, evaluated.imgIds, evaluator.eval = saved
    return values


def evaluate_records(coco_gt: COCO, records: list[dict], iou_type: str, image_ids: Iterable[int] | None = None,
                     *, bootstrap: int = 0) -> dict[str, float]:
    """pycocotools COCOeval of results ``records`` on ``image_ids`` (default: all GT images). Returns the 12
    summary numbers (-1 where undefined, as COCOeval). Empty results give all-zero AP (COCOeval cannot load them).
    ``bootstrap`` > 0 adds ``AP_ci95``, ``AP50_ci95``, ``AP75_ci95`` (:func:`bootstrap_ci95` with that many
    resamples) and ``AP_n``, ``AP50_n``, ``AP75_n``, the number of images."""
    ids = sorted(set(int(i) for i in image_ids)) if image_ids is not None else sorted(coco_gt.getImgIds())
    if iou_type == "segm":
        records = [r for r in records if "segmentation" in r]
    if not records:
        out = dict.fromkeys(STAT_NAMES, 0.0)
        if bootstrap:
            for name in BOOTSTRAP_STATS:
                out[f"{name}_ci95"], out[f"{name}_n"] = 0.0, float(len(ids))
        return out
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(records))  # loadRes mutates records (adds area, id, bbox)
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    out = {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}
    if bootstrap:
        for name, half in bootstrap_ci95(evaluator, resamples=bootstrap).items():
            out[f"{name}_ci95"], out[f"{name}_n"] = half, float(len(ids))
    return out


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

    def compute(self, bootstrap: int = 0) -> dict[str, dict[str, float]]:
        """{iou_type: {AP, AP50, ...}} over the images seen (call :meth:`gather` first under DDP); with
        ``bootstrap`` resamples also ``AP_ci95``, ``AP50_ci95``, ``AP75_ci95`` and their ``_n`` (see
        :func:`evaluate_records`)."""
        records = self.records
        return {t: evaluate_records(self.coco_gt, records, t, self.results.keys(), bootstrap=bootstrap)
                for t in self.iou_types}


def main(argv: list[str] | None = None) -> int:
    """``python -m lit_papers.metrics.coco_eval RESULTS.json ANNOTATIONS.json [--iou-type segm] [--bootstrap N]``:
    AP of an official results file (e.g. a run's ``coco_results_test.json``) with its bootstrap 95 % half-width,
    as JSON; for results written before the interval was logged."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lit_papers.metrics.coco_eval", description=main.__doc__)
    parser.add_argument("results", type=Path)
    parser.add_argument("annotations", type=Path)
    parser.add_argument("--iou-type", default="bbox", choices=("bbox", "segm"))
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--only-result-images", action="store_true",
                        help="evaluate only the images that have a detection (default: every image of the annotations, "
                             "as a run on the whole eval set does)")
    args = parser.parse_args(argv)
    for path in (args.results, args.annotations):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    try:
        records = json.loads(args.results.read_text())
    except json.JSONDecodeError as exc:
        parser.error(f"{args.results}: not a COCO results JSON ({exc})")
    with contextlib.redirect_stdout(io.StringIO()):  # metrics depend on ops only: pycocotools reads the file
        gt = COCO(str(args.annotations))
    image_ids = sorted({int(r["image_id"]) for r in records}) if args.only_result_images else None
    out = evaluate_records(gt, records, args.iou_type, image_ids, bootstrap=args.bootstrap)
    print(json.dumps({"results": str(args.results), "iou_type": args.iou_type, "bootstrap": args.bootstrap, **out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
