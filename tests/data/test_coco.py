"""COCODataModule / COCODetection on the real COCO sample and on hand-made annotation files; augmentation keeps
boxes, masks and labels aligned (property tests); aspect-ratio grouping; the shapes generator."""

from __future__ import annotations

import json
from collections import Counter

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from lit_papers.data.coco import (
    COCODataModule,
    COCODetection,
    apply_transform,
    coco_targets,
    load_coco,
    resize_transform,
)
from lit_papers.data.download import DatasetError, DatasetMissingError
from lit_papers.data.grouping import GroupedBatchSampler
from lit_papers.data.samplers import ShardSampler
from lit_papers.data.shapes import CATEGORIES, GeneratedSetMismatch, write_shapes


@pytest.fixture(scope="module")
def coco_dir(shared_data):
    return shared_data / "coco"


def test_real_coco_targets(coco_dir):
    ds = COCODetection(coco_dir / "val2017", coco_dir / "annotations" / "instances_val2017.json")
    assert len(ds) == 79 and len(ds.cat_ids) == 80 and ds.cat_ids[-1] == 90  # non-contiguous ids
    image, target = ds[ds.ids.index(139)]
    assert image.dtype == torch.float32 and image.shape == (3, 426, 640) and 0 <= image.min() and image.max() <= 1
    anns = [a for a in ds.coco.imgToAnns[139] if not a["iscrowd"]]
    assert len(target["labels"]) == len(anns)
    for box, label, mask, ann in zip(target["boxes"], target["labels"], target["masks"], anns):
        x, y, w, h = ann["bbox"]
        assert torch.allclose(box, torch.tensor([x, y, x + w, y + h]), atol=1e-3)  # xyxy
        assert ds.cat_ids[int(label) - 1] == ann["category_id"]  # mapping back to COCO ids
        assert int(mask.sum()) == pytest.approx(ann["area"], rel=0.05)  # polygon mask
    assert target["image_id"] == 139 and target["orig_size"] == (426, 640)


def test_crowd_rle_is_not_a_training_target(coco_dir):
    coco = load_coco(coco_dir / "annotations" / "instances_train2017.json")
    crowd_image = next(a["image_id"] for a in coco.anns.values() if a["iscrowd"])
    stats = Counter()
    cats = {c: i + 1 for i, c in enumerate(sorted(coco.cats))}
    t = coco_targets(coco, crowd_image, cats, stats=stats)
    n_crowd = sum(a["iscrowd"] for a in coco.imgToAnns[crowd_image])
    assert stats["crowd"] == n_crowd and len(t["labels"]) == len(coco.imgToAnns[crowd_image]) - n_crowd
    crowd = next(a for a in coco.imgToAnns[crowd_image] if a["iscrowd"])
    assert isinstance(crowd["segmentation"]["counts"], list)  # uncompressed RLE decodes through annToMask
    assert coco.annToMask(crowd).sum() > 0


def _write(tmp_path, anns, *, size=(40, 60), drop_keys=("info", "licenses"), images=1):
    folder = tmp_path / "coco"
    (folder / "annotations").mkdir(parents=True)
    (folder / "train2017").mkdir()
    h, w = size
    imgs = []
    for i in range(1, images + 1):
        cv2.imwrite(str(folder / "train2017" / f"{i:012d}.png"), np.full((h, w, 3), 100, np.uint8))
        imgs.append({"id": i, "file_name": f"{i:012d}.png", "height": h, "width": w})
    data = {"info": {}, "licenses": [], "images": imgs, "annotations": anns,
            "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]}
    for k in drop_keys:
        data.pop(k)
    (folder / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    return folder


def test_quirks_are_counted_not_crashing(tmp_path):
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 5, 10, 8], "area": 80, "iscrowd": 0,
         "segmentation": [[5, 5, 15, 5, 15, 13, 5, 13]]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 10, 0, 5], "area": 0, "iscrowd": 0, "segmentation": []},
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [70, 50, 10, 10], "area": 100, "iscrowd": 0,
         "segmentation": []},  # outside a 60x40 image
        {"id": 4, "image_id": 1, "category_id": 3, "bbox": [50, 30, 20, 20], "area": 100, "iscrowd": 0,
         "segmentation": []},  # partly outside: clipped, kept (box mask)
    ]
    folder = _write(tmp_path, anns, images=2)  # image 2 has no annotation
    ds = COCODetection(folder / "train2017", folder / "annotations" / "instances_train2017.json", train=True)
    assert ds.stats["degenerate"] == 1 and ds.stats["outside"] == 1 and ds.stats["clipped"] == 2
    assert ds.stats["images_without_objects"] == 1 and ds.ids == [1]
    _, t = ds[0]
    assert t["labels"].tolist() == [2, 1]  # category 7 -> 2, 3 -> 1
    assert t["boxes"][1].tolist() == [50, 30, 60, 40]
    assert t["masks"].shape == (2, 40, 60) and t["masks"][1].sum() == 10 * 10
    eval_ds = COCODetection(folder / "train2017", folder / "annotations" / "instances_train2017.json")
    assert eval_ds.ids == [1, 2]  # evaluation keeps every image
    assert len(eval_ds[1][1]["labels"]) == 0


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(DatasetMissingError, match="instances_val2017.json"):
        load_coco(tmp_path / "annotations" / "instances_val2017.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json"):
        load_coco(bad)
    folder = _write(tmp_path, [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "area": 25,
                                "iscrowd": 0, "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}])
    (folder / "train2017" / "000000000001.png").write_bytes(b"\x89PNG truncated")
    ds = COCODetection(folder / "train2017", folder / "annotations" / "instances_train2017.json")
    with pytest.raises(DatasetError, match="000000000001.png"):
        ds[0]


def _random_instance_target(rng, h, w, n):
    masks = np.zeros((n, h, w), np.uint8)
    boxes = []
    for i in range(n):
        x0, y0 = rng.integers(0, w - 4), rng.integers(0, h - 4)
        x1, y1 = rng.integers(x0 + 2, w + 1), rng.integers(y0 + 2, h + 1)
        masks[i, y0:y1, x0:x1] = 1
        boxes.append([x0, y0, x1, y1])
    return {"boxes": np.array(boxes, np.float32), "labels": rng.integers(1, 5, n).astype(np.int64), "masks": masks}


@pytest.mark.parametrize("trial", range(12))
def test_augmentation_keeps_instances_aligned(trial):
    """Random crops, flips and resizes: every kept box is its mask's tight box, labels travel with them, and
    an object cropped away loses box, mask and label together."""
    rng = np.random.default_rng(trial)
    h, w = int(rng.integers(30, 90)), int(rng.integers(30, 90))
    target = _random_instance_target(rng, h, w, int(rng.integers(1, 6)))
    # encode each object's identity in its mask values to check the pairing after the transform
    transform = resize_transform(48, 80, hflip=0.5, extra=[A.RandomCrop(height=h // 2, width=w // 2, p=1.0)])
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    labelled = dict(target, masks=target["masks"] * (np.arange(len(target["labels"]))[:, None, None] + 1).astype(np.uint8))
    out_image, out = apply_transform(transform, image, labelled, seed=trial)
    assert out_image.shape[:2] == out["masks"].shape[1:]
    assert len(out["boxes"]) == len(out["labels"]) == len(out["masks"])
    for box, label, mask in zip(out["boxes"], out["labels"], out["masks"]):
        ids = set(np.unique(mask)) - {0}
        assert len(ids) == 1  # one source object per mask
        source = int(ids.pop()) - 1
        assert label == target["labels"][source]
        ys, xs = np.nonzero(mask)
        tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        scale = max(out_image.shape[0] / (h // 2), out_image.shape[1] / (w // 2))
        assert np.abs(box - tight).max() <= 0.5 + scale  # nearest-neighbour mask resize vs the exact box
    # objects entirely cropped away are gone from all three
    assert len(out["labels"]) <= len(target["labels"])


def test_augmentation_is_reproducible_from_seed():
    rng = np.random.default_rng(0)
    target = _random_instance_target(rng, 64, 64, 3)
    transform = resize_transform(64, 64, hflip=0.5)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    flips = {apply_transform(transform, image, target, seed=s)[1]["boxes"][0, 0].item() for s in range(16)}
    assert len(flips) == 2  # both outcomes occur
    a = apply_transform(transform, image, target, seed=5)[1]["boxes"]
    b = apply_transform(transform, image, target, seed=5)[1]["boxes"]
    assert np.array_equal(a, b)


def test_short_side_resize(coco_dir):
    dm = COCODataModule(root=str(coco_dir.parent), min_size=200, max_size=250, batch_size=2, num_workers=0)
    dm.setup("validate")
    image, target = dm.datasets["val"][0]
    h, w = image.shape[1:]
    assert min(h, w) == 200 or max(h, w) == 250
    assert max(h, w) <= 250
    sy, sx = target["scale"]
    assert h == round(target["orig_size"][0] * sy) and w == round(target["orig_size"][1] * sx)


def test_grouped_batches_are_pure_and_equal_across_ranks():
    groups = [0, 1] * 13 + [0] * 5  # 31 images
    counts = []
    for rank in range(2):
        sampler = ShardSampler(len(groups), seed=3, rank=rank, world_size=2)
        batches = list(GroupedBatchSampler(sampler, groups, 4))
        counts.append(len(batches))
        assert len(batches) == len(sampler) // 4
        assert sum(len({groups[i] for i, _ in b}) == 1 for b in batches) >= len(batches) - 1
    assert counts[0] == counts[1]


def test_shapes_written_in_coco_format(tmp_path):
    folder = write_shapes(tmp_path / "coco" / "shapes", num_train=6, num_val=3, size=64, seed=1)
    coco = load_coco(folder / "annotations" / "instances_train2017.json")
    assert [c["name"] for c in coco.cats.values()] == [c["name"] for c in CATEGORIES]
    assert len(coco.imgs) == 6 and len(coco.anns) >= 6
    for ann in coco.anns.values():
        assert isinstance(ann["segmentation"], list) and all(len(p) >= 6 for p in ann["segmentation"])
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], 64, 64))
        assert mask_utils.area(rle) == pytest.approx(ann["area"])
    # deterministic: a second write with the same seed gives the same JSON
    again = write_shapes(tmp_path / "again" / "shapes", num_train=6, num_val=3, size=64, seed=1)
    assert (again / "annotations" / "instances_train2017.json").read_text() == \
        (folder / "annotations" / "instances_train2017.json").read_text()


def test_a_generated_set_is_never_reused_with_other_options(tmp_path):
    """A set written with other options (here 6 training images where 8 are asked: once a 16-image set from a quick
    run made every 1000-image config train on 16) is an error naming the folder and the difference."""
    folder = write_shapes(tmp_path / "shapes", num_train=6, num_val=3, size=64, seed=1)
    assert json.loads((folder / "generator.json").read_text())["num_train"] == 6
    stamp = (folder / "annotations" / "instances_train2017.json").stat().st_mtime_ns
    assert write_shapes(folder, num_train=6, num_val=3, size=64, seed=1) == folder  # same options: reused
    assert (folder / "annotations" / "instances_train2017.json").stat().st_mtime_ns == stamp
    with pytest.raises(GeneratedSetMismatch, match=r"shapes was generated with other options \(num_train: on disk 6, "
                                                   r"asked 8\); delete .*shapes.* or give the datamodule another subdir"):
        write_shapes(folder, num_train=8, num_val=3, size=64, seed=1)
    (folder / "generator.json").unlink()  # a set from before the record existed cannot be checked
    with pytest.raises(GeneratedSetMismatch, match="without generator.json"):
        write_shapes(folder, num_train=6, num_val=3, size=64, seed=1)
