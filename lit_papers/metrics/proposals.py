"""Class-agnostic object-proposal average recall (AR), as DeepMask / SharpMask report it on COCO (Pinheiro et al.
2015, sec. 4; Hosang et al.'s AR: recall averaged over IoU 0.5:0.05:0.95), computed by pycocotools' ``COCOeval``
with ``params.useCats = 0`` (every proposal may match every ground-truth object, whatever its category) and
``params.maxDets = [10, 100, 1000]`` (AR@10 / AR@100 / AR@1000: each image's top-k proposals by score).

``iscrowd`` ground truth is "ignore" inside COCOeval (a proposal on a crowd region is neither a hit nor a miss),
objects outside an area range are ignored for that range (``small`` < 32^2 <= ``medium`` < 96^2 <= ``large``,
COCO's ranges).

AR is also a mean over objects: COCOeval's recall at threshold t is (objects matched at t) / (objects), so AR@k =
mean over non-ignored objects of (fraction of the 10 thresholds at which the object is matched by one of its
image's top-k proposals). COCOeval matches greedily in score order, so truncating to the top k never changes the
matches of the first k: :func:`per_object_recall` reads those per-object values from ``evalImgs`` (computed once at
the largest maxDet) and :func:`proposal_recall` returns, beside each AR, ``_n`` (objects) and ``_ci95`` (1.96 x
standard error of that mean over objects; objects of one image are not independent, so it is optimistic).

Records: ``{"image_id", "category_id" (any; ignored), "bbox": [x, y, w, h], "score"}`` (+ ``"segmentation"``
compressed RLE for ``segm``), e.g. from :func:`lit_papers.metrics.coco_eval.detections_to_coco`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import time
from collections.abc import Iterable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lit_papers.metrics.hooks import EvaluationHooks

MAX_DETS = (10, 100, 1000)
AREAS = ("all", "small", "medium", "large")


def run_cocoeval(coco_gt: COCO, records: list[dict], iou_type: str, image_ids: Iterable[int],
                 max_dets: Sequence[int] = MAX_DETS) -> COCOeval:
    """COCOeval with ``useCats = 0`` and ``maxDets = max_dets``, evaluated and accumulated (quiet). Every record's
    ``category_id`` is set to the ground truth's first category: with ``useCats = 0`` COCOeval still collects
    proposals per category of ``params.catIds`` and silently drops any whose id is not among them."""
    first = sorted(coco_gt.getCatIds())[0]
    records = [{**r, "category_id": first} for r in records]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(copy.deepcopy(records))  # loadRes mutates records
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.imgIds = sorted(set(int(i) for i in image_ids))
        ev.params.useCats = 0
        ev.params.maxDets = sorted(int(m) for m in max_dets)
        ev.evaluate()
        ev.accumulate()
    return ev


def per_object_recall(ev: COCOeval, area: str = "all") -> np.ndarray:
    """From an evaluated COCOeval: (G, M) = fraction of the IoU thresholds at which
    each non-ignored object of area range ``area`` is matched by one of its image's top-``maxDets[m]`` proposals."""
    p = ev.params
    a = p.areaRngLbl.index(area)
    max_dets = list(p.maxDets)
    rows = []
    for e in ev.evalImgs:
        if e is None or e["aRng"] != p.areaRng[a]:
            continue
        keep = ~np.asarray(e["gtIgnore"], dtype=bool)  # (G_img,)
        if not keep.any():
            continue
        rank = {int(d): float(r) for r, d in enumerate(e["dtIds"])}  # dtIds are in score order
        matches = np.asarray(e["gtMatches"])[:, keep]  # (T, G) matched dt id or 0
        ranks = np.array([[rank.get(int(d), math.inf) for d in row] for row in matches]).reshape(matches.shape)
        rows.append(np.stack([(ranks < m).mean(axis=0) for m in max_dets], axis=1))  # (G, M)
    return np.concatenate(rows) if rows else np.zeros((0, len(max_dets)))


def proposal_recall(coco_gt: COCO, records: list[dict], iou_type: str, image_ids: Iterable[int] | None = None,
                    max_dets: Sequence[int] = MAX_DETS, areas: Sequence[str] = AREAS,
                    objects: dict | None = None) -> dict[str, float]:
    """``{"AR{k}" (area all), "AR{k}_{small|medium|large}", each with "_n" and "_ci95"}`` for every k in
    ``max_dets``; recall in [0, 1]. Images without proposals count their objects as misses. An area range with no
    object gives AR -1 (as COCOeval), n 0, ci95 0. ``objects``, if given, receives ``{key: per-object recall (G,)}``
    (objects in COCOeval's order: the same for two proposal sets of the same images, so they can be paired)."""
    ids = sorted(set(int(i) for i in image_ids)) if image_ids is not None else sorted(coco_gt.getImgIds())
    if iou_type == "segm":
        records = [r for r in records if "segmentation" in r]
    out: dict[str, float] = {}
    if not records:  # loadRes refuses an empty list: every object is missed
        for area in areas:
            n = _count_objects(coco_gt, ids, area)
            for k in max_dets:
                key = f"AR{k}" + ("" if area == "all" else f"_{area}")
                out[key], out[f"{key}_n"], out[f"{key}_ci95"] = (0.0 if n else -1.0), float(n), 0.0
        return out
    ev = run_cocoeval(coco_gt, records, iou_type, ids, max_dets)
    for area in areas:
        recall = per_object_recall(ev, area)
        for m, k in enumerate(ev.params.maxDets):
            key = f"AR{k}" + ("" if area == "all" else f"_{area}")
            n = len(recall)
            out[key] = float(recall[:, m].mean()) if n else -1.0
            out[f"{key}_n"] = float(n)
            out[f"{key}_ci95"] = float(1.959963984540054 * recall[:, m].std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
            if objects is not None:
                objects[key] = recall[:, m]
    return out


def _count_objects(coco_gt: COCO, ids: list[int], area: str) -> int:
    lo, hi = {"all": (0, 1e10), "small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, 1e10)}[area]
    anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=ids))
    return sum(1 for a in anns if not a.get("iscrowd", 0) and lo <= a["area"] <= hi)


def recall_from_cocoeval(ev: COCOeval, area: str = "all") -> dict[int, float]:
    """{maxDet: AR} straight from COCOeval's accumulated ``eval['recall']`` (T, K, A, M) (the oracle the per-object
    version is tested against): the mean over thresholds of the recall, -1 entries (no object) excluded."""
    a = ev.params.areaRngLbl.index(area)
    recall = ev.eval["recall"][:, :, a, :]  # (T, K, M)
    out = {}
    for m, k in enumerate(ev.params.maxDets):
        r = recall[:, :, m]
        out[int(k)] = float(r[r > -1].mean()) if (r > -1).any() else -1.0
    return out


class ProposalEvaluator:
    """Accumulates proposal records per image; :meth:`compute` gives ``{"box": {...}, "segm": {...}}`` of
    :func:`proposal_recall`. Under DDP call :meth:`gather` first (records keyed by image id)."""

    def __init__(self, coco_gt: COCO, iou_types: Sequence[str] = ("bbox", "segm"),
                 max_dets: Sequence[int] = MAX_DETS) -> None:
        self.coco_gt, self.iou_types, self.max_dets = coco_gt, tuple(iou_types), tuple(max_dets)
        self.results: dict[int, list[dict]] = {}

    def update(self, image_id: int, records: list[dict]) -> None:
        self.results[int(image_id)] = list(records)

    def gather(self) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self.results)
        self.results = {k: v for part in parts for k, v in (part or {}).items()}

    def compute(self, objects: dict | None = None) -> dict[str, dict[str, float]]:
        """``objects``, if given, receives ``{iou_type: {key: per-object recall}}``."""
        records = [r for i in sorted(self.results) for r in self.results[i]]
        out = {}
        for t in self.iou_types:
            per = {} if objects is not None else None
            out[t] = proposal_recall(self.coco_gt, records, t, self.results.keys(), self.max_dets, objects=per)
            if objects is not None:
                objects[t] = per
        return out


class ProposalSets:
    """Evaluates several named sets of proposals of the same images at once (SharpMask's refined masks and the
    coarse DeepMask masks of the same windows): :meth:`update` takes ``{name: {"boxes" (N, 4) xyxy, "scores" (N,),
    "masks" (N, H, W) bool}}`` per image; :meth:`compute` returns flat ``{"<name>_<box|segm>_<AR key>": value}``
    (no prefix for the name ``""``), keys as :func:`proposal_recall`'s; for every other set ``name`` also the paired
    difference of the ``""`` set over it, object by object: ``gain_over_<name>_<box|segm>_AR<k>`` (+ ``_n``,
    ``_ci95`` of the mean per-object difference). The first ``keep_images`` images and the
    ``keep_top`` best masks of each set are kept in :attr:`examples` (``{"images": [...], "panels": {name: [...]}}``,
    the set ``""`` named ``default_name``) for pictures."""

    NAMES = {"bbox": "box", "segm": "segm"}

    def __init__(self, coco_gt: COCO, max_dets: Sequence[int] = MAX_DETS, *, keep_images: int = 0, keep_top: int = 5,
                 default_name: str = "proposals") -> None:
        self.coco_gt, self.max_dets = coco_gt, tuple(max_dets)
        self.evaluators: dict[str, ProposalEvaluator] = {}
        self.keep_images, self.keep_top, self.default_name = keep_images, keep_top, default_name
        self.examples: dict = {"images": [], "panels": {}}

    def update(self, image_id: int, sets: dict[str, dict], image=None) -> None:
        import torch

        from lit_papers.metrics.coco_eval import detections_to_coco

        if image is not None and len(self.examples["images"]) < self.keep_images:
            self.examples["images"].append(image.detach().cpu())
            for name, props in sets.items():
                self.examples["panels"].setdefault(name or self.default_name, []).append(
                    props["masks"][: self.keep_top].cpu())
        for name, props in sets.items():
            if name not in self.evaluators:
                self.evaluators[name] = ProposalEvaluator(self.coco_gt, max_dets=self.max_dets)
            ones = torch.ones(len(props["scores"]), dtype=torch.long)
            self.evaluators[name].update(image_id, detections_to_coco(image_id, props["boxes"], props["scores"], ones,
                                                                      [1], props["masks"]))

    def compute(self) -> dict[str, float]:
        out, objects = {}, {}
        for name, evaluator in self.evaluators.items():
            evaluator.gather()
            objects[name] = {}
            for iou_type, metrics in evaluator.compute(objects[name]).items():
                prefix = f"{name}_" if name else ""
                out.update({f"{prefix}{self.NAMES[iou_type]}_{k}": v for k, v in metrics.items()})
        for name in objects:
            if not name or "" not in objects:
                continue
            for iou_type, per in objects[""].items():
                for key, ours in per.items():
                    theirs = objects[name][iou_type][key]
                    if len(ours) != len(theirs) or not len(ours):
                        continue
                    diff = ours - theirs
                    out_key = f"gain_over_{name}_{self.NAMES[iou_type]}_{key}"
                    out[out_key] = float(diff.mean())
                    out[f"{out_key}_n"] = float(len(diff))
                    out[f"{out_key}_ci95"] = (float(1.959963984540054 * diff.std(ddof=1) / math.sqrt(len(diff)))
                                              if len(diff) > 1 else 0.0)
        return out


class ProposalEvaluationMixin(EvaluationHooks):
    """The validation / test hooks of a LightningModule that evaluates proposals (DeepMask, SharpMask): every
    whole image of the datamodule's ``eval_dataset(stage)`` goes through ``self.proposal_sets(image)`` (timed), the
    sets are scored by :class:`ProposalSets` and logged as ``<stage>/<key>`` plus ``<stage>/seconds_per_image``;
    the kept examples are ``self.example_predictions`` (for the proposal pictures). Needs ``hparams.max_dets``,
    ``hparams.max_pictures``, ``hparams.picture_top``. (Lightning machinery shared by two papers; it imports no
    Lightning itself.)"""

    def _start_eval(self, stage: str) -> None:
        hp = self.hparams
        self.evaluator = ProposalSets(self.trainer.datamodule.eval_dataset(stage).coco, max_dets=hp.max_dets,
                                      keep_images=hp.max_pictures, keep_top=hp.picture_top,
                                      default_name=type(self.model).__name__)
        self.example_predictions = self.evaluator.examples
        self._seconds, self._images = 0.0, 0

    def _eval_step(self, batch, batch_idx: int) -> None:
        import torch

        images, targets = batch
        for image, target in zip(images, targets):
            start = time.perf_counter()
            sets = self.proposal_sets(image)
            if image.is_cuda:
                torch.cuda.synchronize()
            self._seconds += time.perf_counter() - start
            self._images += 1
            self.evaluator.update(target["image_id"], sets, image)

    def _end_eval(self, stage: str) -> None:
        metrics = self.evaluator.compute()
        for key, value in metrics.items():
            self.log(f"{stage}/{key}", float(value), rank_zero_only=True, prog_bar=key == "segm_AR100")
        seconds = self._seconds / max(self._images, 1)
        self.log(f"{stage}/seconds_per_image", seconds, rank_zero_only=True)
        if not self.trainer.sanity_checking and self.global_rank == 0:
            ks = self.hparams.max_dets
            print(f"[{stage}] step {self.global_step}: " + "; ".join(
                f"{key} AR@{'/'.join(map(str, ks))} = " + " / ".join(f"{metrics[f'{key}_AR{k}']:.3f}" for k in ks)
                for key in sorted({k.rsplit("_AR", 1)[0] for k in metrics})) + f"; {seconds:.3f} s/image")

