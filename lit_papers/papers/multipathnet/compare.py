"""Paired bootstrap of the COCO box AP difference between two runs tested on the same images, from their official
results files (``<run>/coco_results_test.json``): the test images are resampled with replacement (the same
resample for both runs), each resample evaluated by pycocotools as its own ground truth (a drawn image gets a new
id, so an image drawn twice counts twice), and the 2.5 / 97.5 percentiles of AP(b) - AP(a) reported.

    python -m lit_papers.papers.multipathnet.compare DATA_FOLDER RUN_A RUN_B [--reps 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def box_ap(gt: dict, dets: list[dict]) -> float:
    """pycocotools box AP (IoU 0.5:0.95, 100 detections) of ``dets`` on the ground truth dict ``gt``."""
    coco = _coco(gt)
    if not dets:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        result = coco.loadRes(dets)
        ev = COCOeval(coco, result, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def resample(gt: dict, runs: list[list[dict]], ids: list[int]) -> tuple[dict, list[list[dict]]]:
    """The ground truth and the runs' detections restricted to ``ids`` (with repeats), image k renamed k + 1."""
    images = {im["id"]: im for im in gt["images"]}
    anns: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    by_run = []
    for dets in runs:
        table: dict[int, list[dict]] = {}
        for d in dets:
            table.setdefault(d["image_id"], []).append(d)
        by_run.append(table)
    new_images, new_anns, new_runs = [], [], [[] for _ in runs]
    for k, image_id in enumerate(ids, start=1):
        new_images.append({**images[image_id], "id": k})
        for a in anns.get(image_id, []):
            new_anns.append({**a, "image_id": k, "id": len(new_anns) + 1})
        for out, table in zip(new_runs, by_run):
            out += [{**d, "image_id": k} for d in table.get(image_id, [])]
    return {**gt, "images": new_images, "annotations": new_anns}, new_runs


def paired_bootstrap(gt: dict, dets_a: list[dict], dets_b: list[dict], *, reps: int = 200, seed: int = 0) -> dict:
    ids = sorted(im["id"] for im in gt["images"])
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(reps):
        draw = rng.choice(ids, size=len(ids), replace=True).tolist()
        g, (a, b) = resample(gt, [dets_a, dets_b], draw)
        diffs.append(box_ap(g, b) - box_ap(g, a))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"ap_a": box_ap(gt, dets_a), "ap_b": box_ap(gt, dets_b), "diff_low": float(low), "diff_high": float(high),
            "reps": reps, "images": len(ids)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="val2017")
    args = parser.parse_args(argv)
    gt = json.loads((args.data / "annotations" / f"instances_{args.split}.json").read_text())
    runs = [json.loads((r / "coco_results_test.json").read_text()) for r in (args.run_a, args.run_b)]
    print(json.dumps({"a": str(args.run_a), "b": str(args.run_b),
                      **paired_bootstrap(gt, *runs, reps=args.reps, seed=args.seed)}))


if __name__ == "__main__":
    main()
