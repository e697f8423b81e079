"""Detection evaluators, injected into :class:`~lit_papers.detection.module.DetectionLitModule` through the
config (``model.init_args.evaluators``), so that which metrics a run reports is a recipe choice, not a guess made
from the dataset's attributes.

Protocol (one object per metric family, reused across epochs):

* ``start(dataset, iou_types)``: at the start of a validation/test epoch; ``dataset`` is
  ``trainer.datamodule.eval_dataset(stage)`` and ``iou_types`` what the model produces (``model.iou_types``:
  ``("bbox",)`` or ``("bbox", "segm")``).
* ``update(image_id, detection)``: one image's post-processed detection (the model's output: ``boxes`` (N, 4)
  xyxy in original-image pixels, ``scores``, ``labels`` 1..K, optional ``masks`` (N, H0, W0) uint8).
* ``finish() -> {name: value}``: after the epoch, results gathered from all ranks; names are logged as
  ``<stage>/<name>``.
* ``summary()`` (text for the log) and ``write(folder)`` (official results file at test) are optional.

:class:`COCOMetrics`: pycocotools box / mask AP (``bbox_AP``, ``bbox_AP50``, ... ``segm_AP``...).
:class:`VOCMeanAP`: PASCAL VOC mAP at IoU 0.5, ``metric="11point"`` (VOC2007, ``voc07_mAP``) or ``"area"``
(VOC2010+, ``voc_mAP``), with the dataset's ``difficult`` flags (:mod:`lit_papers.metrics.voc_eval`).
Both give, at test, the 95 % interval of their AP over the images (bootstrap: ``<name>_ci95``, with ``_n``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from lit_papers.metrics.coco_eval import COCOEvaluator, summary_table, write_results
from lit_papers.metrics.voc_eval import bootstrap_map, map_images, voc_map


class DetectionEvaluator:
    """Base of the evaluators (see the module docstring for the protocol)."""

    def start(self, dataset, iou_types: Sequence[str], stage: str = "val") -> None:
        raise NotImplementedError

    def update(self, image_id: int, detection: dict) -> None:
        raise NotImplementedError

    def finish(self) -> dict[str, float]:
        raise NotImplementedError

    def summary(self) -> str | None:
        return None

    def write(self, folder: Path) -> Path | None:
        return None


def _gather_dict(local: dict) -> dict:
    """Merge a dict keyed by image id from every rank (no-op without torch.distributed); duplicate images from
    padded samplers collapse."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return local
    parts: list[dict | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, local)
    merged: dict = {}
    for part in parts:
        merged.update(part or {})
    return merged


class COCOMetrics(DetectionEvaluator):
    """COCO AP with pycocotools on the dataset's ``.coco`` ground truth (``.cat_ids`` maps labels 1..K to
    category ids). ``write_results_json``: at test, the official results JSON ``coco_results_test.json``.
    ``bootstrap``: at test, the 95 % intervals of AP, AP50 and AP75 over images from that many resamples with
    replacement (logged as ``<iou type>_AP_ci95`` with ``<iou type>_AP_n`` images, the same for AP50 / AP75;
    0 = none); ``bootstrap_val``: also at
    validation (off: it costs one ``accumulate`` per resample, minutes on the 5000 images of COCO val);
    ``bootstrap_min_images``: no interval below that many images (a handful of images is no sample to resample,
    and the tiny configs of the test suite would pay for it)."""

    def __init__(self, *, write_results_json: bool = True, bootstrap: int = 200, bootstrap_val: bool = False,
                 bootstrap_min_images: int = 20) -> None:
        self.write_results_json = write_results_json
        self.bootstrap, self.bootstrap_val, self.bootstrap_min_images = bootstrap, bootstrap_val, bootstrap_min_images
        self.evaluator: COCOEvaluator | None = None
        self.stats: dict[str, dict[str, float]] = {}
        self.stage = "val"

    def start(self, dataset, iou_types: Sequence[str], stage: str = "val") -> None:
        for attr in ("coco", "cat_ids"):
            if not hasattr(dataset, attr):
                raise TypeError(f"COCOMetrics needs an eval dataset with .{attr} (COCO-format ground truth); "
                                f"{type(dataset).__name__} has none")
        self.evaluator = COCOEvaluator(dataset.coco, dataset.cat_ids, tuple(iou_types))
        self.stage = stage

    def update(self, image_id: int, detection: dict) -> None:
        self.evaluator.update(image_id, detection["boxes"], detection["scores"], detection["labels"],
                              detection.get("masks") if "segm" in self.evaluator.iou_types else None)

    def finish(self) -> dict[str, float]:
        self.evaluator.gather()
        wanted = (self.stage == "test" or self.bootstrap_val) and self.num_images >= self.bootstrap_min_images
        resamples = self.bootstrap if wanted else 0
        self.stats = self.evaluator.compute(bootstrap=resamples)
        return {f"{kind}_{name}": value for kind, values in self.stats.items() for name, value in values.items()}

    @property
    def num_images(self) -> int:
        return len(self.evaluator.results)

    def summary(self) -> str:
        return f"COCO AP on {self.num_images} images:\n" + summary_table(self.stats)

    def write(self, folder: Path) -> Path | None:
        if not self.write_results_json:
            return None
        return write_results(self.evaluator.records, Path(folder) / "coco_results_test.json")


class VOCMeanAP(DetectionEvaluator):
    """PASCAL VOC mAP at IoU >= 0.5 over the dataset's ``voc_ground_truth()`` (difficult objects ignored).
    ``metric``: "11point" (VOC2007 devkit) or "area" (VOC2010+); ``name``: the logged key. Also ``<name>_n`` (the
    images) and, at test with at least ``bootstrap_min_images`` images, ``<name>_ci95``: the half-width of the 95 %
    percentile bootstrap over images (:func:`~lit_papers.metrics.voc_eval.bootstrap_map`, ``bootstrap``
    resamples, fixed seed; 0 = none; ``bootstrap_val``: also at validation)."""

    def __init__(self, *, metric: str = "11point", name: str = "voc07_mAP", bootstrap: int = 200,
                 bootstrap_val: bool = False, bootstrap_min_images: int = 20) -> None:
        if metric not in ("11point", "area"):
            raise ValueError(f"VOCMeanAP metric must be '11point' or 'area', got {metric!r}")
        if bootstrap < 0:
            raise ValueError(f"VOCMeanAP bootstrap must be >= 0 resamples, got {bootstrap}")
        self.metric, self.name = metric, name
        self.bootstrap, self.bootstrap_val, self.bootstrap_min_images = bootstrap, bootstrap_val, bootstrap_min_images
        self.results: dict[int, list[tuple[int, float, list[float]]]] = {}
        self.ground_truth = None
        self.cat_ids: list[int] = []
        self.stage = "val"

    def start(self, dataset, iou_types: Sequence[str], stage: str = "val") -> None:
        if not callable(getattr(dataset, "voc_ground_truth", None)):
            raise TypeError(f"VOCMeanAP needs a VOC eval dataset (voc_ground_truth()); {type(dataset).__name__} has "
                            "none: remove VOCMeanAP from model.init_args.evaluators for this data")
        self.ground_truth = dataset.voc_ground_truth()
        self.cat_ids = list(dataset.cat_ids)
        self.results = {}
        self.stage = stage

    def update(self, image_id: int, detection: dict) -> None:
        boxes = detection["boxes"].detach().double().cpu().tolist()
        scores = detection["scores"].detach().cpu().tolist()
        labels = detection["labels"].detach().cpu().tolist()
        self.results[int(image_id)] = [(self.cat_ids[int(lab) - 1], float(s), b)
                                       for b, s, lab in zip(boxes, scores, labels)]

    def finish(self) -> dict[str, float]:
        self.results = _gather_dict(self.results)
        detections: dict = {}
        for image_id in sorted(self.results):
            for cat, score, box in self.results[image_id]:
                detections.setdefault(cat, []).append((image_id, score, box))
        out = {self.name: voc_map(detections, self.ground_truth, metric=self.metric, inclusive=False)["mAP"]}
        n = map_images(self.results, self.ground_truth)
        out[f"{self.name}_n"] = float(n)
        if self.bootstrap and (self.stage == "test" or self.bootstrap_val) and n >= self.bootstrap_min_images:
            out[f"{self.name}_ci95"] = bootstrap_map(self.results, self.ground_truth, metric=self.metric,
                                                     reps=self.bootstrap)
        return out
