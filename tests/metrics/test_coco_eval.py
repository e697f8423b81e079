"""Our COCO evaluator against pycocotools' own COCOeval on the official fake detections (cocoapi results/),
restricted to the two val images present in ../shared/data/coco (ids 139 and 802)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lit_papers.data.coco import load_coco
from lit_papers.metrics.coco_eval import STAT_NAMES, COCOEvaluator, evaluate_records, write_results

IDS = (139, 802)


@pytest.fixture(scope="module")
def coco_dir(shared_data):
    return shared_data / "coco"


@pytest.fixture(scope="module")
def gt(coco_dir) -> COCO:
    return load_coco(coco_dir / "annotations" / "instances_val2017.json")


def fake(coco_dir, kind: str) -> list[dict]:
    records = json.loads((coco_dir / "results" / f"instances_val2014_fake{kind}100_results.json").read_text())
    return [r for r in records if r["image_id"] in IDS]


def official(gt: COCO, records: list[dict], iou_type: str) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(json.loads(json.dumps(records)))
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = list(IDS)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("iou_type,kind,expected_ap", [("bbox", "bbox", 0.536), ("segm", "segm", 0.465)])
def test_records_match_cocoeval_exactly(gt, coco_dir, iou_type, kind, expected_ap):
    records = fake(coco_dir, kind)
    assert len(records) == 19  # MANIFEST: 19 detections on images 139 and 802
    ours = evaluate_records(gt, records, iou_type, IDS)
    ref = official(gt, records, iou_type)
    assert [ours[n] for n in STAT_NAMES] == [float(v) for v in ref]  # exact equality
    assert ours["AP"] == pytest.approx(expected_ap, abs=5e-4)  # the numbers MANIFEST.md records


def test_tensor_path_matches_cocoeval(gt, coco_dir):
    """Detections as a model gives them (xyxy tensors, contiguous labels, binary masks) -> the same AP."""
    segm, bbox = fake(coco_dir, "segm"), fake(coco_dir, "bbox")
    assert [(r["image_id"], r["category_id"], r["score"]) for r in segm] == [
        (r["image_id"], r["category_id"], r["score"]) for r in bbox]  # the two files hold the same detections
    records = [{**s, "bbox": b["bbox"]} for s, b in zip(segm, bbox)]
    cat_ids = sorted(gt.cats)
    evaluator = COCOEvaluator(gt, cat_ids)
    for image_id in IDS:
        recs = [r for r in records if r["image_id"] == image_id]
        boxes = torch.tensor([r["bbox"] for r in recs], dtype=torch.float64)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        masks = torch.from_numpy(np.stack([mask_utils.decode(r["segmentation"]) for r in recs]))
        labels = torch.tensor([cat_ids.index(r["category_id"]) + 1 for r in recs])
        evaluator.update(image_id, boxes, torch.tensor([r["score"] for r in recs]), labels, masks)
    stats = evaluator.compute()
    # segm: RLE round trip is exact -> identical numbers; bbox of the segm file = the official boxes.
    ref_segm = official(gt, segm, "segm")
    assert [stats["segm"][n] for n in STAT_NAMES] == pytest.approx([float(v) for v in ref_segm], abs=1e-12)
    ref_bbox = official(gt, bbox, "bbox")
    assert [stats["bbox"][n] for n in STAT_NAMES] == pytest.approx([float(v) for v in ref_bbox], abs=1e-12)


def test_results_json_is_official_format(gt, coco_dir, tmp_path):
    records = fake(coco_dir, "segm")
    path = write_results(records, tmp_path / "results.json")
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(str(path))  # pycocotools reads our file
    assert len(dt.anns) == len(records)


def test_duplicates_from_padding_collapse(gt, coco_dir):
    """Results keyed by image id: evaluating an image twice (padded sampler) does not change AP."""
    records = fake(coco_dir, "bbox")
    cat_ids = sorted(gt.cats)
    ev = COCOEvaluator(gt, cat_ids, ("bbox",))
    for image_id in IDS + (139,):  # 139 twice
        recs = [r for r in records if r["image_id"] == image_id]
        boxes = torch.tensor([r["bbox"] for r in recs], dtype=torch.float64)
        boxes[:, 2:] += boxes[:, :2]
        ev.update(image_id, boxes, torch.tensor([r["score"] for r in recs]),
                  torch.tensor([cat_ids.index(r["category_id"]) + 1 for r in recs]))
    assert ev.compute()["bbox"]["AP"] == pytest.approx(float(official(gt, records, "bbox")[0]), abs=1e-12)


def test_crowd_is_ignore_not_miss(gt):
    """A perfect detector on every non-crowd object scores AP 1 even on images with iscrowd regions:
    crowd ground truth neither needs a detection nor makes a detection on it a false positive."""
    crowd_images = sorted({a["image_id"] for a in gt.anns.values() if a["iscrowd"]})
    assert crowd_images
    records = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt.anns.values() if a["image_id"] in crowd_images and not a["iscrowd"]]
    crowd = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
             for a in gt.anns.values() if a["image_id"] in crowd_images and a["iscrowd"]]
    stats = evaluate_records(gt, records + crowd, "bbox", crowd_images)
    assert stats["AP50"] == pytest.approx(1.0)


def test_empty_results_give_zero(gt):
    assert evaluate_records(gt, [], "bbox", IDS)["AP"] == 0.0
