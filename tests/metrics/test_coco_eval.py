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


def _toy_coco(n_images: int, identical: bool):
    """A small in-memory COCO ground truth (2 categories) and detections: each image has objects of both
    categories; detections hit, miss or shift them (all images alike when ``identical``)."""
    rng = np.random.default_rng(0)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"})
        r = np.random.default_rng(0) if identical else rng
        for cat in (1, 2, 1):
            x, y = float(r.uniform(0, 60)), float(r.uniform(0, 60))
            box = [x, y, 30.0, 30.0]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box, "area": 900.0,
                         "iscrowd": 0})
            shift = float(r.uniform(0, 15))
            dets.append({"image_id": i, "category_id": cat, "bbox": [x + shift, y, 30.0, 30.0],
                         "score": float(r.uniform(0.1, 1.0))})
        dets.append({"image_id": i, "category_id": 2, "bbox": [5.0, 5.0, 20.0, 20.0], "score": float(r.uniform(0, 1))})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt, dets


def _evaluated(gt, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(dets))), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_a_resample_without_repeats_is_cocoeval_on_that_subset():
    """The oracle for the reordered per-image matches: a pick of distinct images gives the AP that pycocotools
    computes from scratch on just those images; the evaluator is left as it was."""
    from lit_papers.metrics.coco_eval import resampled_ap, resampled_stats

    gt, dets = _toy_coco(8, identical=False)
    ev = _evaluated(gt, dets)
    before = ev.stats.copy()
    for pick in ([0, 2, 3, 7], [5, 1], list(range(8))):
        ids = [i + 1 for i in pick]
        expected = evaluate_records(gt, dets, "bbox", image_ids=ids)
        assert resampled_ap(ev, [pick])[0] == pytest.approx(expected["AP"], abs=1e-12)
        for name, value in resampled_stats(ev, [pick])[0].items():  # AP, AP50, AP75
            assert value == pytest.approx(expected[name], abs=1e-12), name
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
        ev.summarize()
    assert np.array_equal(ev.stats, before)


def test_bootstrap_interval_is_zero_for_identical_images_and_positive_otherwise():
    from lit_papers.metrics.coco_eval import bootstrap_ap_ci95

    gt, dets = _toy_coco(6, identical=True)  # every resample holds copies of one image: AP cannot move
    assert bootstrap_ap_ci95(_evaluated(gt, dets), resamples=30) == pytest.approx(0.0, abs=1e-12)
    gt, dets = _toy_coco(12, identical=False)
    out = evaluate_records(gt, dets, "bbox", bootstrap=100)
    assert out["AP_n"] == 12 and 0.0 < out["AP_ci95"] < 0.5
    assert out["AP50_n"] == out["AP75_n"] == 12 and 0.0 < out["AP50_ci95"] < 0.5 and 0.0 < out["AP75_ci95"] < 0.5
    assert "AP_ci95" not in evaluate_records(gt, dets, "bbox")  # only when asked for


def test_coco_metrics_logs_the_interval_at_test_only_and_from_enough_images():
    from types import SimpleNamespace

    from lit_papers.detection.evaluators import COCOMetrics

    gt, dets = _toy_coco(24, identical=False)
    dataset = SimpleNamespace(coco=gt, cat_ids=[1, 2])

    def run(stage, n_images, **options):
        metrics = COCOMetrics(write_results_json=False, bootstrap=50, **options)
        metrics.start(dataset, ("bbox",), stage=stage)
        for image_id in range(1, n_images + 1):
            mine = [d for d in dets if d["image_id"] == image_id]
            boxes = torch.tensor([[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]]
                                  for d in mine], dtype=torch.float64)
            metrics.update(image_id, {"boxes": boxes, "scores": torch.tensor([d["score"] for d in mine]),
                                      "labels": torch.tensor([d["category_id"] for d in mine])})
        return metrics.finish()

    test = run("test", 24)
    assert test["bbox_AP_n"] == 24 and test["bbox_AP_ci95"] > 0
    assert test["bbox_AP"] == pytest.approx(evaluate_records(gt, dets, "bbox", image_ids=range(1, 25))["AP"])
    assert "bbox_AP_ci95" not in run("val", 24)  # validation: off unless bootstrap_val
    assert "bbox_AP_ci95" in run("val", 24, bootstrap_val=True)
    assert "bbox_AP_ci95" not in run("test", 10)  # below bootstrap_min_images (20)
