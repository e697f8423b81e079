"""Class-agnostic proposal AR (lit_papers.metrics.proposals): a hand-computed case, per-object AR vs pycocotools'
own accumulated recall (and its summarize() AR numbers) on known proposals, segments, sizes, crowd."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from lit_papers.metrics.proposals import proposal_recall, recall_from_cocoeval, run_cocoeval


def _gt(images: dict[int, list[tuple[list[float], int]]], size: int = 200) -> COCO:
    """{image id: [(xywh, iscrowd)]} -> a COCO ground truth (two categories, masks = filled boxes)."""
    anns = []
    for image_id, objects in images.items():
        for box, crowd in objects:
            x, y, w, h = box
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1 + len(anns) % 2, "bbox": box,
                         "area": float(w * h), "iscrowd": crowd, "segmentation": [poly]})
    coco = COCO()
    coco.dataset = {"images": [{"id": i, "height": size, "width": size} for i in images], "annotations": anns,
                    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _rec(image_id, box, score, size=200, cat=7):
    x, y, w, h = box
    m = np.zeros((size, size), np.uint8)
    m[int(round(y)):int(round(y + h)), int(round(x)):int(round(x + w))] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"image_id": image_id, "category_id": cat, "bbox": list(map(float, box)), "score": score,
            "segmentation": rle}


def test_hand_computed_ar():
    # one 100x100 object; a proposal covering 72 of its columns (IoU 0.72) ranked first: matched at IoU thresholds
    # 0.50, 0.55, 0.60, 0.65, 0.70 -> recall 5/10 at every k. A perfect proposal ranked 11th -> AR@100 = 1.
    gt = _gt({1: [([0, 0, 100, 100], 0)]})
    records = [_rec(1, [0, 0, 72, 100], 0.99)] + [_rec(1, [150, 150, 10, 10], 0.9 - i / 100) for i in range(9)]
    records.append(_rec(1, [0, 0, 100, 100], 0.5))
    out = proposal_recall(gt, records, "bbox", max_dets=(1, 10, 100))
    assert out["AR1"] == pytest.approx(0.5) and out["AR10"] == pytest.approx(0.5)
    assert out["AR100"] == pytest.approx(1.0) and out["AR100_n"] == 1
    assert out["AR100_large"] == pytest.approx(1.0) and out["AR100_small"] == -1 and out["AR100_small_n"] == 0
    # the proposal's category (7) matches no ground truth category: class-agnostic (useCats = 0) ignores it
    seg = proposal_recall(gt, records, "segm", max_dets=(1, 10, 100))
    assert seg["AR1"] == pytest.approx(0.5) and seg["AR100"] == pytest.approx(1.0)


def test_two_objects_one_proposal_each_and_a_missed_image():
    gt = _gt({1: [([0, 0, 100, 100], 0), ([120, 120, 40, 40], 0)], 2: [([10, 10, 50, 50], 0)]})
    # object 1: IoU 0.9 (9 thresholds: .50..0.90); object 2: IoU 0.6 (3 thresholds); image 2: no proposal at all
    records = [_rec(1, [0, 0, 90, 100], 0.9), _rec(1, [120, 120, 24, 40], 0.8)]
    out = proposal_recall(gt, records, "bbox", image_ids=[1, 2])
    assert out["AR10"] == pytest.approx((0.9 + 0.3 + 0.0) / 3)
    assert out["AR10_n"] == 3
    assert out["AR10_ci95"] == pytest.approx(1.959963984540054 * np.std([0.9, 0.3, 0.0], ddof=1) / np.sqrt(3))


def test_per_object_ar_equals_pycocotools_on_random_proposals():
    rng = np.random.default_rng(0)
    images = {}
    for i in range(1, 7):
        objs = []
        for _ in range(rng.integers(1, 5)):
            w, h = rng.uniform(8, 120, size=2)
            x, y = rng.uniform(0, 200 - w), rng.uniform(0, 200 - h)
            objs.append(([round(x, 1), round(y, 1), round(w, 1), round(h, 1)], int(rng.random() < 0.1)))
        images[i] = objs
    gt = _gt(images)
    records = []
    for i, objs in images.items():
        for _ in range(60):  # jittered copies of the objects plus random boxes, random scores
            if rng.random() < 0.6:
                x, y, w, h = objs[rng.integers(len(objs))][0]
                box = [x + rng.normal(0, 0.15 * w), y + rng.normal(0, 0.15 * h), w * rng.uniform(0.7, 1.3),
                       h * rng.uniform(0.7, 1.3)]
            else:
                w, h = rng.uniform(5, 100, size=2)
                box = [rng.uniform(0, 190 - w), rng.uniform(0, 190 - h), w, h]
            box = [max(0.0, box[0]), max(0.0, box[1]), max(1.0, box[2]), max(1.0, box[3])]
            records.append(_rec(i, box, float(rng.random())))
    for iou_type in ("bbox", "segm"):
        ours = proposal_recall(gt, records, iou_type, max_dets=(1, 10, 100))
        ev = run_cocoeval(gt, records, iou_type, images, max_dets=(1, 10, 100))
        for area, suffix in (("all", ""), ("small", "_small"), ("medium", "_medium"), ("large", "_large")):
            oracle = recall_from_cocoeval(ev, area)
            for k in (1, 10, 100):
                assert ours[f"AR{k}{suffix}"] == pytest.approx(oracle[k], abs=1e-12), (iou_type, area, k)
        with contextlib.redirect_stdout(io.StringIO()):
            ev.summarize()  # stats[6:9] = AR@maxDets, stats[9:12] = AR small/medium/large at the largest maxDet
        np.testing.assert_allclose([ours["AR1"], ours["AR10"], ours["AR100"], ours["AR100_small"],
                                    ours["AR100_medium"], ours["AR100_large"]], ev.stats[6:12], atol=1e-12)


def test_no_proposals_means_zero_recall():
    gt = _gt({1: [([0, 0, 100, 100], 0)]})
    out = proposal_recall(gt, [], "segm")
    assert out["AR100"] == 0.0 and out["AR100_n"] == 1 and out["AR100_small"] == -1


def test_named_sets_and_their_paired_gain():
    import torch

    from lit_papers.metrics.proposals import ProposalSets

    gt = _gt({1: [([0, 0, 100, 100], 0), ([120, 120, 40, 40], 0)]})

    def props(boxes, scores):
        masks = torch.zeros(len(boxes), 200, 200, dtype=torch.bool)
        for i, (x, y, w, h) in enumerate(boxes):
            masks[i, y:y + h, x:x + w] = True
        xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=torch.float32)
        return {"boxes": xyxy, "scores": torch.tensor(scores), "masks": masks}

    sets = ProposalSets(gt, max_dets=(10,), keep_images=1, keep_top=1, default_name="refined")
    sets.update(1, {"": props([(0, 0, 90, 100), (120, 120, 40, 40)], [0.9, 0.8]),  # IoU 0.9 and 1.0
                    "coarse": props([(0, 0, 60, 100), (120, 120, 24, 40)], [0.9, 0.8])},  # IoU 0.6 and 0.6
                image=torch.zeros(3, 200, 200))
    out = sets.compute()
    assert out["segm_AR10"] == pytest.approx((0.9 + 1.0) / 2) and out["coarse_segm_AR10"] == pytest.approx(0.3)
    assert out["gain_over_coarse_segm_AR10"] == pytest.approx((0.9 - 0.3 + 1.0 - 0.3) / 2)
    assert out["gain_over_coarse_segm_AR10_n"] == 2
    assert out["gain_over_coarse_box_AR10_ci95"] == pytest.approx(1.959963984540054 * np.std([0.6, 0.7], ddof=1)
                                                                 / np.sqrt(2))
    assert list(sets.examples["panels"]) == ["refined", "coarse"] and sets.examples["panels"]["coarse"][0].shape[0] == 1
