"""Training patches for DeepMask / SharpMask (Pinheiro et al. 2015, sec. 3.1 and "Implementation details"), sampled
from COCO-format instance annotations read by :mod:`lit_papers.data.coco` (real COCO or the generated shapes set).

A training example is a triplet ``(x_k, m_k, y_k)``: a square RGB patch, the binary mask of the object centred in
it, and a label ``y_k`` in {+1, -1}. The paper's rules, in *patch pixels* (all configurable, :class:`PatchGeometry`):

* canonical positive: an object exactly centred in the patch whose largest side is ``object_size`` (128 pixels
  in a 224 patch);
* positive (``y = +1``): a canonical positive jittered by a shift of at most ``pos_shift`` (+-16 px) in x and y and
  a scale of at most ``2^(+-pos_scale_exp)`` (2^(+-1/4)), and the object fully contained in the patch; the mask
  target is that object's mask (1 on it, 0 elsewhere, other objects included);
* negative (``y = -1``): a patch at least ``neg_shift`` (+-32 px) or ``2^(+-neg_scale_exp)`` (2^(+-1)) in scale
  away from *every* object's canonical positive;
* anything in between is neither and is never used (:func:`patch_label` returns 0).

Geometry of a patch: centre ``(cx, cy)`` in image pixels and scale ``s`` (patch pixels per image pixel); the patch
covers the image square of side ``size / s`` around the centre, pixel-centre convention (``u + 0.5 = s (x + 0.5 -
x0)``), parts outside the image filled with ``fill`` (the normalisation mean, so it is 0 after normalising, as at
inference). Positives are also flipped horizontally with probability 1/2 (the paper's third jitter).

Sampling (:class:`PatchDataset`): item ``i`` is drawn from ``numpy.random.default_rng([seed, epoch, i])`` (or
``[seed, i, s]`` for the training sampler's ``(i, s)`` pairs, ``s`` its per-epoch seed), positive with
probability ``positive_fraction`` (the paper samples both with equal probability). A positive picks an object uniformly among the eligible ones (not crowd; its canonical scale
within ``scale_range`` widened by the positive jitter), a negative a random centre in the image and a log-uniform
scale in ``scale_range`` widened by ``2^neg_scale_exp``, kept only if :func:`patch_label` says -1 (up to
``negative_tries`` draws; an image where none is found is counted in ``stats['negative_not_found']`` and the item
falls back to a positive). Returns ``patch`` float32 (3, size, size) in [0, 1], ``mask`` float32 (mask_size,
mask_size) in {0, 1} (zeros for negatives) and ``label`` float32 1.0 / 0.0 (``y = +1 / -1``).

Evaluation uses whole images (:class:`~lit_papers.data.coco.COCODetection`, no resizing) and the split's
``COCO`` object as the proposal ground truth.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lit_papers.data.base import ShardedDataModule
from lit_papers.data.coco import COCODetection, coco_targets, collate_detection
from lit_papers.data.download import DatasetError, DatasetMissingError
from lit_papers.data.images import bad_images_error, verify_images
from lit_papers.data.root import family_dir, generated_dir
from lit_papers.data.shapes import GeneratedShapesMixin

FILL = (0.485, 0.456, 0.406)  # ImageNet mean: the model's normalisation maps padding to 0


@dataclass(frozen=True)
class PatchGeometry:
    """The paper's patch rules in patch pixels (sec. 3.1 "Implementation details": 224 patch, canonical object 128,
    positives +-16 px and 2^(+-1/4), negatives beyond +-32 px or 2^(+-1))."""

    size: int = 224
    object_size: float = 128.0
    pos_shift: float = 16.0
    pos_scale_exp: float = 0.25
    neg_shift: float = 32.0
    neg_scale_exp: float = 1.0

    def __post_init__(self) -> None:
        if not (0 <= self.pos_shift < self.neg_shift and 0 <= self.pos_scale_exp < self.neg_scale_exp):
            raise ValueError(f"patch geometry {self}: positives must be strictly inside the negatives' bounds "
                             "(pos_shift < neg_shift, pos_scale_exp < neg_scale_exp)")


def canonical_scale(box: np.ndarray, geometry: PatchGeometry) -> float:
    """Scale (patch px per image px) at which the object ``box`` (xyxy) has its largest side = object_size."""
    return geometry.object_size / max(float(box[2] - box[0]), float(box[3] - box[1]), 1e-6)


def patch_label(boxes: np.ndarray, centre: tuple[float, float], scale: float, geometry: PatchGeometry
                ) -> tuple[int, int]:
    """Label of the patch centred at ``centre`` (image px) with ``scale`` among objects ``boxes`` (N, 4) xyxy image
    px: ``(+1, j)`` positive for object ``j`` (the closest centre if several), ``(-1, -1)`` negative (far from every
    object), ``(0, -1)`` neither."""
    g = geometry
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        return -1, -1
    cx, cy = centre
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2)
    shift = np.abs(centres - np.array([cx, cy])) * scale  # (N, 2) patch px
    d = shift.max(axis=1)  # (N,) Chebyshev: "+-16 px" in x and in y
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * scale  # (N,) patch px
    log_ratio = np.abs(np.log2(np.maximum(sides, 1e-9) / g.object_size))  # (N,)
    half = g.size / 2 / scale  # image px from the centre to the patch edge
    contained = ((boxes[:, 0] >= cx - half) & (boxes[:, 2] <= cx + half)
                 & (boxes[:, 1] >= cy - half) & (boxes[:, 3] <= cy + half))
    eps = 1e-9
    positive = (d <= g.pos_shift + eps) & (log_ratio <= g.pos_scale_exp + eps) & contained
    if positive.any():
        candidates = np.flatnonzero(positive)
        return 1, int(candidates[np.argmin(d[candidates])])
    far = (d >= g.neg_shift - eps) | (log_ratio >= g.neg_scale_exp - eps)
    return (-1, -1) if far.all() else (0, -1)


def crop_patch(image: np.ndarray, centre: tuple[float, float], scale: float, out_size: int,
               patch_size: int | None = None, *, interpolation: int = cv2.INTER_LINEAR, fill=0.0) -> np.ndarray:
    """The square of ``patch_size / scale`` image px around ``centre`` resampled to ``out_size`` px (HWC or HW
    array, any dtype cv2 takes); pixel-centre convention, outside filled with ``fill``."""
    patch_size = patch_size or out_size
    s = scale * out_size / patch_size  # output px per image px
    x0 = centre[0] - patch_size / scale / 2
    y0 = centre[1] - patch_size / scale / 2
    matrix = np.array([[s, 0, s * (0.5 - x0) - 0.5], [0, s, s * (0.5 - y0) - 0.5]], dtype=np.float64)
    border = fill if np.isscalar(fill) else tuple(float(v) for v in fill)
    return cv2.warpAffine(image, matrix, (out_size, out_size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=border)


class PatchDataset(Dataset):
    """``length`` random DeepMask training triplets from the images of ``source`` (see the module docstring)."""

    def __init__(self, source: COCODetection, *, geometry: PatchGeometry, mask_size: int = 56, length: int = 32000,
                 positive_fraction: float = 0.5, scale_range: tuple[float, float] = (0.25, 2.0), hflip: float = 0.5,
                 negative_tries: int = 20, seed: int = 0, cache: bool = True) -> None:
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.source, self.g, self.mask_size, self.length = source, geometry, mask_size, length
        self.positive_fraction, self.hflip, self.negative_tries, self.seed = positive_fraction, hflip, negative_tries, seed
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.epoch = 0
        self.stats: Counter = Counter()
        self._cache: dict[int, tuple[np.ndarray, dict]] | None = {} if cache else None
        lo = self.scale_range[0] * 2 ** -geometry.pos_scale_exp
        hi = self.scale_range[1] * 2 ** geometry.pos_scale_exp
        self.objects: list[tuple[int, int]] = []  # (image index, object index) of every eligible positive
        for i, image_id in enumerate(source.ids):
            target = coco_targets(source.coco, image_id, source.cat_to_label, with_masks=False, stats=self.stats)
            for j, box in enumerate(target["boxes"]):
                if lo <= canonical_scale(box, geometry) <= hi:
                    self.objects.append((i, j))
                else:
                    self.stats["object_outside_scale_range"] += 1
        if not self.objects and positive_fraction > 0:
            raise DatasetError(f"{source.ann_file}: no object fits the scale range {self.scale_range} at "
                               f"object_size {geometry.object_size} (stats {dict(self.stats)}); widen scale_range")

    def __len__(self) -> int:
        return self.length

    def _load(self, index: int) -> tuple[np.ndarray, dict]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image_id = self.source.ids[index]
        item = (self.source.load_image(image_id),
                coco_targets(self.source.coco, image_id, self.source.cat_to_label, with_masks=True))
        if self._cache is not None:
            self._cache[index] = item
        return item

    def _negative(self, rng: np.random.Generator, boxes: np.ndarray, hw: tuple[int, int]):
        lo = math.log2(self.scale_range[0]) - self.g.neg_scale_exp
        hi = math.log2(self.scale_range[1]) + self.g.neg_scale_exp
        for _ in range(self.negative_tries):
            scale = 2 ** rng.uniform(lo, hi)
            centre = (rng.uniform(0, hw[1]), rng.uniform(0, hw[0]))
            if patch_label(boxes, centre, scale, self.g)[0] == -1:
                return centre, scale
        return None

    def __getitem__(self, item):
        # the training sampler yields (index, per-epoch seed) pairs; a plain index uses (seed, epoch, index)
        key = [int(v) for v in item] if isinstance(item, (tuple, list)) else [self.epoch, int(item)]
        rng = np.random.default_rng([self.seed, *key])
        positive = bool(self.objects) and rng.random() < self.positive_fraction
        if not positive:
            index = int(rng.integers(len(self.source.ids)))
            image, target = self._load(index)
            found = self._negative(rng, target["boxes"], image.shape[:2])
            if found is None:
                self.stats["negative_not_found"] += 1
                positive = bool(self.objects)
        if positive:
            index, j = self.objects[int(rng.integers(len(self.objects)))]
            image, target = self._load(index)
            box = target["boxes"][j]
            scale = canonical_scale(box, self.g) * 2 ** rng.uniform(-self.g.pos_scale_exp, self.g.pos_scale_exp)
            dx, dy = rng.uniform(-self.g.pos_shift, self.g.pos_shift, size=2) / scale  # image px
            centre = ((box[0] + box[2]) / 2 + dx, (box[1] + box[3]) / 2 + dy)
            label, j = patch_label(target["boxes"], centre, scale, self.g)
            if label != 1:  # the jittered window is positive for its object by construction
                raise AssertionError(f"sampled positive has label {label}")
            mask = crop_patch(target["masks"][j].astype(np.float32), centre, scale, self.mask_size, self.g.size)
            mask = (mask >= 0.5).astype(np.float32)
        else:
            centre, scale = found if found is not None else ((0.0, 0.0), 1.0)
            mask = np.zeros((self.mask_size, self.mask_size), np.float32)
        patch = crop_patch(image, centre, scale, self.g.size, fill=tuple(255 * v for v in FILL))  # (P, P, 3) uint8
        if rng.random() < self.hflip:
            patch, mask = patch[:, ::-1], mask[:, ::-1]
        patch_t = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1).float().div_(255.0)  # (3, P, P)
        return patch_t, torch.from_numpy(np.ascontiguousarray(mask)), torch.tensor(float(positive))


class COCOPatchesDataModule(ShardedDataModule):
    """DeepMask training patches from a COCO-format split (``<root>/coco[/<subdir>]``), whole images for the
    proposal evaluation (val / test). Patch rules: :class:`PatchGeometry` (``patch_size``, ``object_size``,
    ``pos_shift``, ``pos_scale_exp``, ``neg_shift``, ``neg_scale_exp``); ``mask_size``: resolution of the mask
    target (the paper's 56x56 output); ``samples_per_epoch``: patches per epoch (re-drawn every epoch);
    ``scale_range``: the scales at which objects are sampled (the inference pyramid's range)."""

    def __init__(self, *, root: str | None = None, subdir: str | None = None, train_split: str = "train2017",
                 val_split: str = "val2017", test_split: str = "val2017", patch_size: int = 224,
                 object_size: float = 128.0, pos_shift: float = 16.0, pos_scale_exp: float = 0.25,
                 neg_shift: float = 32.0, neg_scale_exp: float = 1.0, mask_size: int = 56,
                 samples_per_epoch: int = 32000, positive_fraction: float = 0.5,
                 scale_range: tuple[float, float] = (0.25, 2.0), hflip: float = 0.5, max_train_images: int | None = None,
                 max_eval_images: int | None = None, batch_size: int = 32, eval_batch_size: int = 1,
                 num_workers: int = 2, seed: int = 0, cache_images: bool = True, verify: str = "header") -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        self.geometry = PatchGeometry(size=patch_size, object_size=object_size, pos_shift=pos_shift,
                                      pos_scale_exp=pos_scale_exp, neg_shift=neg_shift, neg_scale_exp=neg_scale_exp)
        self.folder = family_dir("coco", root) / (subdir or "")
        self.datasets: dict[str, Dataset] = {}

    def source(self) -> str:
        hp = self.hparams
        return f"data.init_args.root = {hp.root!r}, data.init_args.subdir = {hp.subdir!r}"

    def _split(self, name: str, *, train: bool, max_images: int | None) -> COCODetection:
        try:
            ds = COCODetection(self.folder / name, Path(self.folder) / "annotations" / f"instances_{name}.json",
                               transform=None, train=train, with_masks=train, max_images=max_images)
        except DatasetMissingError as err:
            raise DatasetMissingError(f"{err}\n{type(self).__name__} reads {self.folder} ({self.source()})") from err
        refs = ds.image_refs()
        bad = verify_images(refs, self.hparams.verify)
        if bad:
            raise bad_images_error(bad, checked=len(refs), what=f"{ds.ann_file} ({self.source()})",
                                   mode=self.hparams.verify)
        return ds

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in (None, "fit") and "train" not in self.datasets:
            images = self._split(hp.train_split, train=True, max_images=hp.max_train_images)
            self.datasets["train"] = PatchDataset(
                images, geometry=self.geometry, mask_size=hp.mask_size, length=hp.samples_per_epoch,
                positive_fraction=hp.positive_fraction, scale_range=tuple(hp.scale_range), hflip=hp.hflip,
                seed=self.data_seed(), cache=hp.cache_images)
            ds = self.datasets["train"]
            self.report_split("train", f"{hp.train_split} from {self.folder}: {len(images)} images, "
                              f"{len(ds.objects)} eligible objects, {len(ds)} patches per epoch; skipped "
                              f"{dict(ds.stats) or 'none'}", {"images": len(images), "objects": len(ds.objects)})
        for key, name in (("val", hp.val_split), ("test", hp.test_split)):
            if stage in (None, "fit", "validate") if key == "val" else stage in (None, "test", "predict"):
                if key not in self.datasets:
                    self.datasets[key] = self._split(name, train=False, max_images=hp.max_eval_images)
                    self.report_split(key, f"{name} from {self.folder}: {len(self.datasets[key])} whole images",
                                      {"images": len(self.datasets[key])})

    def eval_dataset(self, stage: str) -> COCODetection:
        """The whole-image split evaluated in ``stage``; its ``coco`` is the proposal ground truth."""
        return self.datasets["val" if stage == "val" else "test"]

    def train_dataloader(self) -> DataLoader:
        ds = self.datasets["train"]
        ds.epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return self.train_loader(ds)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets["val"], batch_size=self.hparams.eval_batch_size,
                                collate_fn=collate_detection)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets["test"], batch_size=self.hparams.eval_batch_size,
                                collate_fn=collate_detection)


class ShapesPatchesDataModule(GeneratedShapesMixin, COCOPatchesDataModule):
    """:class:`COCOPatchesDataModule` on the generated COCO-format shapes set (:mod:`lit_papers.data.shapes`),
    written once under ``$LIT_PAPERS_CACHE/generated/coco/<subdir>`` (never into ``$LIT_PAPERS_DATA``)."""

    def __init__(self, *, num_train: int = 1000, num_val: int = 100, image_size: int = 96, max_objects: int = 4,
                 generator_seed: int = 0, root: str | None = None, subdir: str = "shapes-96", **kwargs) -> None:
        super().__init__(root=root, subdir=subdir, **kwargs)
        self.save_hyperparameters()
        self.folder = generated_dir("coco", root) / subdir

