"""DeepMask patch sampling (lit_papers.data.coco_patches): the paper's centred / contained / scale rules on
hand-made annotations, the crop geometry, sampled triplets, and the real COCO sample end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_papers.data.coco_patches import (
    COCOPatchesDataModule,
    PatchGeometry,
    ShapesPatchesDataModule,
    canonical_scale,
    crop_patch,
    patch_label,
)

G = PatchGeometry()  # the paper's: 224 patch, object 128, +-16 px / 2^(1/4) positives, +-32 px / 2^1 negatives


def test_canonical_positive_and_the_tolerances_by_hand():
    box = np.array([[100.0, 100.0, 164.0, 132.0]])  # 64 x 32 image px, centre (132, 116)
    s = canonical_scale(box[0], G)
    assert s == 2.0  # largest side 64 -> 128 patch px
    assert patch_label(box, (132, 116), s, G) == (1, 0)  # exactly centred, canonical size
    # shifts are in patch px: 16 patch px = 8 image px at scale 2
    assert patch_label(box, (132 + 8, 116 - 8), s, G) == (1, 0)  # +-16 px in x and y: still positive
    assert patch_label(box, (132 + 8.5, 116), s, G) == (0, -1)  # 17 px: neither positive nor negative
    assert patch_label(box, (132, 116 + 16), s, G) == (-1, -1)  # 32 px: negative
    # scale: 2^(1/4) is positive, 2^(1/2) is neither, 2^1 (and 2^-1) negative
    assert patch_label(box, (132, 116), s * 2 ** 0.25, G)[0] == 1
    assert patch_label(box, (132, 116), s * 2 ** -0.25, G)[0] == 1
    assert patch_label(box, (132, 116), s * 2 ** 0.5, G)[0] == 0
    assert patch_label(box, (132, 116), s * 2.0, G)[0] == -1
    assert patch_label(box, (132, 116), s / 2.0, G)[0] == -1


def test_fully_contained_rule_and_several_objects():
    # a narrow patch (object 128 in a 136 patch): a centred object of canonical size but shifted by 8 px pokes out
    g = PatchGeometry(size=136, object_size=128, pos_shift=16, neg_shift=32)
    box = np.array([[0.0, 0.0, 128.0, 64.0]])
    assert patch_label(box, (64, 32), 1.0, g) == (1, 0)
    assert patch_label(box, (64 + 4, 32), 1.0, g) == (1, 0)  # 4 px: 132 px right edge <= 136
    assert patch_label(box, (64 + 8, 32), 1.0, g) == (0, -1)  # 8 px: the left edge leaves the patch -> not positive
    # two objects: positive for the one it is centred on; negative only when far from both
    boxes = np.array([[0.0, 0.0, 64.0, 64.0], [200.0, 0.0, 264.0, 64.0]])
    assert patch_label(boxes, (232, 32), 2.0, G) == (1, 1)
    assert patch_label(boxes, (132, 32), 2.0, G) == (-1, -1)  # 100 image px = 200 patch px from both
    assert patch_label(boxes, (132, 32), 1.0, G) == (-1, -1)  # and at half the canonical scale anyway
    assert patch_label(np.zeros((0, 4)), (10, 10), 1.0, G) == (-1, -1)  # an image without objects: negative
    with pytest.raises(ValueError, match="strictly inside"):
        PatchGeometry(pos_shift=40)


def test_crop_geometry_maps_the_window_onto_the_patch():
    image = np.zeros((40, 60), np.float32)
    image[10:20, 30:40] = 1.0  # a 10x10 square, centre (35, 15)
    out = crop_patch(image, (35.0, 15.0), 2.0, 40, interpolation=0)  # nearest: 20 image px -> 40 patch px
    assert out.shape == (40, 40)
    ys, xs = np.nonzero(out)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 29, 10, 29)  # the square doubled, centred
    half = crop_patch(image, (35.0, 15.0), 2.0, 20, 40, interpolation=0)  # same window at half resolution
    assert np.array_equal(half, out[::2, ::2])
    padded = crop_patch(image, (0.0, 0.0), 1.0, 10, fill=5.0)
    assert padded[0, 0] == 5.0 and padded[-1, -1] == 0.0  # outside the image: fill


def _shapes_module(tmp_path, **kw):
    return ShapesPatchesDataModule(root=str(tmp_path), subdir="s", num_train=6, num_val=2, image_size=96,
                                   max_objects=3, patch_size=112, object_size=64, pos_shift=8, neg_shift=16,
                                   mask_size=28, samples_per_epoch=24, scale_range=(0.5, 8.0), batch_size=8,
                                   num_workers=0, **kw)


def test_sampled_positives_are_centred_objects_and_negatives_are_far(tmp_path):
    dm = _shapes_module(tmp_path)
    dm.setup("fit")
    ds = dm.datasets["train"]
    labels = []
    for i in range(len(ds)):
        patch, mask, label = ds[i]
        assert patch.shape == (3, 112, 112) and mask.shape == (28, 28) and 0 <= patch.min() <= patch.max() <= 1
        labels.append(float(label))
        if label == 1:
            ys, xs = torch.nonzero(mask, as_tuple=True)
            # the object is within +-8 of 112 (= +-2 of 28) of the centre and its largest side 64 * 2^(+-1/4)
            # of 112 (= 13.5..19 of 28), up to occlusion in the generated scenes (visible masks)
            centre = ((ys.min() + ys.max() + 1) / 2 - 14, (xs.min() + xs.max() + 1) / 2 - 14)
            side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
            assert abs(float(centre[0])) <= 4.5 and abs(float(centre[1])) <= 4.5, centre
            assert 6 <= int(side) <= 20
        else:
            assert mask.sum() == 0
    assert 0 < sum(labels) < len(labels)
    again = [ds[i][0] for i in range(3)]
    assert all(torch.equal(a, ds[i][0]) for i, a in enumerate(again))  # deterministic per (seed, epoch, item)
    ds.epoch = 1
    assert not torch.equal(again[0], ds[0][0])  # re-drawn every epoch
    batch = next(iter(dm.train_loader(ds)))
    assert batch[0].shape == (8, 3, 112, 112) and batch[1].shape == (8, 28, 28) and batch[2].shape == (8,)


def test_real_coco_sample_end_to_end(shared_data):
    """Real COCO (../shared/data/coco): loader, patch sampling, and AR of the annotations' own boxes/masks."""
    from lit_papers.metrics.coco_eval import detections_to_coco
    from lit_papers.metrics.proposals import proposal_recall, recall_from_cocoeval, run_cocoeval

    dm = COCOPatchesDataModule(root=str(shared_data), max_train_images=6, max_eval_images=4, samples_per_epoch=8,
                               batch_size=4, num_workers=0, positive_fraction=0.5)
    dm.setup("fit")
    ds = dm.datasets["train"]
    assert len(ds.objects) > 0
    for i in range(4):
        patch, mask, label = ds[i]
        assert patch.shape == (3, 224, 224) and mask.shape == (56, 56)
        assert (mask.sum() > 0) == (label == 1)  # a positive's centred object is in its mask
    val = dm.eval_dataset("val")
    image, target = val[0]
    assert image.shape[0] == 3 and image.shape[1:] == tuple(target["orig_size"])
    # proposals = the non-crowd ground-truth boxes (exact) plus one shifted copy each: AR@10 of the exact boxes is
    # 1 on the objects they cover; a cross-check against pycocotools' accumulated recall
    coco = val.coco
    records = []
    for image_id in val.ids:
        anns = [a for a in coco.imgToAnns[image_id] if not a["iscrowd"]]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float64)
        shifted = boxes + torch.tensor([5.0, 5.0, 5.0, 5.0])
        both = torch.cat([boxes, shifted])
        scores = torch.cat([torch.linspace(1.0, 0.6, len(boxes)), torch.linspace(0.5, 0.1, len(boxes))])
        records += detections_to_coco(image_id, both, scores, torch.ones(len(both), dtype=torch.long), [1])
    out = proposal_recall(coco, records, "bbox", image_ids=val.ids)
    ev = run_cocoeval(coco, records, "bbox", val.ids)
    assert out["AR1000"] == pytest.approx(1.0) and out["AR1000_n"] > 0
    assert out["AR10"] == pytest.approx(recall_from_cocoeval(ev)[10])
