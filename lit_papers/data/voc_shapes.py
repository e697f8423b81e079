"""The generated shapes set written in the official PASCAL VOC format, with segmentation.

Real VOC is too large to ship and the sample in ``$LIT_PAPERS_DATA/voc`` has no segmentation PNGs, so this set lets
FCN (and the detectors) train end to end through the very same reader as real VOC
(:class:`~lit_papers.data.voc.VOCDataModule`). The drawing is the COCO shapes set's
(:func:`lit_papers.data.shapes.render_scene`: textured background, occluding circles / squares / triangles). It is
written once, atomically, under ``$LIT_PAPERS_CACHE/generated/voc/<subdir>`` (``<root>/voc/<subdir>`` with an
explicit ``root``), never into the data root. Layout, as the VOC2012 devkit::

    <subdir>/VOCdevkit/VOC2012/
      JPEGImages/2012_000000.jpg ...            (quality 95)
      Annotations/2012_000000.xml ...           (the tags and element order of the real VOC XML)
      SegmentationClass/2012_000000.png ...     (mode P, VOC palette: 0 background, 1..3 classes, 255 void)
      SegmentationObject/2012_000000.png ...    (mode P, VOC palette: 1..N = the XML's objects in order, 255 void)
      ImageSets/Main/{train,val,trainval}.txt and <class>_<split>.txt (" 1" present, "-1" absent, " 0" difficult only)
      ImageSets/Segmentation/{train,val,trainval}.txt

The quirks are VOC's: boxes are 1-based inclusive pixel indices of the visible region; a ``border``-pixel "void"
band (255) surrounds every object outline in both PNGs (VOC draws about 5 pixels on ~500-pixel images); an object
is ``truncated`` when the image border cuts it (scenes are drawn on a larger canvas and cropped) and
``difficult`` when less than ``difficult_visible`` of its shape is visible (occluded by later shapes). Deterministic for a given seed.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from lit_papers.data.root import generated_dir, generated_source
from lit_papers.data.shapes import CATEGORIES, _rasterize, render_scene, to_uint8, write_atomically
from lit_papers.data.voc import IGNORE_INDEX, VOCDataModule, voc_colormap

SHAPE_CLASSES = tuple(c["name"] for c in CATEGORIES)  # ("circle", "square", "triangle"): labels 1..3
YEAR = "2012"
MARKER = f"VOCdevkit/VOC{YEAR}/ImageSets/Segmentation/trainval.txt"


def void_band(mask: np.ndarray, border: int) -> np.ndarray:
    """Pixels within ``border`` pixels of the outline of a binary mask, inside or outside (bool (H, W))."""
    if border <= 0:
        return np.zeros(mask.shape, bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * border + 1, 2 * border + 1))
    m = mask.astype(np.uint8)
    return cv2.dilate(m, kernel).astype(bool) & ~cv2.erode(m, kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)


def save_palette_png(path: Path, labels: np.ndarray) -> None:
    """(H, W) uint8 indices -> a mode 'P' PNG with the VOC colour map (as the devkit's label images)."""
    img = Image.fromarray(labels, mode="P")
    img.putpalette(voc_colormap().reshape(-1).tolist())
    img.save(path)


def annotation_xml(image_id: str, size: int, objects: list[dict]) -> bytes:
    """The XML of one image, with the tags and element order of the official VOC annotations."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = f"VOC{YEAR}"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "The lit_papers shapes Database"
    ET.SubElement(source, "annotation").text = "lit_papers generated shapes"
    ET.SubElement(source, "image").text = "generated"
    sz = ET.SubElement(root, "size")
    for key, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(sz, key).text = str(value)
    ET.SubElement(root, "segmented").text = "1"
    for o in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = o["name"]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = str(int(o["truncated"]))
        ET.SubElement(obj, "difficult").text = str(int(o["difficult"]))
        bb = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), o["bndbox"]):
            ET.SubElement(bb, key).text = str(value)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode").encode() + b"\n"


def render_voc_image(rng: np.random.Generator, *, size: int, max_objects: int, border: int,
                     difficult_visible: float, margin: int, min_pixels: int = 20
                     ) -> tuple[np.ndarray, list[dict], np.ndarray, np.ndarray]:
    """One image (size, size, 3) uint8, its objects ({name, truncated, difficult, bndbox (1-based inclusive)}),
    and the class and object label maps (size, size) uint8 with the void band.

    The scene is drawn on a canvas ``margin`` pixels larger on every side and cropped, so shapes near the edge
    are cut by the image border (VOC's truncation). A shape left with fewer than ``min_pixels`` visible pixels
    is not annotated and its pixels are void (255), as VOC leaves unannotated regions."""
    canvas, placed = render_scene(rng, size=size + 2 * margin, max_objects=max_objects)
    crop = (slice(margin, margin + size), slice(margin, margin + size))
    classes = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.uint8)
    void = np.zeros((size, size), bool)
    objects = []
    for cat_id, poly, visible_canvas in placed:
        full = _rasterize([poly.reshape(-1).tolist()], size + 2 * margin)  # the whole shape, as it was painted
        visible = visible_canvas[crop].astype(bool)
        if visible.sum() < min_pixels:
            void |= visible
            continue
        ys, xs = np.nonzero(visible)
        objects.append({"name": SHAPE_CLASSES[cat_id - 1],
                        "truncated": bool(visible.sum() < visible_canvas.sum()),
                        "difficult": bool(visible_canvas.sum() < difficult_visible * full.sum()),
                        "bndbox": (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1)})
        classes[visible] = cat_id
        instances[visible] = len(objects)
        void |= void_band(visible, border)
    classes[void] = IGNORE_INDEX
    instances[void] = IGNORE_INDEX
    return to_uint8(canvas[crop]), objects, classes, instances


def write_voc_shapes(folder: str | os.PathLike, *, num_train: int = 1000, num_val: int = 100, size: int = 128,
                     max_objects: int = 4, border: int = 2, difficult_visible: float = 0.6, margin: int | None = None,
                     seed: int = 0) -> Path:
    """Write the whole set into ``folder`` (atomically; a no-op when it is complete and was written with the same
    options, an error (``GeneratedSetMismatch``) when with others). Returns ``folder``.
    ``margin``: the canvas border cropped away (truncation), default ``size // 8``."""
    margin = size // 8 if margin is None else margin

    def fill(scratch: Path) -> None:
        base = scratch / "VOCdevkit" / f"VOC{YEAR}"
        dirs = {d: base / d for d in ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationObject",
                                      "ImageSets/Main", "ImageSets/Segmentation")}
        for d in dirs.values():
            d.mkdir(parents=True)
        ids: dict[str, list[str]] = {"train": [], "val": []}
        presence: dict[str, dict[str, list[tuple[str, int]]]] = {s: {c: [] for c in SHAPE_CLASSES} for s in ids}
        start = 0
        for offset, (split, n) in enumerate((("train", num_train), ("val", num_val))):
            rng = np.random.default_rng([seed, offset])
            for i in range(n):
                image_id = f"{YEAR}_{start + i:06d}"
                image, objects, classes, instances = render_voc_image(rng, size=size, max_objects=max_objects,
                                                                      border=border,
                                                                      difficult_visible=difficult_visible,
                                                                      margin=margin)
                cv2.imwrite(str(dirs["JPEGImages"] / f"{image_id}.jpg"), image[:, :, ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
                (dirs["Annotations"] / f"{image_id}.xml").write_bytes(annotation_xml(image_id, size, objects))
                save_palette_png(dirs["SegmentationClass"] / f"{image_id}.png", classes)
                save_palette_png(dirs["SegmentationObject"] / f"{image_id}.png", instances)
                ids[split].append(image_id)
                for c in SHAPE_CLASSES:
                    mine = [o for o in objects if o["name"] == c]
                    flag = -1 if not mine else (0 if all(o["difficult"] for o in mine) else 1)
                    presence[split][c].append((image_id, flag))
            start += n
        ids["trainval"] = ids["train"] + ids["val"]
        presence["trainval"] = {c: presence["train"][c] + presence["val"][c] for c in SHAPE_CLASSES}
        for split, names in ids.items():
            text = "".join(f"{i}\n" for i in names)
            (dirs["ImageSets/Main"] / f"{split}.txt").write_text(text)
            (dirs["ImageSets/Segmentation"] / f"{split}.txt").write_text(text)
            for c, rows in presence[split].items():  # the devkit's spacing: "id -1", "id  1", "id  0"
                (dirs["ImageSets/Main"] / f"{c}_{split}.txt").write_text("".join(f"{i} {f:2d}\n" for i, f in rows))

    spec = {"generator": "voc_shapes", "num_train": num_train, "num_val": num_val, "size": size,
            "max_objects": max_objects, "border": border, "difficult_visible": difficult_visible, "margin": margin,
            "seed": seed}
    return write_atomically(folder, MARKER, fill, spec)


class VOCShapesDataModule(VOCDataModule):
    """:class:`VOCDataModule` over the generated VOC-format shapes (written once under
    ``$LIT_PAPERS_CACHE/generated/voc/<subdir>``, or ``<root>/voc/<subdir>``); splits ``2012_train`` / ``2012_val``,
    classes circle, square, triangle; ``task`` segmentation (default) or detection. Change ``subdir`` when changing
    the generator's options (a complete set is never rewritten)."""

    def __init__(self, *, num_train: int = 1000, num_val: int = 100, image_size: int = 128, max_objects: int = 4,
                 border: int = 2, generator_seed: int = 0, root: str | None = None, subdir: str = "shapes",
                 task: Literal["detection", "segmentation"] = "segmentation", hflip: float = 0.0,
                 train_splits: tuple[str, ...] = (f"{YEAR}_train",), test_splits: tuple[str, ...] = (f"{YEAR}_val",),
                 min_size: int | None = None, max_size: int | None = None, download: bool = False, **kwargs) -> None:
        super().__init__(root=root, task=task, hflip=hflip, classes=SHAPE_CLASSES, train_splits=train_splits,
                         test_splits=test_splits, min_size=min_size or image_size, max_size=max_size or image_size,
                         download=download, **kwargs)
        self.save_hyperparameters()
        self.hparams.min_size, self.hparams.max_size = min_size or image_size, max_size or image_size
        self.folder = generated_dir("voc", root) / subdir
        self.devkit = self.folder / "VOCdevkit"

    def source(self) -> str:
        return generated_source(self.hparams.root, self.hparams.subdir)

    def prepare_data(self) -> None:
        hp = self.hparams
        write_voc_shapes(self.folder, num_train=hp.num_train, num_val=hp.num_val, size=hp.image_size,
                         max_objects=hp.max_objects, border=hp.border, seed=hp.generator_seed)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # idempotent; also covers processes that skipped prepare_data
        super().setup(stage)
