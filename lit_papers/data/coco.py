"""MS-COCO instances (official 2017 layout) through pycocotools, for detection and instance segmentation.

Layout under ``<root>/coco[/<subdir>]``: ``annotations/instances_{train,val}2017.json``, ``train2017/``,
``val2017/`` (the generated :mod:`lit_papers.data.shapes` set uses the same layout under
``$LIT_PAPERS_CACHE/generated/coco/shapes``).

A sample is ``(image, target)``: ``image`` float32 (3, H, W) in [0, 1] (RGB, after augmentation; the model
normalises), ``target`` a dict as torchvision's detectors take it:

* ``boxes`` float32 (N, 4) xyxy, absolute pixels of the *augmented* image, pixel-corner coordinates
  (COCO ``[x, y, w, h]`` -> ``[x, y, x + w, y + h]``);
* ``labels`` int64 (N,) contiguous ids 1..K (0 is background); ``COCODetection.cat_ids[label - 1]`` is the COCO
  ``category_id`` (non-contiguous 1..90 on COCO);
* ``masks`` uint8 (N, H, W) from polygons or RLE (pycocotools ``annToMask``);
* ``image_id`` (COCO id), ``orig_size`` (H0, W0) and ``scale`` (augmented size / original size, (sy, sx)) so that
  predictions can be mapped back to the original image for COCO evaluation.

Annotation hygiene (counted in ``COCODetection.stats`` and logged once, never a crash):
``iscrowd=1`` regions are not training targets (COCOeval treats them as "ignore" from the ground truth itself);
boxes are clipped to the image; boxes with width or height < ``min_box_size`` after clipping (degenerate or
outside the image) are dropped; training skips images left without any object; a JSON without ``info`` /
``licenses`` loads (pycocotools' ``loadRes`` needs neither). A missing image file or annotation file raises
:class:`DatasetMissingError` naming it. The datamodule prints one line per split at setup (folder, images kept,
skips by reason) and logs the counts (see :meth:`~lit_papers.data.base.ShardedDataModule.report_split`).

Images are read by the strict :func:`lit_papers.data.images.read_image` (a truncated file is an error naming it,
never a half-grey image). Before training, setup checks every image of each split against its annotation
(``verify_images``: ``header`` = size from the header and the end-of-file marker, the default; ``full`` = complete
decode; ``none``); ``lit-papers check-data --config ...`` runs the full check with a progress bar.

Download (``download=true``, official layout only, i.e. ``subdir`` unset): the official 2017 zips, md5-checked,
through :func:`lit_papers.data.download.fetch` (``$LIT_PAPERS_MIRROR`` first, atomic rename).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset

from lit_papers.data.base import ShardedDataModule
from lit_papers.data.download import DatasetError, DatasetMissingError, Remote, ensure_archive, extract
from lit_papers.data.grouping import GroupedBatchSampler
from lit_papers.data.images import ImageRef, VerifyMode, bad_images_error, read_image, verify_images
from lit_papers.data.root import data_root, family_dir, generated_dir
from lit_papers.data.samplers import ShardSampler
from lit_papers.data.shapes import GeneratedShapesMixin

log = logging.getLogger(__name__)

# The official COCO 2017 archives. md5 values as listed by PaddlePaddle/PaddleDetection
# (ppdet/utils/download.py, DATASETS["coco"]) and by several download scripts that check them with `md5sum -c`.
COCO_REMOTES = {
    "train2017": Remote("http://images.cocodataset.org/zips/train2017.zip", "train2017.zip",
                        md5="cced6f7f71b7629ddf16f17bbcfab6b2"),
    "val2017": Remote("http://images.cocodataset.org/zips/val2017.zip", "val2017.zip",
                      md5="442b8da7639aecaf257c1dceb8ba8c80"),
    "annotations": Remote("http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
                          "annotations_trainval2017.zip", md5="f4bbac642086de4f52a3fdda2de5fa2c"),
}


def load_coco(path: str | os.PathLike) -> COCO:
    """A pycocotools ``COCO`` from an instances JSON, tolerating missing ``info``/``licenses``; quiet."""
    path = Path(path)
    if not path.is_file():
        raise DatasetMissingError(f"COCO annotation file {path} not found; put the official "
                                  f"annotations_trainval2017 JSONs under {path.parent}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); re-download or regenerate it") from err
    missing = {"images", "annotations", "categories"} - set(data)
    if missing:
        raise DatasetError(f"{path} lacks {sorted(missing)}: not a COCO instances file")
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_targets(coco: COCO, image_id: int, cat_to_label: dict[int, int], *, min_box_size: float = 1.0,
                 with_masks: bool = True, stats: Counter | None = None) -> dict[str, np.ndarray]:
    """Training targets of one image (original resolution): boxes (N, 4) float32 xyxy, labels (N,) int64,
    masks (N, H, W) uint8. Crowd, degenerate and outside annotations are dropped and counted in ``stats``."""
    stats = stats if stats is not None else Counter()
    info = coco.imgs[image_id]
    h, w = int(info["height"]), int(info["width"])
    boxes, labels, masks = [], [], []
    for ann in coco.imgToAnns.get(image_id, []):
        if ann.get("iscrowd", 0):
            stats["crowd"] += 1
            continue
        x, y, bw, bh = (float(v) for v in ann["bbox"])
        box = np.array([x, y, x + bw, y + bh], dtype=np.float64)
        clipped = box.copy()
        clipped[0::2] = clipped[0::2].clip(0, w)
        clipped[1::2] = clipped[1::2].clip(0, h)
        if not np.array_equal(box, clipped):
            stats["clipped"] += 1
        if clipped[2] - clipped[0] < min_box_size or clipped[3] - clipped[1] < min_box_size:
            stats["outside" if (bw >= min_box_size and bh >= min_box_size) else "degenerate"] += 1
            continue
        if ann["category_id"] not in cat_to_label:
            stats["unknown_category"] += 1
            continue
        boxes.append(clipped)
        labels.append(cat_to_label[ann["category_id"]])
        if with_masks:
            masks.append(coco.annToMask(ann) if ann.get("segmentation") else _box_mask(clipped, h, w))
    return {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, dtype=np.int64),
            "masks": np.asarray(masks, dtype=np.uint8).reshape(-1, h, w)}


def _box_mask(box: np.ndarray, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = np.round(box).astype(int)
    mask[y0:y1, x0:x1] = 1
    return mask


def resize_transform(min_size: int, max_size: int, *, hflip: float = 0.0, extra: list | None = None) -> A.Compose:
    """Short side to ``min_size`` unless the long side would exceed ``max_size`` (Ren et al. 2015, sec. 3.3;
    He et al. 2017: 800/1333), then optional horizontal flip. Boxes, masks and labels move together; a box
    cropped away drops its mask and label (``index`` label field)."""
    steps = list(extra or []) + [A.SmallestMaxSize(max_size=min_size, p=1.0),
                                 A.LongestMaxSize(max_size=max_size, p=1.0)]
    if hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    return A.Compose(steps, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "index"],
                                                     min_area=1.0, min_visibility=0.0, clip=True))


def apply_transform(transform: A.Compose | None, image: np.ndarray, target: dict[str, np.ndarray],
                    seed: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run an albumentations pipeline on (image HWC uint8, target) keeping boxes/masks/labels aligned."""
    if transform is None:
        return image, target
    if seed is not None:
        transform.set_random_seed(seed)
    n = len(target["labels"])
    masks = target.get("masks")
    kwargs = {"image": image, "bboxes": target["boxes"], "labels": target["labels"], "index": np.arange(n)}
    if masks is not None and len(masks):
        kwargs["masks"] = list(masks)
    out = transform(**kwargs)
    keep = np.asarray(out["index"], dtype=np.int64)
    h, w = out["image"].shape[:2]
    new = {"boxes": np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4),
           "labels": np.asarray(out["labels"], dtype=np.int64).reshape(-1)}
    if masks is not None:
        new["masks"] = (np.stack(out["masks"])[keep] if len(masks) else np.zeros((0, h, w), np.uint8)).astype(np.uint8)
    return out["image"], new


class COCODetection(Dataset):
    """One COCO split. Items may be ints or ``(index, seed)`` pairs (the seed reseeds augmentation)."""

    def __init__(self, image_dir: str | os.PathLike, ann_file: str | os.PathLike, *, transform: A.Compose | None = None,
                 train: bool = False, with_masks: bool = True, min_box_size: float = 1.0,
                 max_images: int | None = None) -> None:
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.coco = load_coco(ann_file)
        self.transform = transform
        self.with_masks = with_masks
        self.min_box_size = min_box_size
        self.cat_ids = sorted(self.coco.cats)
        self.cat_to_label = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.class_names = [self.coco.cats[c]["name"] for c in self.cat_ids]
        self.stats: Counter = Counter()
        ids = sorted(self.coco.imgs)
        self.listed = len(ids)
        if train:  # training skips images without a usable object (counted)
            kept = []
            for i in ids:
                t = coco_targets(self.coco, i, self.cat_to_label, min_box_size=min_box_size, with_masks=False,
                                 stats=self.stats)
                if len(t["labels"]):
                    kept.append(i)
                else:
                    self.stats["images_without_objects"] += 1
            ids = kept
        self.ids = ids[:max_images] if max_images else ids
        if not self.ids:
            raise DatasetError(f"{ann_file}: no usable images (stats {dict(self.stats)})")
        if self.stats:
            log.info("%s: %s", ann_file, dict(self.stats))

    def __len__(self) -> int:
        return len(self.ids)

    def aspect_ratios(self) -> list[float]:
        """Width / height of every image (original size), for aspect-ratio grouping."""
        return [self.coco.imgs[i]["width"] / self.coco.imgs[i]["height"] for i in self.ids]

    def image_ref(self, image_id: int) -> ImageRef:
        info = self.coco.imgs[image_id]
        return ImageRef(self.image_dir / info["file_name"], (int(info["height"]), int(info["width"])),
                        f"listed in {self.ann_file}")

    def image_refs(self) -> list[ImageRef]:
        """Every image this split uses, with the size its annotation gives (for :func:`verify_images`)."""
        return [self.image_ref(i) for i in self.ids]

    def load_image(self, image_id: int) -> np.ndarray:
        ref = self.image_ref(image_id)
        return read_image(ref.path, expected_hw=ref.expected_hw, where=ref.where)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, (tuple, list)) else (item, None)
        image_id = self.ids[index]
        image = self.load_image(image_id)
        target = coco_targets(self.coco, image_id, self.cat_to_label, min_box_size=self.min_box_size,
                              with_masks=self.with_masks)
        h0, w0 = image.shape[:2]
        image, target = apply_transform(self.transform, image, target, seed)
        h, w = image.shape[:2]
        out = {"boxes": torch.from_numpy(target["boxes"]), "labels": torch.from_numpy(target["labels"]),
               "image_id": int(image_id), "orig_size": (h0, w0), "scale": (h / h0, w / w0)}
        if self.with_masks:
            out["masks"] = torch.from_numpy(target["masks"])
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0), out  # (3, H, W)


def collate_detection(batch):
    """List of (image, target) -> (list of images, list of targets): sizes differ, the model pads."""
    images, targets = zip(*batch)
    return list(images), list(targets)


class COCODataModule(ShardedDataModule):
    """COCO-format instances data (real COCO or the generated shapes), with short-side resizing, flips and
    optional aspect-ratio grouping for training; unpadded sharded evaluation.

    ``subdir``: a folder under ``<root>/coco`` holding the same layout (e.g. ``shapes``).
    ``min_size``/``max_size``: short/long side limits (800/1333 in the Mask R-CNN paper, sec. 3.1).
    ``max_train_images`` / ``max_eval_images``: subsets (tests, overfitting).
    ``download``: fetch the official 2017 archives that are missing (only without ``subdir``).
    ``verify_images``: the check of every image at setup (``header`` | ``full`` | ``none``, see
    :mod:`lit_papers.data.images`).
    """

    def __init__(self, *, root: str | None = None, subdir: str | None = None, train_split: str = "train2017",
                 val_split: str = "val2017", test_split: str = "val2017", min_size: int = 800,
                 max_size: int = 1333, hflip: float = 0.5, with_masks: bool = True, aspect_ratio_grouping: bool = True,
                 max_train_images: int | None = None, max_eval_images: int | None = None, batch_size: int = 2,
                 eval_batch_size: int | None = None, num_workers: int = 2, seed: int = 0, download: bool = True,
                 verify_images: VerifyMode = "header") -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        self.folder = family_dir("coco", root) / (subdir or "")
        self.verify_images = verify_images
        self.datasets: dict[str, COCODetection] = {}

    # -- where the data comes from ----------------------------------------------------------------------------
    def source(self) -> str:
        """Which settings chose :attr:`folder`, as config keys (for the setup line and the missing-data error)."""
        hp = self.hparams
        root = (f"data.init_args.root = {hp.root!r}" if hp.root is not None
                else f"data root {data_root()} ($LIT_PAPERS_DATA, data.init_args.root unset)")
        return f"{root}, data.init_args.subdir = {hp.subdir!r}"

    def _missing_hint(self) -> str:
        hp = self.hparams
        hint = f"{type(self).__name__} reads {self.folder}, set by {self.source()}."
        if hp.subdir:
            hint += (f" If subdir {hp.subdir!r} was carried over from a config written for another DataModule "
                     "(switching the class with --data keeps the init_args the new class also accepts), reset it "
                     "with --data.init_args.subdir null.")
        elif not hp.download:
            hint += " Set data.init_args.download true to fetch the official archives."
        return hint

    def prepare_data(self) -> None:
        """Fetch and extract the official archives the configured splits need (official layout only)."""
        hp = self.hparams
        if not hp.download or hp.subdir:
            return
        splits = sorted({hp.train_split, hp.val_split, hp.test_split})
        ann = self.folder / "annotations"
        if any(s in COCO_REMOTES and not (ann / f"instances_{s}.json").is_file() for s in splits):
            archive = ensure_archive(COCO_REMOTES["annotations"], self.folder, family="coco",
                                     expected=["annotations/instances_<split>.json"])
            extract(archive, self.folder, member_root="annotations", merge=True)
        for s in splits:
            if s in COCO_REMOTES and not (self.folder / s).is_dir():
                archive = ensure_archive(COCO_REMOTES[s], self.folder, family="coco", expected=[f"{s}/"])
                extract(archive, self.folder, member_root=s)

    # -- splits -------------------------------------------------------------------------------------------------
    def split(self, name: str, *, train: bool) -> COCODetection:
        hp = self.hparams
        transform = resize_transform(hp.min_size, hp.max_size, hflip=hp.hflip if train else 0.0)
        try:
            return COCODetection(self.folder / name, self.folder / "annotations" / f"instances_{name}.json",
                                 transform=transform, train=train, with_masks=hp.with_masks,
                                 max_images=hp.max_train_images if train else hp.max_eval_images)
        except DatasetMissingError as err:
            raise DatasetMissingError(f"{err}\n{self._missing_hint()}") from err

    def image_refs(self) -> dict[str, list[ImageRef]]:
        """{split: every image it uses} of the splits set up so far (for ``lit-papers check-data``)."""
        return {key: ds.image_refs() for key, ds in self.datasets.items()}

    def _add(self, key: str, name: str, *, train: bool) -> None:
        ds = self.split(name, train=train)
        refs = ds.image_refs()
        bad = verify_images(refs, self.verify_images)
        if bad:
            raise bad_images_error(bad, checked=len(refs), what=f"{ds.ann_file} ({self.source()})",
                                   mode=self.verify_images)
        self.datasets[key] = ds
        stats = ds.stats
        skipped_images = {k: v for k, v in stats.items() if k == "images_without_objects"}
        dropped = {k: v for k, v in stats.items() if k not in ("images_without_objects", "clipped")}
        line = (f"{name} from {self.folder} ({self.source()}): {len(ds)} of {ds.listed} images used"
                + (" (capped by max_*_images)" if len(ds) + sum(skipped_images.values()) < ds.listed else "")
                + f"; skipped images: {_fmt(skipped_images)}; dropped annotations: {_fmt(dropped)}"
                + f"; clipped boxes: {stats.get('clipped', 0)}; images checked ({self.verify_images}): "
                + (f"{len(refs)}, all good" if self.verify_images != "none" else "none"))
        counts = {"images": len(ds), "listed": ds.listed, "checked": len(refs) if self.verify_images != "none" else 0,
                  **{f"skipped_{k}": v for k, v in skipped_images.items()},
                  **{f"dropped_{k}": v for k, v in dropped.items()}, "clipped": stats.get("clipped", 0)}
        self.report_split(key, line, counts)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in (None, "fit") and "train" not in self.datasets:
            self._add("train", hp.train_split, train=True)
        if stage in (None, "fit", "validate") and "val" not in self.datasets:
            self._add("val", hp.val_split, train=False)
        if stage in (None, "test", "predict") and "test" not in self.datasets:
            self._add("test", hp.test_split, train=False)

    def eval_dataset(self, stage: str) -> COCODetection:
        """The dataset evaluated in ``stage`` ('val' or 'test'): its ``coco`` is the evaluation ground truth."""
        return self.datasets["val" if stage == "val" else "test"]

    @property
    def class_names(self) -> list[str]:
        return next(iter(self.datasets.values())).class_names

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        if not self.hparams.aspect_ratio_grouping:
            return self.train_loader(dataset, collate_fn=collate_detection)
        rank, world = self.world()
        sampler = ShardSampler(len(dataset), shuffle=True, seed=self.seed, rank=rank, world_size=world)
        groups = [int(r >= 1.0) for r in dataset.aspect_ratios()]  # landscape vs portrait (Detectron)
        batch_sampler = GroupedBatchSampler(sampler, groups, self.batch_size)
        if self._resume is not None:
            batch_sampler.skip_first(*self._resume)
            self._resume = None
        self._train_sampler = sampler
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=self.num_workers,
                          collate_fn=collate_detection, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets["val"], batch_size=self.hparams.eval_batch_size,
                                collate_fn=collate_detection)

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets["test"], batch_size=self.hparams.eval_batch_size,
                                collate_fn=collate_detection)


def _fmt(counts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"


class ShapesDataModule(GeneratedShapesMixin, COCODataModule):
    """:class:`COCODataModule` over the generated shapes set, written once under
    ``$LIT_PAPERS_CACHE/generated/coco/<subdir>`` (``~/.cache/lit_papers/...``; ``<root>/coco/<subdir>`` when
    ``root`` is given), never into ``$LIT_PAPERS_DATA``; change ``subdir`` when changing the generator's options.
    Images are used at their generated size unless ``min_size``/``max_size`` say otherwise."""

    def __init__(self, *, num_train: int = 1000, num_val: int = 100, image_size: int = 128, max_objects: int = 4,
                 generator_seed: int = 0, root: str | None = None, subdir: str = "shapes", min_size: int | None = None,
                 max_size: int | None = None, **kwargs) -> None:
        kwargs.setdefault("download", False)
        super().__init__(root=root, subdir=subdir, min_size=min_size or image_size, max_size=max_size or image_size,
                         **kwargs)
        self.save_hyperparameters()
        self.hparams.min_size, self.hparams.max_size = min_size or image_size, max_size or image_size
        self.folder = generated_dir("coco", root) / subdir

