"""A generated instance-segmentation set ("shapes") written in the official COCO format.

The README's first command trains Mask R-CNN end to end on a fresh machine with no download, through the very
same reader as real COCO (:class:`~lit_papers.data.coco.COCODataModule`). It is written into the user cache,
``$LIT_PAPERS_CACHE/generated/coco/<subdir>`` (default ``~/.cache/lit_papers/generated/coco/shapes``), never into
the data root ``$LIT_PAPERS_DATA``, which may be a shared read-only copy of the real datasets. Layout, as COCO 2017::

    <cache>/generated/coco/shapes/
      annotations/instances_train2017.json   annotations/instances_val2017.json
      train2017/000000000001.png ...         val2017/...

Each image (``size`` x ``size`` RGB) has a textured background (two-colour gradient + sinusoidal stripes +
pixel noise) and 1..``max_objects`` filled circles, squares (rotated) and triangles of random size, colour and
position, painted in order so that later shapes may occlude earlier ones. Annotations are *visible* (modal)
masks as COCO polygons: an unoccluded shape keeps its exact analytic polygon (circles as 32-gons); an occluded
one gets the outer contours of its visible region. A new shape that would hide more than ``1 - min_visible`` of
an earlier one (or leave it under ``min_area`` pixels) is re-drawn elsewhere, so every painted object is
annotated. The pixels of each object are painted from the *same* polygon rasterisation
(pycocotools) that evaluation decodes, so image and ground truth agree. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from lit_papers.data.root import generated_source

CATEGORIES = ({"id": 1, "name": "circle", "supercategory": "shape"},
              {"id": 2, "name": "square", "supercategory": "shape"},
              {"id": 3, "name": "triangle", "supercategory": "shape"})
FOLDER = "shapes"


def _polygon(kind: str, rng: np.random.Generator, size: int, min_side: float, max_side: float) -> np.ndarray:
    """Vertices (V, 2) float64 in pixel coordinates of one shape fully inside the image."""
    side = rng.uniform(min_side, max_side)
    r = side / 2
    cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
    theta = rng.uniform(0, 2 * np.pi)
    if kind == "circle":
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    elif kind == "square":
        angles = theta + np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        r = r * np.sqrt(2) * 0.75  # keep the rotated square's extent close to `side`
    else:  # equilateral triangle
        angles = theta + np.array([0.0, 2.0, 4.0]) * np.pi / 3
    pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)  # (V, 2)
    return np.clip(pts, 0.5, size - 0.5)


def _rasterize(polygons: list[list[float]], size: int) -> np.ndarray:
    """COCO polygons -> (size, size) uint8 mask, exactly as pycocotools decodes annotations."""
    rles = mask_utils.frPyObjects(polygons, size, size)
    return mask_utils.decode(mask_utils.merge(rles))


def _contour_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a binary mask as COCO polygons (at least 3 points each), pixel-corner coordinates."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = c.reshape(-1, 2).astype(np.float64) + 0.5  # (P, 2) pixel centres
        if len(c) >= 3:
            polys.append([round(float(v), 2) for v in c.reshape(-1)])
    return polys


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, size)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]  # (size, size)
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    image = c0 + (c1 - c0) * ramp[..., None] * 0.6  # (size, size, 3)
    freq, phase, amp = rng.uniform(0.05, 0.4), rng.uniform(0, 2 * np.pi), rng.uniform(5, 25)
    stripes = np.sin(freq * (np.cos(angle + 1) * np.arange(size)[None, :] + np.sin(angle + 1) * np.arange(size)[:, None]) + phase)
    image += amp * stripes[..., None]
    image += rng.normal(0, 6, size=image.shape)
    return image


def render_scene(rng: np.random.Generator, *, size: int = 128, max_objects: int = 4, min_side: float = 14,
                 max_side: float = 56, min_visible: float = 0.5, min_area: float = 40.0
                 ) -> tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray]]]:
    """The drawing shared by the COCO- and VOC-format sets: an image (size, size, 3) float64 (not yet clipped)
    and its objects in painting order as ``(category id, analytic polygon (V, 2), visible mask (size, size)
    uint8)``; the visible mask is the analytic shape minus what later shapes cover."""
    image = _background(rng, size)
    count = int(rng.integers(1, max_objects + 1))
    placed: list[tuple[int, np.ndarray, np.ndarray]] = []  # (category id, analytic polygon, visible mask)
    for _ in range(count):
        for _attempt in range(20):
            cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            poly = _polygon(cat["name"], rng, size, min_side, max_side)
            full = _rasterize([poly.reshape(-1).tolist()], size)
            # the new shape hides part of the earlier ones: each must stay visible enough
            if all((m & (1 - full)).sum() >= max(min_area, min_visible * m.sum()) for _, _, m in placed):
                break
        else:
            continue
        bg_mean = image[full.astype(bool)].mean(axis=0)
        colour = rng.uniform(0, 255, size=3)
        while np.abs(colour - bg_mean).max() < 90:  # contrast with the local background
            colour = rng.uniform(0, 255, size=3)
        image[full.astype(bool)] = colour + rng.normal(0, 4, size=(int(full.sum()), 3))
        placed = [(c, p, m & (1 - full)) for c, p, m in placed]  # occlusion by the new shape
        placed.append((cat["id"], poly, full))
    return image, placed


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0, 255).astype(np.uint8)


def render_image(rng: np.random.Generator, **kwargs) -> tuple[np.ndarray, list[dict]]:
    """One image (size, size, 3) uint8 and its COCO annotations (``category_id``, ``segmentation``, ``area``,
    ``bbox``); ``kwargs`` as :func:`render_scene`."""
    image, placed = render_scene(rng, **kwargs)
    size = image.shape[0]
    annotations = []
    for cat_id, poly, visible in placed:
        full = _rasterize([poly.reshape(-1).tolist()], size)
        polygons = [poly.reshape(-1).round(2).tolist()] if np.array_equal(full, visible) else _contour_polygons(visible)
        if not polygons:
            continue
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, size, size))
        area = float(mask_utils.area(rle))
        if area < 1:
            continue
        annotations.append({"category_id": cat_id, "segmentation": polygons, "area": area,
                            "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)], "iscrowd": 0})
    return to_uint8(image), annotations


def write_split(folder: Path, split: str, num_images: int, rng: np.random.Generator, first_id: int, **kwargs) -> dict:
    """Render ``num_images`` PNGs into ``folder/<split>2017`` and return the instances JSON dict."""
    image_dir = folder / f"{split}2017"
    image_dir.mkdir(parents=True)
    images, annotations = [], []
    for i in range(num_images):
        image_id = first_id + i
        image, anns = render_image(rng, **kwargs)
        name = f"{image_id:012d}.png"
        cv2.imwrite(str(image_dir / name), image[:, :, ::-1])  # RGB -> BGR for OpenCV
        images.append({"id": image_id, "file_name": name, "height": image.shape[0], "width": image.shape[1],
                       "license": 1})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1 + first_id * 10, "image_id": image_id, **ann})
    return {"info": {"description": "lit_papers generated shapes", "version": "1.0", "year": 2026},
            "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
            "images": images, "annotations": annotations, "categories": [dict(c) for c in CATEGORIES]}


SPEC_FILE = "generator.json"  # the options a generated set was written with


class GeneratedSetMismatch(ValueError):
    """A generated set on disk was written with other options than the ones asked for (names the folder)."""


def check_spec(folder: Path, spec: dict) -> None:
    """Raise :class:`GeneratedSetMismatch` unless ``folder`` was generated with exactly ``spec``."""
    path = folder / SPEC_FILE
    fix = (f"delete {folder} (it is regenerated in seconds) or give the datamodule another subdir "
           "(data.init_args.subdir) for these options")
    if not path.is_file():
        raise GeneratedSetMismatch(f"{folder}: a generated set without {SPEC_FILE} (written by an older lit-papers), "
                                   f"so it cannot be checked against the options asked for ({spec}); {fix}")
    try:
        found = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise GeneratedSetMismatch(f"{path}: not valid JSON ({exc}); {fix}") from exc
    differ = {k: (found.get(k), v) for k, v in spec.items() if found.get(k) != v}
    differ.update({k: (v, None) for k, v in found.items() if k not in spec})
    if differ:
        text = ", ".join(f"{k}: on disk {a!r}, asked {b!r}" for k, (a, b) in sorted(differ.items()))
        raise GeneratedSetMismatch(f"{folder} was generated with other options ({text}); {fix}")


def write_atomically(folder: str | os.PathLike, marker: str, fill, spec: dict | None = None) -> Path:
    """Create ``folder`` by ``fill(scratch)`` on a scratch folder renamed at the end (no half-written set is
    ever visible); a no-op when ``folder/marker`` exists, also when another process finished first. ``spec``: the
    generator's options, written to ``generator.json``; a set that exists is checked against them
    (:class:`GeneratedSetMismatch` when it was written with others: never a silent reuse of another set)."""
    folder = Path(folder)
    if (folder / marker).is_file():
        if spec is not None:
            check_spec(folder, spec)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        fill(scratch)
        if spec is not None:
            (scratch / SPEC_FILE).write_text(json.dumps(spec, indent=1, sort_keys=True))
        try:
            os.replace(scratch, folder)
        except OSError:  # another process finished first
            if not (folder / marker).is_file():
                raise
            if spec is not None:
                check_spec(folder, spec)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def write_shapes(folder: str | os.PathLike, *, num_train: int = 1000, num_val: int = 100, size: int = 128,
                 max_objects: int = 4, seed: int = 0) -> Path:
    """Write the whole set into ``folder`` (atomically: a scratch folder renamed at the end). No-op if present
    with the same options; a set written with other ones is an error (:class:`GeneratedSetMismatch`)."""
    def fill(scratch: Path) -> None:
        (scratch / "annotations").mkdir()
        for split, n, first_id, offset in (("train", num_train, 1, 0), ("val", num_val, 1_000_001, 1)):
            rng = np.random.default_rng([seed, offset])
            data = write_split(scratch, split, n, rng, first_id, size=size, max_objects=max_objects)
            (scratch / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))

    spec = {"generator": "coco_shapes", "num_train": num_train, "num_val": num_val, "size": size,
            "max_objects": max_objects, "seed": seed}
    return write_atomically(folder, "annotations/instances_val2017.json", fill, spec)


class GeneratedShapesMixin:
    """The generated-set part of a COCO-format DataModule over this set (boxes or patches): the set is written
    once to ``self.folder`` from the hparams ``num_train``, ``num_val``, ``image_size``, ``max_objects``,
    ``generator_seed`` (a set written with other options is an error, :func:`check_spec`), in ``prepare_data``
    and again (idempotent) in ``setup`` for processes that skipped ``prepare_data``; ``root``/``subdir`` name it."""

    def source(self) -> str:
        return generated_source(self.hparams.root, self.hparams.subdir)

    def prepare_data(self) -> None:
        hp = self.hparams
        write_shapes(self.folder, num_train=hp.num_train, num_val=hp.num_val, size=hp.image_size,
                     max_objects=hp.max_objects, seed=hp.generator_seed)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()
        super().setup(stage)
