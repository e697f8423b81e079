"""PASCAL VOC 2007/2012 detection (official devkit layout) for Faster/Fast R-CNN.

``<root>/voc/VOCdevkit/VOC<year>/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/<split>.txt}``;
``splits`` like ``["2007_trainval", "2012_trainval"]`` (VOC07+12) are concatenated.

Boxes: the XML's 1-based inclusive pixel coordinates -> 0-based pixel-corner xyxy ``(xmin - 1, ymin - 1, xmax,
ymax)`` (continuous, the same convention as COCO here); coordinates parsed with ``int(float(s))`` (VOC2012 has
a few float values). Labels 1..20 in the alphabetical VOC order. ``difficult`` objects are excluded from
training targets (py-faster-rcnn's default) and are "ignore" in evaluation: the dataset exposes its ground
truth as an in-memory COCO object (``.coco``, difficult -> ``iscrowd=1``) so the COCO evaluator runs unchanged,
and as ``voc_ground_truth()`` for the VOC metric (:mod:`lit_papers.metrics.voc_eval`, 07 11-point / area).

An annotation missing a field (``<size>``, an object's ``<name>`` or ``<bndbox>``, a coordinate) is an error naming
the file, the object (index and class) and the field. Images are read by the strict
:func:`lit_papers.data.images.read_image` and checked at setup against the XML's ``<size>`` (``verify_images``, as
for COCO). ``download=true`` fetches the official VOC2007 trainval/test and VOC2012 trainval tars (md5-checked) for
the splits whose listing ``ImageSets/Main/<split>.txt`` is missing.

Segmentation (``task: segmentation``, :class:`VOCSegmentation`): the ids of ``ImageSets/Segmentation/<split>.txt``,
``JPEGImages/<id>.jpg`` and ``SegmentationClass/<id>.png`` (palette PNG, mode ``P``: the pixel values are class
indices, 0 = background, 1..20 in :data:`VOC_CLASSES` order, 255 = "void", the 5-pixel band VOC draws around
every object outline and unlabelled regions; the colours are :func:`voc_colormap`). A sample is the image
(3, H, W) float in [0, 1] and the (H, W) int64 class mask, 255 = ignore; batches are padded to the largest image
of the batch (images with 0, masks with 255, so padding is ignored by the loss and the metrics).
``SegmentationObject/<id>.png`` numbers the instances 1..N in the order of the XML's ``<object>`` elements.
A mask that is not mode ``P``/``L`` (an RGB-rendered mask), has another size than its image, or holds a value that
is neither a class index nor 255 is an error naming the file.

``classes``: the object class names (default the 20 VOC classes); another VOC-format set (the generated
:mod:`lit_papers.data.voc_shapes`) names its own.
"""

from __future__ import annotations

import contextlib
import io
import os
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Literal

import albumentations as A
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset

from lit_papers.data.base import ShardedDataModule
from lit_papers.data.coco import apply_transform, collate_detection, resize_transform
from lit_papers.data.download import DatasetError, DatasetMissingError, Remote, ensure_archive, extract
from lit_papers.data.images import (
    ImageRef,
    VerifyMode,
    bad_images_error,
    check_structure,
    image_size,
    read_image,
    verify_images,
)
from lit_papers.data.root import data_root, family_dir
from lit_papers.data.ssd_augment import SSDAugment

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")

IGNORE_INDEX = 255  # VOC's "void" label: object borders and unlabelled pixels, ignored by the loss and metrics


def voc_colormap(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 RGB palette of the VOC devkit (``VOClabelcolormap.m``): the bits of index ``i`` are dealt
    out three at a time, bit 0 -> red, bit 1 -> green, bit 2 -> blue, from the most significant bit (7) down.
    0 = black background, 1 = (128, 0, 0) aeroplane, 15 = (192, 128, 128) person, 255 = (224, 224, 192) void."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << (7 - j)
            c >>= 3
        cmap[i] = rgb
    return cmap


def read_label_png(path: Path, *, expected_hw: tuple[int, int], num_values: int, where: str = "") -> np.ndarray:
    """A VOC label PNG (mode ``P`` or ``L``) -> (H, W) uint8 of indices; only ``0..num_values-1`` and 255 allowed.
    Raises :class:`DatasetError` naming the file on truncation, wrong mode, wrong size or an unknown value."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DatasetMissingError(f"label image {path} {where} not found")
    check_structure(path.read_bytes(), path)
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise DatasetError(f"label image {path} is mode {img.mode!r}; VOC label PNGs are palette ('P') images "
                               "whose values are class indices (save the index array, not its colours)")
        labels = np.array(img)
    if labels.shape != tuple(expected_hw):
        raise DatasetError(f"label image {path} is {labels.shape[1]}x{labels.shape[0]} but {where or 'its image'} "
                           f"is {expected_hw[1]}x{expected_hw[0]}")
    bad = np.setdiff1d(np.unique(labels), [*range(num_values), IGNORE_INDEX])
    if bad.size:
        raise DatasetError(f"label image {path} holds values {bad.tolist()[:10]}, expected 0..{num_values - 1} or "
                           f"{IGNORE_INDEX}; wrong class list (data.init_args.classes) or a corrupt mask")
    return labels


# The official archives (host.robots.ox.ac.uk). md5 values as listed by pytorch/vision
# (torchvision/datasets/voc.py, DATASET_YEAR_DICT: VOC2007 and VOC2012 trainval, "2007-test") and by
# PaddlePaddle/PaddleDetection (ppdet/utils/download.py, DATASETS["voc"]: the same three).
VOC_REMOTES = {
    ("2007", "trainval"): Remote("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
                                "VOCtrainval_06-Nov-2007.tar", md5="c52e279531787c972589f7e41ab4ae64"),
    ("2007", "test"): Remote("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
                            "VOCtest_06-Nov-2007.tar", md5="b6e924de25625d8de591ea690078ad9f"),
    ("2012", "trainval"): Remote("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                                "VOCtrainval_11-May-2012.tar", md5="6cd6e144f989b92b3379bac3b3de84fd"),
}


def voc_remote(split: str) -> Remote | None:
    """The official archive holding ``<year>_<name>`` (train, val and trainval come in the trainval tar)."""
    year, name = split.split("_", 1)
    return VOC_REMOTES.get((year, "trainval" if name in ("train", "val", "trainval") else name))


def _malformed(path: Path, what: str) -> DatasetError:
    return DatasetError(f"{path}: malformed VOC annotation: {what}; re-download the VOC devkit or fix the file")


def _int_field(node: ET.Element, key: str, path: Path, owner: str) -> int:
    text = node.findtext(key)
    if text is None or not text.strip():
        raise _malformed(path, f"{owner} has no <{key}>")
    try:
        return int(float(text))
    except ValueError:
        raise _malformed(path, f"{owner} <{key}> is {text.strip()!r}, not a number") from None


def parse_voc_xml(path: str | os.PathLike) -> dict:
    """One annotation file -> {width, height, objects: [{name, box (xyxy 0-based corners), difficult}]}.

    A missing or non-numeric field raises :class:`DatasetError` naming the file, the object (index, 0-based, and
    class name) and the field.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise _malformed(path, f"not well-formed XML ({err})") from err
    size = root.find("size")
    if size is None:
        raise _malformed(path, "no <size> element")
    width, height = _int_field(size, "width", path, "<size>"), _int_field(size, "height", path, "<size>")
    objects = []
    for index, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise _malformed(path, f"object {index} has no <name>")
        owner = f"object {index} ({name!r})"
        bb = obj.find("bndbox")
        if bb is None:
            raise _malformed(path, f"{owner} has no <bndbox>")
        x0, y0, x1, y1 = (_int_field(bb, k, path, f"{owner} <bndbox>") for k in ("xmin", "ymin", "xmax", "ymax"))
        try:
            difficult = int(obj.findtext("difficult") or 0) == 1
        except ValueError:
            raise _malformed(path, f"{owner} <difficult> is {obj.findtext('difficult')!r}, not 0 or 1") from None
        objects.append({"name": name, "box": [x0 - 1.0, y0 - 1.0, float(x1), float(y1)], "difficult": difficult})
    return {"width": width, "height": height, "objects": objects}


class VOCDetection(Dataset):
    def __init__(self, devkit: str | os.PathLike, splits: list[str], *, transform=None, train: bool = False,
                 classes: tuple[str, ...] = VOC_CLASSES) -> None:
        self.devkit = Path(devkit)
        self.transform = transform
        self.class_names = list(classes)
        self._label = {name: i + 1 for i, name in enumerate(classes)}
        self.cat_ids = list(range(1, len(classes) + 1))
        self.stats: Counter = Counter()
        self.listed = 0
        self.items: list[tuple[str, Path, dict]] = []  # (image id "2007_000001", jpeg path, parsed xml)
        self._xml: list[Path] = []
        for split in splits:
            year, name = split.split("_", 1)
            base = self.devkit / f"VOC{year}"
            listing = base / "ImageSets" / "Main" / f"{name}.txt"
            if not listing.is_file():
                raise DatasetMissingError(f"{listing} not found; put VOCdevkit/VOC{year} under {self.devkit}")
            for line in listing.read_text().split():
                self.listed += 1
                xml = base / "Annotations" / f"{line}.xml"
                if not xml.is_file():
                    raise DatasetMissingError(f"{xml} (listed in {listing}) not found; re-extract VOCdevkit/VOC{year}")
                ann = parse_voc_xml(xml)
                unknown = [o["name"] for o in ann["objects"] if o["name"] not in self._label]
                if unknown:
                    raise DatasetError(f"{xml}: unknown classes {unknown} (known: data.init_args.classes = "
                                       f"{self.class_names})")
                if train and all(o["difficult"] for o in ann["objects"]):
                    self.stats["images_without_objects"] += 1
                    continue
                if train:
                    self.stats["difficult"] += sum(o["difficult"] for o in ann["objects"])
                self.items.append((f"{year}_{line}", base / "JPEGImages" / f"{line}.jpg", ann))
                self._xml.append(xml)
        if not self.items:
            raise DatasetError(f"no usable images in {splits} under {self.devkit}")
        self.train = train
        self.coco = self._as_coco()

    def _as_coco(self) -> COCO:
        images, anns = [], []
        for index, (_, _, ann) in enumerate(self.items):
            images.append({"id": index, "width": ann["width"], "height": ann["height"], "file_name": ""})
            for o in ann["objects"]:
                x0, y0, x1, y1 = o["box"]
                anns.append({"id": len(anns) + 1, "image_id": index, "category_id": self._label[o["name"]],
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                             "iscrowd": int(o["difficult"])})
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns,
                        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def voc_ground_truth(self) -> dict:
        """{class id: {image index: (boxes (G, 4) xyxy, difficult (G,))}} for :func:`voc_map`."""
        out: dict = {c: {} for c in self.cat_ids}
        for index, (_, _, ann) in enumerate(self.items):
            for o in ann["objects"]:
                boxes, diff = out[self._label[o["name"]]].setdefault(index, ([], []))
                boxes.append(o["box"])
                diff.append(o["difficult"])
        return {c: {i: (np.array(b), np.array(d)) for i, (b, d) in imgs.items()} for c, imgs in out.items() if imgs}

    def __len__(self) -> int:
        return len(self.items)

    def image_refs(self) -> list[ImageRef]:
        """Every image of the split with the (height, width) of its XML (for :func:`verify_images`)."""
        return [ImageRef(path, (ann["height"], ann["width"]), f"annotation {xml}")
                for (_, path, ann), xml in zip(self.items, self._xml)]

    def aspect_ratios(self) -> list[float]:
        return [a["width"] / a["height"] for _, _, a in self.items]

    def __getitem__(self, item):
        index, seed = item if isinstance(item, (tuple, list)) else (item, None)
        _, path, ann = self.items[index]
        image = read_image(path, expected_hw=(ann["height"], ann["width"]), where=f"annotation {self._xml[index]}")
        objects = [o for o in ann["objects"] if not (self.train and o["difficult"])]
        target = {"boxes": np.array([o["box"] for o in objects], np.float32).reshape(-1, 4),
                  "labels": np.array([self._label[o["name"]] for o in objects], np.int64)}
        h0, w0 = image.shape[:2]
        if isinstance(self.transform, SSDAugment):  # SSD's own pipeline (its crops are not albumentations')
            image, target = self.transform(image, target, seed)
        else:
            image, target = apply_transform(self.transform, image, target, seed)
        h, w = image.shape[:2]
        out = {"boxes": torch.from_numpy(target["boxes"]), "labels": torch.from_numpy(target["labels"]),
               "image_id": index, "orig_size": (h0, w0), "scale": (h / h0, w / w0)}
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0), out


class VOCSegmentation(Dataset):
    """Semantic segmentation over ``ImageSets/Segmentation/<name>.txt`` of each ``<year>_<name>`` split: items
    ``(image (3, H, W) float [0, 1], mask (H, W) int64)``, mask values 0..len(classes) and 255 = ignore."""

    def __init__(self, devkit: str | os.PathLike, splits: list[str], *, classes: tuple[str, ...] = VOC_CLASSES,
                 hflip: float = 0.0) -> None:
        self.devkit = Path(devkit)
        self.class_names = list(classes)
        self.num_values = len(classes) + 1  # background + classes
        self.transform = A.Compose([A.HorizontalFlip(p=hflip)]) if hflip > 0 else None
        self.items: list[tuple[str, Path, Path]] = []  # (image id "2012_2007_000032", jpeg, class png)
        self.listed = 0
        for split in splits:
            year, name = split.split("_", 1)
            base = self.devkit / f"VOC{year}"
            listing = base / "ImageSets" / "Segmentation" / f"{name}.txt"
            if not listing.is_file():
                raise DatasetMissingError(f"{listing} not found; put VOCdevkit/VOC{year} (with its segmentation "
                                          f"files) under {self.devkit}")
            for line in listing.read_text().split():
                self.listed += 1
                png = base / "SegmentationClass" / f"{line}.png"
                if not png.is_file():
                    raise DatasetMissingError(f"{png} (listed in {listing}) not found; re-extract VOCdevkit/VOC{year}")
                self.items.append((f"{year}_{line}", base / "JPEGImages" / f"{line}.jpg", png))
        if not self.items:
            raise DatasetError(f"no images listed in ImageSets/Segmentation of {splits} under {self.devkit}")

    def __len__(self) -> int:
        return len(self.items)

    def image_refs(self) -> list[ImageRef]:
        """Every image with the (height, width) of its label PNG's header, and every label PNG itself (for
        :func:`verify_images`: a truncated mask is found at setup, not mid-training)."""
        refs = []
        for _, jpg, png in self.items:
            hw = image_size(png)
            refs += [ImageRef(jpg, hw, f"label image {png}"), ImageRef(png, hw, f"image {jpg}")]
        return refs

    def __getitem__(self, item):
        index, seed = item if isinstance(item, (tuple, list)) else (item, None)
        _, jpg, png = self.items[index]
        hw = image_size(png)
        image = read_image(jpg, expected_hw=hw, where=f"label image {png}")
        mask = read_label_png(png, expected_hw=hw, num_values=self.num_values, where=f"image {jpg}")
        if self.transform is not None:
            if seed is not None:
                self.transform.set_random_seed(seed)
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
        return image_t, torch.from_numpy(np.ascontiguousarray(mask)).long()  # (H, W)


def collate_segmentation(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (image (3, H_i, W_i), mask (H_i, W_i)) -> images (B, 3, H, W) zero-padded at the bottom/right to the
    largest image and masks (B, H, W) padded with 255 (ignored), so whole images of any size batch together."""
    h = max(img.shape[1] for img, _ in batch)
    w = max(img.shape[2] for img, _ in batch)
    images = torch.zeros(len(batch), 3, h, w)
    masks = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.long)
    for i, (img, mask) in enumerate(batch):
        images[i, :, : img.shape[1], : img.shape[2]] = img
        masks[i, : mask.shape[0], : mask.shape[1]] = mask
    return images, masks


class VOCDataModule(ShardedDataModule):
    """VOC detection: ``train_splits`` (e.g. ["2007_trainval"] or ["2007_trainval", "2012_trainval"]) and
    ``test_splits`` (["2007_test"]); short side ``min_size`` 600 / long side ``max_size`` 1000 (Ren et al. 2015,
    sec. 3.3), horizontal flips. Evaluation logs COCO numbers and the VOC metric (see the detection module).
    ``download``: fetch the official tars of splits whose listing is missing; ``verify_images``: the image check
    at setup (``header`` | ``full`` | ``none``, see :mod:`lit_papers.data.images`).

    ``task: segmentation`` reads :class:`VOCSegmentation` instead (splits e.g. ``["2012_train"]`` /
    ``["2012_val"]``; whole images, no resizing, ``min_size``/``max_size`` unused; batches padded by
    :func:`collate_segmentation`). ``classes``: the object class names (None = the 20 VOC classes).

    SSD (Liu et al. 2016): ``fixed_size`` warps every image to ``fixed_size`` x ``fixed_size`` (train and eval;
    ``min_size``/``max_size`` unused; boxes are mapped back to the original image by the model's postprocess);
    training then runs :class:`~lit_papers.data.ssd_augment.SSDAugment` with ``photometric`` distortions,
    expansion up to ``expand_ratio`` (1 = off), the IoU-constrained random crop ``iou_crop`` (patch scale >=
    ``crop_min_scale``) and ``hflip``. All off by default (the detection behaviour above is unchanged)."""

    def __init__(self, *, root: str | None = None, train_splits: tuple[str, ...] = ("2007_trainval",),
                 test_splits: tuple[str, ...] = ("2007_test",), min_size: int = 600, max_size: int = 1000, hflip: float = 0.5,
                 batch_size: int = 2, eval_batch_size: int | None = None, num_workers: int = 2, seed: int = 0,
                 download: bool = True, verify_images: VerifyMode = "header",
                 task: Literal["detection", "segmentation"] = "detection", classes: tuple[str, ...] | None = None,
                 fixed_size: int | None = None, photometric: bool = False, expand_ratio: float = 1.0,
                 iou_crop: bool = False, crop_min_scale: float = 0.3) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        if task not in ("detection", "segmentation"):
            raise ValueError(f"data.init_args.task must be 'detection' or 'segmentation', got {task!r}")
        if fixed_size is None and (photometric or expand_ratio != 1.0 or iou_crop):
            raise ValueError("data.init_args photometric / expand_ratio / iou_crop are SSD's augmentation and need "
                             "data.init_args.fixed_size (the network's square input, 300 for SSD300)")
        self.devkit = family_dir("voc", root) / "VOCdevkit"
        self.verify_images = verify_images
        self.classes = tuple(classes) if classes is not None else VOC_CLASSES
        self.datasets: dict[str, VOCDetection | VOCSegmentation] = {}

    def source(self) -> str:
        root = self.hparams.root
        return (f"data.init_args.root = {root!r}" if root is not None
                else f"data root {data_root()} ($LIT_PAPERS_DATA, data.init_args.root unset)")

    def prepare_data(self) -> None:
        """Fetch and extract (merged into ``VOCdevkit``) the official tar of every split whose listing is missing."""
        hp = self.hparams
        if not hp.download:
            return
        done: set[str] = set()
        for split in [*hp.train_splits, *hp.test_splits]:
            year, name = split.split("_", 1)
            remote = voc_remote(split)
            sets = "Main" if hp.task == "detection" else "Segmentation"
            listing = self.devkit / f"VOC{year}" / "ImageSets" / sets / f"{name}.txt"
            if listing.is_file() or remote is None or remote.filename in done:
                continue
            archive = ensure_archive(remote, self.devkit.parent, family="voc",
                                     expected=[f"VOCdevkit/VOC{year}/ImageSets/{sets}/{name}.txt"])
            extract(archive, self.devkit.parent, member_root="VOCdevkit", merge=True, last=("ImageSets",))
            done.add(remote.filename)

    def image_refs(self) -> dict[str, list[ImageRef]]:
        return {key: ds.image_refs() for key, ds in self.datasets.items()}

    def _add(self, key: str, splits: list[str], *, train: bool) -> None:
        hp = self.hparams
        try:
            if hp.task == "segmentation":
                ds = VOCSegmentation(self.devkit, splits, classes=self.classes, hflip=hp.hflip if train else 0.0)
            else:
                ds = VOCDetection(self.devkit, splits, train=train, transform=self.detection_transform(train),
                                  classes=self.classes)
        except DatasetMissingError as err:
            raise DatasetMissingError(f"{err}\n{type(self).__name__} reads {self.devkit}, set by {self.source()}"
                                      + ("" if hp.download else "; set data.init_args.download true to fetch it")
                                      ) from err
        refs = ds.image_refs()
        bad = verify_images(refs, self.verify_images)
        if bad:
            raise bad_images_error(bad, checked=len(refs), what=f"VOC {splits} under {self.devkit} ({self.source()})",
                                   mode=self.verify_images)
        self.datasets[key] = ds
        if hp.task == "segmentation":
            self.report_split(key, f"{'+'.join(splits)} (segmentation) from {self.devkit} ({self.source()}): "
                                   f"{len(ds)} of {ds.listed} images used; images checked ({self.verify_images}): "
                                   + (f"{len(refs)}, all good" if self.verify_images != "none" else "none"),
                              {"images": len(ds), "listed": ds.listed,
                               "checked": len(refs) if self.verify_images != "none" else 0})
            return
        skipped = ds.stats.get("images_without_objects", 0)
        line = (f"{'+'.join(splits)} from {self.devkit} ({self.source()}): {len(ds)} of {ds.listed} images used; "
                f"skipped images: images_without_objects={skipped}"
                + (f"; difficult objects not trained on: {ds.stats.get('difficult', 0)}" if train else "")
                + f"; images checked ({self.verify_images}): "
                + (f"{len(refs)}, all good" if self.verify_images != "none" else "none"))
        counts = {"images": len(ds), "listed": ds.listed, "skipped_images_without_objects": skipped,
                  "checked": len(refs) if self.verify_images != "none" else 0}
        if train:
            counts["difficult"] = ds.stats.get("difficult", 0)
        self.report_split(key, line, counts)

    def detection_transform(self, train: bool) -> A.Compose | SSDAugment:
        """Resize to ``min_size``/``max_size`` (+ flip at train), or SSD's fixed warp (+ its augmentation)."""
        hp = self.hparams
        if hp.fixed_size is None:
            return resize_transform(hp.min_size, hp.max_size, hflip=hp.hflip if train else 0.0)
        if train:
            return SSDAugment(size=hp.fixed_size, photometric=hp.photometric, expand_ratio=hp.expand_ratio,
                              crop=hp.iou_crop, crop_min_scale=hp.crop_min_scale, hflip=hp.hflip)
        return A.Compose([A.Resize(hp.fixed_size, hp.fixed_size)],
                         bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "index"],
                                                  min_area=0.0, clip=True))

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in (None, "fit") and "train" not in self.datasets:
            self._add("train", list(hp.train_splits), train=True)
        if "test" not in self.datasets:
            self._add("test", list(hp.test_splits), train=False)

    def eval_dataset(self, stage: str) -> VOCDetection | VOCSegmentation:
        return self.datasets["test"]

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    @property
    def num_classes(self) -> int:
        """Outputs of a segmentation network: background + the object classes."""
        return len(self.classes) + 1

    def _collate(self):
        return collate_segmentation if self.hparams.task == "segmentation" else collate_detection

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.datasets["train"], collate_fn=self._collate())

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets["test"], batch_size=self.hparams.eval_batch_size,
                                collate_fn=self._collate())

    test_dataloader = val_dataloader
