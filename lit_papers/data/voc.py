"""PASCAL VOC 2007/2012 detection (official devkit layout) for Faster/Fast R-CNN.

``<root>/voc/VOCdevkit/VOC<year>/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/<split>.txt}``;
``splits`` like ``["2007_trainval", "2012_trainval"]`` (VOC07+12) are concatenated.

Boxes: the XML's 1-based inclusive pixel coordinates -> 0-based pixel-corner xyxy ``(xmin - 1, ymin - 1, xmax,
ymax)`` (continuous, the same convention as COCO here); coordinates parsed with ``int(float(s))`` (VOC2012 has
a few float values). Labels 1..20 in the alphabetical VOC order. ``difficult`` objects are excluded from
training targets (py-faster-rcnn's default) and are "ignore" in evaluation: the dataset exposes its ground
truth as an in-memory COCO object (``.coco``, difficult -> ``iscrowd=1``) so the COCO evaluator runs unchanged,
and as ``voc_ground_truth()`` for the VOC metric (:mod:`lit_papers.metrics.voc_eval`, 07 11-point / area).
"""

from __future__ import annotations

import contextlib
import io
import os
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset

from lit_papers.data.base import ShardedDataModule
from lit_papers.data.coco import apply_transform, collate_detection, resize_transform
from lit_papers.data.download import DatasetError, DatasetMissingError
from lit_papers.data.root import family_dir

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def parse_voc_xml(path: str | os.PathLike) -> dict:
    """One annotation file -> {width, height, objects: [{name, box (xyxy 0-based corners), difficult}]}."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        width, height = int(size.findtext("width")), int(size.findtext("height"))
        objects = []
        for obj in root.findall("object"):
            bb = obj.find("bndbox")
            x0, y0, x1, y1 = (int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
            objects.append({"name": obj.findtext("name").strip(), "box": [x0 - 1.0, y0 - 1.0, float(x1), float(y1)],
                            "difficult": int(obj.findtext("difficult") or 0) == 1})
    except (ET.ParseError, AttributeError, TypeError, ValueError) as err:
        raise DatasetError(f"{path}: malformed VOC annotation ({err}); re-download the VOC devkit") from err
    return {"width": width, "height": height, "objects": objects}


class VOCDetection(Dataset):
    def __init__(self, devkit: str | os.PathLike, splits: list[str], *, transform=None, train: bool = False) -> None:
        self.devkit = Path(devkit)
        self.transform = transform
        self.class_names = list(VOC_CLASSES)
        self.cat_ids = list(range(1, len(VOC_CLASSES) + 1))
        self.stats: Counter = Counter()
        self.items: list[tuple[str, Path, dict]] = []  # (image id "2007_000001", jpeg path, parsed xml)
        for split in splits:
            year, name = split.split("_", 1)
            base = self.devkit / f"VOC{year}"
            listing = base / "ImageSets" / "Main" / f"{name}.txt"
            if not listing.is_file():
                raise DatasetMissingError(f"{listing} not found; put VOCdevkit/VOC{year} under {self.devkit}")
            for line in listing.read_text().split():
                ann = parse_voc_xml(base / "Annotations" / f"{line}.xml")
                unknown = [o["name"] for o in ann["objects"] if o["name"] not in VOC_CLASSES]
                if unknown:
                    raise DatasetError(f"{base / 'Annotations' / line}.xml: unknown classes {unknown}")
                if train and all(o["difficult"] for o in ann["objects"]):
                    self.stats["images_without_objects"] += 1
                    continue
                self.items.append((f"{year}_{line}", base / "JPEGImages" / f"{line}.jpg", ann))
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
                anns.append({"id": len(anns) + 1, "image_id": index, "category_id": VOC_CLASSES.index(o["name"]) + 1,
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                             "iscrowd": int(o["difficult"])})
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns,
                        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(VOC_CLASSES)]}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def voc_ground_truth(self) -> dict:
        """{class id: {image index: (boxes (G, 4) xyxy, difficult (G,))}} for :func:`voc_map`."""
        out: dict = {c: {} for c in self.cat_ids}
        for index, (_, _, ann) in enumerate(self.items):
            for o in ann["objects"]:
                boxes, diff = out[VOC_CLASSES.index(o["name"]) + 1].setdefault(index, ([], []))
                boxes.append(o["box"])
                diff.append(o["difficult"])
        return {c: {i: (np.array(b), np.array(d)) for i, (b, d) in imgs.items()} for c, imgs in out.items() if imgs}

    def __len__(self) -> int:
        return len(self.items)

    def aspect_ratios(self) -> list[float]:
        return [a["width"] / a["height"] for _, _, a in self.items]

    def __getitem__(self, item):
        index, seed = item if isinstance(item, (tuple, list)) else (item, None)
        _, path, ann = self.items[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise (DatasetMissingError if not path.is_file() else DatasetError)(f"image {path} missing or corrupt")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        objects = [o for o in ann["objects"] if not (self.train and o["difficult"])]
        target = {"boxes": np.array([o["box"] for o in objects], np.float32).reshape(-1, 4),
                  "labels": np.array([VOC_CLASSES.index(o["name"]) + 1 for o in objects], np.int64)}
        h0, w0 = image.shape[:2]
        image, target = apply_transform(self.transform, image, target, seed)
        h, w = image.shape[:2]
        out = {"boxes": torch.from_numpy(target["boxes"]), "labels": torch.from_numpy(target["labels"]),
               "image_id": index, "orig_size": (h0, w0), "scale": (h / h0, w / w0)}
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0), out


class VOCDataModule(ShardedDataModule):
    """VOC detection: ``train_splits`` (e.g. ["2007_trainval"] or ["2007_trainval", "2012_trainval"]) and
    ``test_splits`` (["2007_test"]); short side ``min_size`` 600 / long side ``max_size`` 1000 (Ren et al. 2015,
    sec. 3.3), horizontal flips. Evaluation logs COCO numbers and the VOC metric (see the detection module)."""

    def __init__(self, *, root: str | None = None, train_splits: tuple[str, ...] = ("2007_trainval",),
                 test_splits: tuple[str, ...] = ("2007_test",), min_size: int = 600, max_size: int = 1000, hflip: float = 0.5,
                 batch_size: int = 2, eval_batch_size: int | None = None, num_workers: int = 2, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        self.devkit = family_dir("voc", root) / "VOCdevkit"
        self.datasets: dict[str, VOCDetection] = {}

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage in (None, "fit") and "train" not in self.datasets:
            self.datasets["train"] = VOCDetection(self.devkit, list(hp.train_splits), train=True,
                                                  transform=resize_transform(hp.min_size, hp.max_size, hflip=hp.hflip))
        if "test" not in self.datasets:
            self.datasets["test"] = VOCDetection(self.devkit, list(hp.test_splits),
                                                 transform=resize_transform(hp.min_size, hp.max_size))

    def eval_dataset(self, stage: str) -> VOCDetection:
        return self.datasets["test"]

    @property
    def class_names(self) -> list[str]:
        return list(VOC_CLASSES)

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(self.datasets["train"], collate_fn=collate_detection)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets["test"], batch_size=self.hparams.eval_batch_size,
                                collate_fn=collate_detection)

    test_dataloader = val_dataloader
