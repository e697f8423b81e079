"""The region stages shared by R-CNN (Girshick et al. 2014) and SPP-net (He et al. 2014), written once.

Both detectors score category-independent region proposals with features of a CNN; they differ only in how a
proposal's feature vector is computed (R-CNN: a warped crop through the whole CNN; SPP-net: the pyramid pooled
over the proposal's window of one conv feature map per image). Everything else lives here:

1. **Proposals** (R-CNN sec. 2.1, SPP-net sec. 4.1): selective search in "fast mode", ~2000 boxes per image
   (:class:`SelectiveSearch`, OpenCV's ``ximgproc`` implementation from the contrib build; see the R-CNN README
   for why this one and how it coexists with albumentations' ``opencv-python-headless``).
2. **Fine-tuning labels** (R-CNN sec. 2.3): a proposal with IoU >= 0.5 with a ground-truth box is a positive of
   that box's class, every other proposal background; mini-batches of 128 = 32 positives + 96 background
   (:func:`sample_regions`).
3. **One linear SVM per class with hard-negative mining** (R-CNN sec. 2.3 "Object category classifiers" and
   appendix B): positives are the ground-truth boxes of the class only, negatives the proposals with IoU < 0.3
   with every instance of the class, proposals in between are ignored; the standard hard-negative mining (the
   negatives the current model scores inside the margin, ``w.x + b > -1``, are added to a cache; the model is
   retrained; cached negatives scored below ``-1.05`` are evicted) over the training images
   (:func:`train_svm_hard_negatives`, :class:`LinearSVMs`). Features are scaled so that their mean L2 norm is 20
   and positives weigh 2 (the released R-CNN code's defaults; the paper gives no number).
4. **Class-specific bounding-box regression** (appendix C, eq. 1-9): ridge regression (lambda = 1000) from
   pool5 features to the targets ``t_x = (G_x - P_x) / P_w``, ``t_y = (G_y - P_y) / P_h``,
   ``t_w = log(G_w / P_w)``, ``t_h = log(G_h / P_h)`` of proposals whose best ground-truth overlap exceeds 0.6
   (:func:`box_regression_targets`, :func:`apply_box_regression`, :class:`RidgeBoxRegressors`).
5. **Class-wise greedy NMS** (sec. 2.2): per class independently, with ``torchvision.ops.batched_nms``
   (:func:`classwise_nms`).

:class:`RegionDetectorLitModule` is the Lightning side both papers' modules subclass: ``fit`` fine-tunes the
network's region classifier (softmax over K + 1) on sampled proposals; before every validation / test at a new
step it extracts the training images' region features and fits the SVMs and regressors (stage 3-4, kept as
buffers so checkpoints hold them); evaluation scores the test proposals, regresses, applies NMS and feeds the
injected evaluators twice: with box regression (``<stage>/<name>``) and without (``<stage>/<name>_no_bbox``),
the last two rows of the paper's Table 2.

Boxes are xyxy in continuous pixel coordinates (corners, as the rest of lit_papers). A network plugged into the
module implements ``forward(image (3, H, W) float [0, 1], boxes (N, 4)) -> {"pool5": (N, D5), "fc7": (N, D7),
"logits": (N, K + 1)}`` (feature names chosen by ``svm_features`` / ``regression_features``).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_papers.detection.evaluators import DetectionEvaluator, VOCMeanAP
from lit_papers.metrics.hooks import EvaluationHooks
from lit_papers.schedules import optimizer_config

# -- 1. proposals ------------------------------------------------------------------------------------------


def _ximgproc():
    """OpenCV's contrib ``ximgproc`` module, or a clear error saying how to get it."""
    import cv2

    if not hasattr(cv2, "ximgproc"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            contrib = version("opencv-contrib-python-headless")
        except PackageNotFoundError:
            contrib = None
        fix = (f"pip install --no-deps --force-reinstall opencv-contrib-python-headless=={cv2.__version__}")
        raise RuntimeError(
            f"cv2 at {cv2.__file__} (OpenCV {cv2.__version__}) has no ximgproc (selective search). "
            + ("opencv-contrib-python-headless is not installed" if contrib is None else
               f"opencv-contrib-python-headless {contrib} is installed but another OpenCV wheel (albumentations' "
               "opencv-python-headless) overwrote its cv2 files")
            + f"; fix: {fix} (the same version as opencv-python-headless, installed after it)")
    return cv2.ximgproc



STAT_TAILS = ("_ci95", "_n")  # an evaluator's companion keys of a metric M: M_ci95, M_n


def with_suffix(name: str, suffix: str) -> str:
    """``voc07_mAP`` + ``_no_bbox`` -> ``voc07_mAP_no_bbox``; a companion key keeps its tail last
    (``voc07_mAP_ci95`` -> ``voc07_mAP_no_bbox_ci95``), where the card looks for the interval of ``M_no_bbox``."""
    for tail in STAT_TAILS:
        if name.endswith(tail):
            return f"{name[: -len(tail)]}{suffix}{tail}"
    return f"{name}{suffix}"


class SelectiveSearch:
    """Selective search proposals (Uijlings et al. 2013) as R-CNN uses them: "fast mode", ~2000 boxes per image.

    OpenCV's ``switchToSelectiveSearchFast(base_k, inc_k, sigma)``: Felzenszwalb-Huttenlocher segmentations at
    ``k = base_k`` and ``base_k + inc_k`` in two colour spaces, merged hierarchically under two similarity
    combinations (OpenCV's defaults: 150, 150, 0.8). Small images need a smaller ``base_k`` to be split into
    enough regions (the shapes configs use 20). Boxes narrower or shorter than ``min_size`` pixels are dropped and
    duplicates removed. OpenCV returns the boxes in a pseudo-random order that differs from call to call (the
    ranking of Uijlings et al. multiplies the hierarchy level by a random number; ``cv2.setRNGSeed`` does not fix
    it, measured), so the boxes are sorted (x, y, w, h) to make an image's proposals reproducible, and when there
    are more than ``max_proposals`` a pseudo-random subset seeded by the image's bytes is kept.

    ``__call__(image (3, H, W) float [0, 1] RGB) -> Tensor[N, 4]`` xyxy float32, ``N <= max_proposals``.
    """

    def __init__(self, *, max_proposals: int = 2000, base_k: int = 150, inc_k: int = 150, sigma: float = 0.8,
                 min_size: int = 2) -> None:
        if max_proposals < 1:
            raise ValueError(f"SelectiveSearch max_proposals must be >= 1, got {max_proposals}")
        self.max_proposals, self.base_k, self.inc_k, self.sigma, self.min_size = (max_proposals, base_k, inc_k,
                                                                                  sigma, min_size)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"SelectiveSearch expects one (3, H, W) RGB image, got {tuple(image.shape)}")
        rgb = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        search = _ximgproc().segmentation.createSelectiveSearchSegmentation()
        search.setBaseImage(np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV wants BGR
        search.switchToSelectiveSearchFast(self.base_k, self.inc_k, self.sigma)
        xywh = np.asarray(search.process(), np.float32).reshape(-1, 4)  # (N, 4) x, y, w, h
        keep = (xywh[:, 2] >= self.min_size) & (xywh[:, 3] >= self.min_size)
        xywh = xywh[keep]
        xywh = np.unique(xywh, axis=0)  # deduplicated, sorted: OpenCV's own order is not reproducible
        if len(xywh) > self.max_proposals:  # a pseudo-random subset, fixed for a given image (Uijlings' ranking
            seed = int.from_bytes(hashlib.sha1(rgb.tobytes()).digest()[:8], "little")  # is pseudo-random too)
            pick = np.random.default_rng(seed).choice(len(xywh), self.max_proposals, replace=False)
            xywh = xywh[np.sort(pick)]
        boxes = torch.from_numpy(xywh.copy())
        boxes[:, 2:] += boxes[:, :2]  # (N, 4) xyxy
        return boxes


# -- 2. labels for fine-tuning -----------------------------------------------------------------------------


def match_proposals(proposals: torch.Tensor, gt_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best ground-truth overlap of each proposal: (IoU (N,), index of that box (N,)); IoU 0 without boxes."""
    if len(gt_boxes) == 0:
        return proposals.new_zeros(len(proposals)), torch.zeros(len(proposals), dtype=torch.long)
    iou, index = torchvision.ops.box_iou(proposals, gt_boxes).max(dim=1)  # (N,), (N,)
    return iou, index


def sample_regions(proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor, *, fg_iou: float,
                   num_fg: int, num_bg: int, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fine-tuning sample of one image (R-CNN sec. 2.3): ground-truth boxes and proposals with IoU >= ``fg_iou``
    are positives of their box's class, the rest background (label 0); at most ``num_fg`` positives and
    ``num_bg`` background drawn at random. Returns (boxes (M, 4), labels (M,) int64 in 0..K)."""
    boxes = torch.cat([gt_boxes, proposals])  # (G + N, 4)
    iou, index = match_proposals(boxes, gt_boxes)
    labels = torch.where(iou >= fg_iou, gt_labels[index] if len(gt_labels) else torch.zeros_like(index),
                         torch.zeros_like(index))
    fg, bg = torch.nonzero(labels > 0).flatten(), torch.nonzero(labels == 0).flatten()
    fg = fg[torch.randperm(len(fg), generator=generator)[:num_fg]]
    bg = bg[torch.randperm(len(bg), generator=generator)[:num_bg]]
    keep = torch.cat([fg, bg])
    return boxes[keep], labels[keep]


# -- 3. SVMs with hard-negative mining ---------------------------------------------------------------------


def train_svm_hard_negatives(positives: np.ndarray, negative_batches: Sequence[np.ndarray], *, C: float,
                             positive_weight: float = 2.0, hard_score: float = -1.0, easy_score: float = -1.05,
                             retrain_every: int = 2000, passes: int = 1, intercept_scaling: float = 10.0,
                             tol: float = 1e-4, max_iter: int = 10000) -> tuple[np.ndarray, float, dict]:
    """One binary linear SVM with the standard hard-negative mining (R-CNN sec. 2.3, appendix B).

    - ``positives``: (P, D) features of the class's positives (its ground-truth boxes).
    - ``negative_batches``: per training image, (N_i, D) features of its negatives (IoU < 0.3 with every
      instance of the class).

    Starting from ``w = 0, b = 0`` (every negative scores 0, so the first images' negatives are all "hard"), each
    image's negatives scoring ``> hard_score`` (inside the margin) that are not cached yet are added to the cache;
    once ``retrain_every`` new ones have accumulated, and at the end of a pass, the SVM is retrained on the
    positives + cache (scikit-learn ``LinearSVC``, hinge loss, liblinear, positives weighted ``positive_weight``)
    and cached negatives scoring ``< easy_score`` are evicted. The paper stops after one pass ("mAP stops
    increasing after only a single pass over all images"); ``passes`` > 1 repeats until a pass adds nothing.

    Returns ``(w (D,), b, stats)``; ``stats``: positives, negatives seen, mined (added to the cache in total),
    cache (final size), retrains, passes.
    """
    from sklearn.svm import LinearSVC

    positives = np.asarray(positives, np.float64)
    if positives.ndim != 2 or len(positives) == 0:
        raise ValueError(f"train_svm_hard_negatives needs (P, D) positives with P >= 1, got {positives.shape}")
    d = positives.shape[1]
    w, b = np.zeros(d), 0.0
    cache: dict[tuple[int, int], np.ndarray] = {}
    stats = {"positives": len(positives), "negatives_seen": 0, "mined": 0, "cache": 0, "retrains": 0, "passes": 0}

    def retrain() -> None:
        nonlocal w, b
        if not cache:
            return
        negatives = np.stack(list(cache.values()))  # (Nc, D)
        x = np.concatenate([positives, negatives])
        y = np.concatenate([np.ones(len(positives)), -np.ones(len(negatives))])
        svm = LinearSVC(C=C, loss="hinge", class_weight={1: positive_weight, -1: 1.0}, dual=True, tol=tol,
                        max_iter=max_iter, intercept_scaling=intercept_scaling)
        svm.fit(x, y)
        w, b = svm.coef_[0].astype(np.float64), float(svm.intercept_[0])
        stats["retrains"] += 1
        for key in [k for k, v in cache.items() if float(v @ w + b) < easy_score]:
            del cache[key]

    for _ in range(passes):
        stats["passes"] += 1
        added_this_pass, since_retrain = 0, 0
        for i, negatives in enumerate(negative_batches):
            negatives = np.asarray(negatives, np.float64).reshape(-1, d)
            if stats["passes"] == 1:
                stats["negatives_seen"] += len(negatives)
            if len(negatives) == 0:
                continue
            scores = negatives @ w + b  # (N_i,)
            new = [j for j in np.nonzero(scores > hard_score)[0].tolist() if (i, j) not in cache]
            for j in new:
                cache[(i, j)] = negatives[j]
            since_retrain += len(new)
            added_this_pass += len(new)
            if since_retrain >= retrain_every:
                retrain()
                since_retrain = 0
        if since_retrain > 0 or stats["retrains"] == 0:
            retrain()
        stats["mined"] += added_this_pass
        if added_this_pass == 0:
            break
    stats["cache"] = len(cache)
    if stats["retrains"] == 0:
        raise ValueError("train_svm_hard_negatives saw no negatives: every training image's proposals overlap "
                         "the class by >= the negative IoU; use more images or proposals")
    return w, b, stats


def mean_norm_scale(features: torch.Tensor, target_norm: float) -> float:
    """The factor that makes the mean L2 norm of ``features`` (N, D) equal ``target_norm``."""
    mean = features.norm(dim=1).mean().item() if len(features) else 0.0
    return target_norm / mean if mean > 0 else 1.0


class LinearSVMs(nn.Module):
    """K one-vs-rest linear SVMs on features scaled by ``scale`` (buffers, saved in checkpoints).
    ``forward(features (N, D)) -> scores (N, K)`` (class k at column k - 1)."""

    def __init__(self, *, num_classes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_classes, dim))
        self.register_buffer("bias", torch.zeros(num_classes))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features * self.scale) @ self.weight.T + self.bias  # (N, K)


# -- 4. bounding-box regression ----------------------------------------------------------------------------


def box_regression_targets(proposals: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Appendix C, eq. 6-9: (N, 4) xyxy proposals P and their ground truth G -> (N, 4) (t_x, t_y, t_w, t_h),
    with centres and sizes ``P_w = x2 - x1``, ``P_x = x1 + P_w / 2`` (continuous corners)."""
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    px, py = proposals[:, 0] + 0.5 * pw, proposals[:, 1] + 0.5 * ph
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
    return torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=1)


def apply_box_regression(proposals: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Appendix C, eq. 1-4: ``G^_x = P_w d_x + P_x``, ``G^_w = P_w exp(d_w)`` (and y, h); (N, 4) xyxy."""
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    px, py = proposals[:, 0] + 0.5 * pw, proposals[:, 1] + 0.5 * ph
    dw, dh = deltas[:, 2].clamp(max=math.log(1000 / 16)), deltas[:, 3].clamp(max=math.log(1000 / 16))
    cx, cy, w, h = pw * deltas[:, 0] + px, ph * deltas[:, 1] + py, pw * dw.exp(), ph * dh.exp()
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=1)


class RidgeBoxRegressors(nn.Module):
    """K class-specific linear regressors (ridge, appendix C) from scaled features to (t_x, t_y, t_w, t_h):
    ``forward(features (N, D)) -> deltas (N, K, 4)``; buffers, saved in checkpoints."""

    def __init__(self, *, num_classes: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_classes, dim, 4))
        self.register_buffer("bias", torch.zeros(num_classes, 4))
        self.register_buffer("scale", torch.ones(()))

    def fit_class(self, k: int, features: torch.Tensor, targets: torch.Tensor, *, ridge_lambda: float) -> None:
        """Fit class ``k`` (0-based) on scaled features (M, D) -> targets (M, 4) with scikit-learn's Ridge."""
        from sklearn.linear_model import Ridge

        ridge = Ridge(alpha=ridge_lambda, fit_intercept=True).fit(features.double().numpy(), targets.double().numpy())
        self.weight[k] = torch.as_tensor(ridge.coef_.T, dtype=self.weight.dtype)  # (D, 4)
        self.bias[k] = torch.as_tensor(ridge.intercept_, dtype=self.bias.dtype)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nd,kdc->nkc", features * self.scale, self.weight) + self.bias  # (N, K, 4)


# -- 5. class-wise NMS -------------------------------------------------------------------------------------


def classwise_nms(boxes: torch.Tensor, scores: torch.Tensor, *, iou_threshold: float, score_threshold: float,
                  max_detections: int) -> dict[str, torch.Tensor]:
    """Greedy NMS for each class independently (sec. 2.2). ``boxes`` (N, K, 4) (class-specific after regression)
    or (N, 4), ``scores`` (N, K). Returns ``boxes`` (M, 4), ``scores`` (M,), ``labels`` (M,) in 1..K, the
    ``max_detections`` best over all classes."""
    n, k = scores.shape
    if boxes.dim() == 2:
        boxes = boxes[:, None, :].expand(n, k, 4)
    labels = torch.arange(1, k + 1).expand(n, k)  # (N, K)
    boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)  # (N K, ...)
    keep = scores > score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = torchvision.ops.batched_nms(boxes.float(), scores.float(), labels, iou_threshold)[:max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


# -- the Lightning side --------------------------------------------------------------------------------------


def image_key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class RegionDetectorLitModule(EvaluationHooks, L.LightningModule):
    """Fine-tuning, SVM / regressor fitting and evaluation of a region-feature detector (see the module docstring).

    Logged: ``train/loss`` (softmax over K + 1 on the sampled regions), ``train/fg_acc``; after each validation
    / test: ``<stage>/<evaluator name>`` (with box regression) and ``..._no_bbox``, ``<name>_n`` (images),
    ``<stage>/seconds_per_image`` (proposals excluded: features, SVMs, regression, both NMS), ``svm/*`` counts.
    """

    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None = None,
                 proposals: SelectiveSearch | None = None, num_classes: int = 20, fg_iou: float = 0.5,
                 regions_per_batch: int = 128, fg_fraction: float = 0.25, svm_negative_iou: float = 0.3,
                 svm_C: float = 0.001, svm_positive_weight: float = 2.0, svm_feature_norm: float = 20.0,
                 svm_retrain_every: int = 2000, svm_passes: int = 1, svm_max_images: int | None = None,
                 svm_features: str = "fc7", regression_features: str = "pool5", regression_iou: float = 0.6,
                 ridge_lambda: float = 1000.0, nms_iou: float = 0.3, score_threshold: float = -1.5,
                 max_detections: int = 100, feature_batch: int = 256,
                 evaluators: list[DetectionEvaluator] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler", "proposals", "evaluators"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.proposals = proposals if proposals is not None else SelectiveSearch()
        self.evaluators = list(evaluators) if evaluators is not None else [VOCMeanAP(metric="11point",
                                                                                     name="voc07_mAP")]
        self.evaluators_no_bbox = copy.deepcopy(self.evaluators)
        self.svms: LinearSVMs | None = None
        self.regressors: RidgeBoxRegressors | None = None
        self.register_buffer("fitted_at_step", torch.tensor(-1))
        self._proposal_cache: dict[str, torch.Tensor] = {}
        self._generator = torch.Generator().manual_seed(0)
        self._eval_seconds, self._eval_images = 0.0, 0

    # proposals, cached per image content (the paper computes them once, offline)
    def proposals_for(self, image: torch.Tensor) -> torch.Tensor:
        key = image_key(image)
        if key not in self._proposal_cache:
            self._proposal_cache[key] = self.proposals(image)
        return self._proposal_cache[key].to(image.device)

    def region_outputs(self, image: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network's outputs for ``boxes`` of one image, in chunks of ``feature_batch`` regions."""
        chunks = [self.model(image, boxes[i: i + self.hparams.feature_batch])
                  for i in range(0, max(len(boxes), 1), self.hparams.feature_batch)]
        return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}

    # -- stage 2: fine-tuning (sec. 2.3 "Domain-specific fine-tuning") -------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        hp = self.hparams
        per_image = max(1, hp.regions_per_batch // len(images))
        num_fg = max(1, round(per_image * hp.fg_fraction))
        boxes_labels = [sample_regions(self.proposals_for(image), t["boxes"], t["labels"], fg_iou=hp.fg_iou,
                                       num_fg=num_fg, num_bg=per_image - num_fg, generator=self._generator)
                        for image, t in zip(images, targets)]
        logits = torch.cat([self.model(image, boxes)["logits"] for image, (boxes, _) in zip(images, boxes_labels)])
        labels = torch.cat([lab for _, lab in boxes_labels])  # (M,) over the batch's images
        loss = F.cross_entropy(logits, labels)  # (M, K + 1) softmax over the sampled regions
        fg = labels > 0
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        if fg.any():
            self.log("train/fg_acc", (logits.argmax(1)[fg] == labels[fg]).float().mean(), batch_size=len(images))
        return loss

    # -- stage 3-4: SVMs and box regressors (sec. 2.3, appendix B-C) ----------------------------------------
    def _train_dataset(self):
        datamodule = self.trainer.datamodule
        datasets = getattr(datamodule, "datasets", {})
        if "train" not in datasets:
            datamodule.setup("fit")
            datasets = getattr(datamodule, "datasets", {})
        if "train" not in datasets:
            raise RuntimeError(f"{type(self).__name__} fits its SVMs on the training images but "
                               f"{type(datamodule).__name__} has no datasets['train'] after setup('fit')")
        return datasets["train"]

    @torch.no_grad()
    def fit_region_classifiers(self) -> dict[str, float]:
        """Extract the training images' region features (eval mode) and fit the SVMs and box regressors."""
        hp = self.hparams
        dataset = self._train_dataset()
        n_images = len(dataset) if hp.svm_max_images is None else min(len(dataset), hp.svm_max_images)
        was_training = self.model.training
        self.model.eval()
        svm_feats, reg_feats, gts = [], [], []  # per image: (G + N, D7), (G + N, D5), (boxes, labels, iou, idx)
        for i in range(n_images):
            image, target = dataset[i]
            image = image.to(self.device)
            gt_boxes, gt_labels = target["boxes"].to(self.device), target["labels"].to(self.device)
            boxes = torch.cat([gt_boxes, self.proposals_for(image)])  # ground truth first (the SVM positives)
            out = self.region_outputs(image, boxes)
            svm_feats.append(out[hp.svm_features].float().cpu())
            reg_feats.append(out[hp.regression_features].float().cpu())
            gts.append((boxes.cpu(), gt_boxes.cpu(), gt_labels.cpu()))
        self.model.train(was_training)
        k, d7, d5 = hp.num_classes, svm_feats[0].shape[1], reg_feats[0].shape[1]
        self.svms = LinearSVMs(num_classes=k, dim=d7).to(self.device)
        self.regressors = RidgeBoxRegressors(num_classes=k, dim=d5).to(self.device)
        self.svms.scale.fill_(mean_norm_scale(torch.cat(svm_feats), hp.svm_feature_norm))
        self.regressors.scale.fill_(mean_norm_scale(torch.cat(reg_feats), hp.svm_feature_norm))
        s7, s5 = float(self.svms.scale), float(self.regressors.scale)
        summary = {"svm/images": float(n_images)}
        mined = cache = 0
        for c in range(1, k + 1):
            positives, negative_batches, reg_x, reg_t = [], [], [], []
            for f7, f5, (boxes, gt_boxes, gt_labels) in zip(svm_feats, reg_feats, gts):
                g = len(gt_boxes)
                positives.append(f7[:g][gt_labels == c])
                mine = gt_boxes[gt_labels == c]
                iou = (torchvision.ops.box_iou(boxes, mine).max(1).values if len(mine)
                       else boxes.new_zeros(len(boxes)))
                neg = iou < hp.svm_negative_iou
                neg[:g] = False  # a ground-truth box is never a negative
                negative_batches.append((f7[neg] * s7).numpy())
                if len(mine):  # regression pairs: proposals whose best overlap with the class exceeds 0.6
                    best, idx = torchvision.ops.box_iou(boxes, mine).max(1)
                    sel = best > hp.regression_iou
                    reg_x.append(f5[sel] * s5)
                    reg_t.append(box_regression_targets(boxes[sel], mine[idx[sel]]))
            pos = torch.cat(positives)
            if len(pos) == 0:
                raise ValueError(f"class {c} has no ground-truth box in the {n_images} training images used for the "
                                 "SVMs; raise svm_max_images or check the data's classes")
            w, b, stats = train_svm_hard_negatives((pos * s7).numpy(), negative_batches, C=hp.svm_C,
                                                   positive_weight=hp.svm_positive_weight,
                                                   retrain_every=hp.svm_retrain_every, passes=hp.svm_passes)
            self.svms.weight[c - 1] = torch.as_tensor(w, dtype=torch.float32)
            self.svms.bias[c - 1] = b
            mined, cache = mined + stats["mined"], cache + stats["cache"]
            if reg_x:
                self.regressors.fit_class(c - 1, torch.cat(reg_x), torch.cat(reg_t), ridge_lambda=hp.ridge_lambda)
        summary.update({"svm/mined": float(mined), "svm/cache": float(cache)})
        self.fitted_at_step.fill_(self.global_step)
        return summary

    def _ensure_fitted(self) -> None:
        """Fit at the first evaluation and whenever the network has trained since the last fit. A ``test`` /
        ``validate`` from a checkpoint starts at global step 0 and keeps the checkpoint's SVMs and regressors."""
        fitted = int(self.fitted_at_step)
        if self.svms is None or fitted < 0 or (self.global_step > 0 and fitted != self.global_step):
            for name, value in self.fit_region_classifiers().items():
                self.log(name, value)

    # checkpoints: the SVM / regressor buffers are created at fitting time, so they are restored by shape
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["region_classifier_dims"] = None if self.svms is None else (
            int(self.svms.weight.shape[1]), int(self.regressors.weight.shape[1]))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        dims = checkpoint.get("region_classifier_dims")
        if dims is not None:
            self.svms = LinearSVMs(num_classes=self.hparams.num_classes, dim=dims[0])
            self.regressors = RidgeBoxRegressors(num_classes=self.hparams.num_classes, dim=dims[1])

    # -- test-time detection (sec. 2.2) ---------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One image -> (detections with box regression, without): boxes xyxy in the image's pixels, scores (the
        SVM scores), labels 1..K; one feature pass serves both."""
        hp = self.hparams
        proposals = self.proposals_for(image)
        out = self.region_outputs(image, proposals)
        scores = self.svms(out[hp.svm_features].float())  # (N, K)
        deltas = self.regressors(out[hp.regression_features].float())  # (N, K, 4)
        n, k = scores.shape
        regressed = apply_box_regression(proposals[:, None, :].expand(n, k, 4).reshape(-1, 4),
                                         deltas.reshape(-1, 4))  # (N K, 4)
        regressed = torchvision.ops.clip_boxes_to_image(regressed, tuple(image.shape[-2:])).reshape(n, k, 4)
        options = {"iou_threshold": hp.nms_iou, "score_threshold": hp.score_threshold,
                   "max_detections": hp.max_detections}
        return classwise_nms(regressed, scores, **options), classwise_nms(proposals, scores, **options)

    def _start_eval(self, stage: str) -> None:
        self._ensure_fitted()
        dataset = self.trainer.datamodule.eval_dataset(stage)
        for evaluator in [*self.evaluators, *self.evaluators_no_bbox]:
            evaluator.start(dataset, ("bbox",), stage=stage)
        self._eval_seconds, self._eval_images = 0.0, 0

    def _eval_step(self, batch, batch_idx: int = 0) -> None:
        images, targets = batch
        for image, target in zip(images, targets):
            self.proposals_for(image)  # proposals are not timed (the paper reports them separately)
            start = time.perf_counter()
            with_bbox, without = self.detect(image)
            self._eval_seconds += time.perf_counter() - start
            self._eval_images += 1
            sy, sx = target["scale"]
            scale = torch.tensor([sx, sy, sx, sy], device=image.device)
            for evaluators, det in ((self.evaluators, with_bbox), (self.evaluators_no_bbox, without)):
                det = {**det, "boxes": det["boxes"] / scale}  # back to the original image's pixels
                for evaluator in evaluators:
                    evaluator.update(target["image_id"], det)

    def _end_eval(self, stage: str) -> None:
        for suffix, evaluators in (("", self.evaluators), ("_no_bbox", self.evaluators_no_bbox)):
            for evaluator in evaluators:
                values = evaluator.finish()
                for name, value in values.items():
                    self.log(f"{stage}/{with_suffix(name, suffix)}", float(value))
                    if not name.endswith(STAT_TAILS) and f"{name}_n" not in values:
                        self.log(f"{stage}/{with_suffix(name, suffix)}_n", float(self._eval_images))
        self.log(f"{stage}/seconds_per_image", self._eval_seconds / max(1, self._eval_images))


    def configure_optimizers(self):
        return optimizer_config(self.optimizer_factory(self.model.parameters()), self.scheduler_factory)
