"""Detections of several runs side by side on the same held-out images, from their official COCO results files
(``<run>/coco_results_test.json``, written by ``lit-papers test``): one row per image, panels [ground truth | run 1 |
run 2 ...], each run's ``top`` best boxes per image (at or above ``score_thresh``) with class and score (drawn by
:func:`lit_papers.callbacks.detections.draw_predictions`).

    python -m lit_papers.papers.multipathnet.pictures OUT.png DATA_FOLDER RUN_DIR [RUN_DIR ...] [--images 6] [--top 3]
        [--titles "Fast R-CNN" "+ skip" ...]

Each column is titled above the grid (``ground truth``, then ``--titles`` or each run's experiment folder name).

``DATA_FOLDER``: the COCO-format folder the runs tested on (``annotations/instances_val2017.json``, ``val2017/``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from pycocotools.coco import COCO
from torchvision.io import write_png
from torchvision.utils import make_grid

from lit_papers.callbacks.detections import draw_predictions
from lit_papers.data.images import read_image


def _xyxy(bbox: list[float]) -> list[float]:
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def with_titles(grid: torch.Tensor, titles: list[str], *, padding: int = 2, height: int = 16) -> torch.Tensor:
    """A white strip of ``height`` px above ``grid`` (uint8 (3, H, W), ``len(titles)`` equal columns separated by
    ``padding``) with each column's title at its left edge."""
    columns = len(titles)
    pitch = (grid.shape[-1] - padding) // columns  # make_grid: W = padding + columns x (tile + padding)
    strip = Image.new("RGB", (grid.shape[-1], height), "white")
    draw, font = ImageDraw.Draw(strip), ImageFont.load_default()
    for i, title in enumerate(titles):
        draw.text((padding + i * pitch + 2, 2), title, fill="black", font=font)
    header = torch.from_numpy(np.asarray(strip)).permute(2, 0, 1).to(grid.dtype)
    return torch.cat([header, grid], dim=1)


def comparison_grid(data: Path, runs: list[Path], *, num_images: int = 6, score_thresh: float = 0.0, top: int = 3,
                    split: str = "val2017", titles: list[str] | None = None) -> torch.Tensor:
    """``titles``: one per run; when given, a header row names the columns (ground truth first)."""
    if titles is not None and len(titles) != len(runs):
        raise ValueError(f"{len(titles)} titles for {len(runs)} runs: give one title per run")
    coco = COCO(str(data / "annotations" / f"instances_{split}.json"))
    cat_ids = sorted(coco.cats)
    names = [coco.cats[c]["name"] for c in cat_ids]
    label = {c: i + 1 for i, c in enumerate(cat_ids)}
    results = [json.loads((run / "coco_results_test.json").read_text()) for run in runs]
    tiles = []
    for image_id in sorted(coco.imgs)[:num_images]:
        info = coco.imgs[image_id]
        image = torch.from_numpy(np.ascontiguousarray(read_image(data / split / info["file_name"])))
        image = image.permute(2, 0, 1).float() / 255  # (3, H, W)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False))
        panels = [([_xyxy(a["bbox"]) for a in anns], [label[a["category_id"]] for a in anns], [1.0] * len(anns))]
        for dets in results:
            mine = sorted((d for d in dets if d["image_id"] == image_id), key=lambda d: -d["score"])[:top]
            panels.append(([_xyxy(d["bbox"]) for d in mine], [label[d["category_id"]] for d in mine],
                           [d["score"] for d in mine]))
        for boxes, labels, scores in panels:
            item = {"image": image, "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "labels": torch.tensor(labels, dtype=torch.int64), "scores": torch.tensor(scores)}
            tiles.append(draw_predictions([item], names, score_thresh=score_thresh, upscale=2))
    grid = make_grid(torch.stack(tiles), nrow=1 + len(runs), padding=2, pad_value=255)
    return grid if titles is None else with_titles(grid, ["ground truth", *titles], padding=2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--score-thresh", type=float, default=0.0)
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--titles", nargs="+", help="one per run (default: each run's experiment folder name)")
    args = parser.parse_args(argv)
    titles = args.titles or [run.resolve().parent.name for run in args.runs]  # <runs>/<paper>/<experiment>/v0
    grid = comparison_grid(args.data, args.runs, num_images=args.images, score_thresh=args.score_thresh,
                           top=args.top, titles=titles)
    write_png(grid, str(args.out))
    print(f"wrote {args.out} (panels: ground truth, {', '.join(str(r) for r in args.runs)})")


if __name__ == "__main__":
    main()
