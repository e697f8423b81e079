"""The generated VOC-format shapes set: layout and quirks against the real VOC XML, the devkit palette by hand,
segmentation read by the same VOCDataModule, and the COCO shapes set unchanged by the shared drawing."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_papers.data.download import DatasetError
from lit_papers.data.voc import (
    IGNORE_INDEX,
    VOCDetection,
    VOCSegmentation,
    collate_segmentation,
    parse_voc_xml,
    read_label_png,
    voc_colormap,
)
from lit_papers.data.voc_shapes import SHAPE_CLASSES, VOCShapesDataModule, save_palette_png, write_voc_shapes

BASE = Path("VOCdevkit") / "VOC2012"


@pytest.fixture(scope="module")
def voc_set(tmp_path_factory) -> Path:
    return write_voc_shapes(tmp_path_factory.mktemp("vocshapes") / "shapes", num_train=30, num_val=10, size=64,
                            seed=0)


def _tree_hash(folder: Path) -> str:
    """Hash of the generated images and annotations (not generator.json, the record of the options, newer)."""
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != "generator.json":
            h.update(str(f.relative_to(folder)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_coco_shapes_output_is_byte_identical_to_before_the_shared_drawing(tmp_path):
    from lit_papers.data.shapes import write_shapes

    # hash of this exact call computed on main before render_scene/write_atomically were split out (commit 7869666)
    folder = write_shapes(tmp_path / "s", num_train=6, num_val=3, size=64, seed=3)
    assert _tree_hash(folder) == "aa5cec9da79ad37772c561a653a1887fb9d83279865445b406b54c5b2083bdd5"
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no scratch folder left behind


def test_voc_colormap_by_hand():
    cmap = voc_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    # index bits (b2 b1 b0) go to (blue, green, red) at bit 7, the next three at bit 6, ...
    assert cmap[0].tolist() == [0, 0, 0]
    assert cmap[1].tolist() == [128, 0, 0]  # aeroplane
    assert cmap[2].tolist() == [0, 128, 0]  # bicycle
    assert cmap[3].tolist() == [128, 128, 0]  # bird
    assert cmap[8].tolist() == [64, 0, 0]  # cat: 8 = 0b001_000 -> red bit 6
    assert cmap[15].tolist() == [192, 128, 128]  # person: 0b001_111
    assert cmap[20].tolist() == [0, 64, 128]  # tvmonitor: 0b010_100
    assert cmap[255].tolist() == [224, 224, 192]  # void: 0b11_111_111


def _tags(node: ET.Element, optional: set[str]) -> list:
    """Nested element order, without the optional elements."""
    return [(child.tag, _tags(child, optional)) for child in node if child.tag not in optional]


def test_xml_has_the_tags_and_order_of_the_real_voc_xml(voc_set, shared_data):
    real = ET.parse(shared_data / "voc" / "VOCdevkit" / "VOC2012" / "Annotations" / "2007_000027.xml").getroot()
    optional = {"owner", "flickrid", "part"}  # present in some real files only
    generated = sorted((voc_set / BASE / "Annotations").glob("*.xml"))
    assert len(generated) == 40
    ours = ET.parse(generated[0]).getroot()
    real_tags, our_tags = _tags(real, optional), _tags(ours, optional)
    # same top level (with one object kept) and the same object layout
    first_object = [t for t in real_tags if t[0] == "object"][0]
    assert [t for t in our_tags if t[0] != "object"] == [t for t in real_tags if t[0] != "object"]
    assert all(t == first_object for t in our_tags if t[0] == "object")
    assert real.findtext("segmented") in ("0", "1") and ours.findtext("segmented") == "1"
    # parsed by the same parser into the same structure
    ann, real_ann = parse_voc_xml(generated[0]), parse_voc_xml(shared_data / "voc" / "VOCdevkit" / "VOC2012"
                                                                 / "Annotations" / "2007_000027.xml")
    assert ann.keys() == real_ann.keys() and ann["objects"][0].keys() == real_ann["objects"][0].keys()


def test_segmentation_pngs_are_palette_images_with_void_borders_matching_the_xml(voc_set):
    cmap = voc_colormap()
    n_truncated = n_difficult = n_objects = 0
    for xml in sorted((voc_set / BASE / "Annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        cls_img = Image.open(voc_set / BASE / "SegmentationClass" / f"{xml.stem}.png")
        obj_img = Image.open(voc_set / BASE / "SegmentationObject" / f"{xml.stem}.png")
        assert cls_img.mode == "P" and obj_img.mode == "P"
        assert np.array(cls_img.getpalette()[:768]).reshape(256, 3).tolist() == cmap.tolist()
        cls, obj = np.array(cls_img), np.array(obj_img)
        assert set(np.unique(cls)) <= {0, 1, 2, 3, 255}
        assert np.array_equal(cls == 255, obj == 255)  # the same void band in both
        for k, o in enumerate(root.findall("object"), start=1):
            n_objects += 1
            here = obj == k
            assert here.any(), f"{xml.name}: object {k} has no labelled pixel"
            assert set(np.unique(cls[here])) == {SHAPE_CLASSES.index(o.findtext("name")) + 1}
            ys, xs = np.nonzero(here)
            x0, y0, x1, y1 = (int(o.find("bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            assert x0 <= xs.min() + 1 and xs.max() + 1 <= x1 and y0 <= ys.min() + 1 and ys.max() + 1 <= y1
            # void ring: the labelled pixels of an object never touch a pixel of another label (VOC's borders)
            padded = np.pad(here, 1)
            ring = (padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]) & ~here
            assert set(np.unique(obj[ring])) <= {k, 255}
            truncated = o.findtext("truncated") == "1"
            if not (x0 == 1 or y0 == 1 or x1 == 64 or y1 == 64):  # cut by the border -> touches it
                assert not truncated
            n_truncated += truncated
            n_difficult += o.findtext("difficult") == "1"
        assert (cls == 0).any() and (cls == 255).any()
    assert 0 < n_truncated < n_objects and 0 < n_difficult < n_objects


def test_imagesets_main_and_segmentation_listings(voc_set):
    main, seg = voc_set / BASE / "ImageSets" / "Main", voc_set / BASE / "ImageSets" / "Segmentation"
    train, val = (main / "train.txt").read_text().split(), (main / "val.txt").read_text().split()
    assert len(train) == 30 and len(val) == 10 and not set(train) & set(val)
    assert (main / "trainval.txt").read_text().split() == train + val
    for split in ("train", "val", "trainval"):
        assert (seg / f"{split}.txt").read_text() == (main / f"{split}.txt").read_text()
    for line in (main / "circle_train.txt").read_text().splitlines():
        image_id, flag = line.split()
        objs = parse_voc_xml(voc_set / BASE / "Annotations" / f"{image_id}.xml")["objects"]
        circles = [o for o in objs if o["name"] == "circle"]
        expected = -1 if not circles else (0 if all(o["difficult"] for o in circles) else 1)
        assert int(flag) == expected and len(line) == len(image_id) + 3  # the devkit's fixed-width flag


def test_the_voc_readers_read_it(voc_set):
    devkit = voc_set / "VOCdevkit"
    seg = VOCSegmentation(devkit, ["2012_train"], classes=SHAPE_CLASSES)
    image, mask = seg[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert mask.shape == (64, 64) and mask.dtype == torch.int64
    assert np.array_equal(mask.numpy(), np.array(Image.open(devkit / "VOC2012" / "SegmentationClass"
                                                             / f"{seg.items[0][0][5:]}.png")))
    det = VOCDetection(devkit, ["2012_val"], classes=SHAPE_CLASSES)
    assert len(det) == 10 and det.class_names == list(SHAPE_CLASSES)
    with pytest.raises(DatasetError, match="unknown classes"):  # the VOC class list does not fit this set
        VOCDetection(devkit, ["2012_val"])


def test_datamodule_generates_into_the_cache_once_and_batches_segmentation(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("LIT_PAPERS_CACHE", str(tmp_path / "cache"))
    dm = VOCShapesDataModule(num_train=8, num_val=4, image_size=48, batch_size=4, num_workers=0, subdir="t")
    dm.setup("fit")
    assert dm.devkit == tmp_path / "cache" / "generated" / "voc" / "t" / "VOCdevkit"
    assert not str(dm.devkit).startswith(str(shared_data))
    assert dm.num_classes == 4 and len(dm.datasets["train"]) == 8 and len(dm.datasets["test"]) == 4
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 48, 48) and masks.shape == (4, 48, 48) and masks.dtype == torch.int64
    listing = dm.devkit / "VOC2012" / "ImageSets" / "Segmentation" / "trainval.txt"
    mtime = listing.stat().st_mtime_ns
    VOCShapesDataModule(num_train=8, num_val=4, image_size=48, num_workers=0, subdir="t").setup("fit")
    assert listing.stat().st_mtime_ns == mtime  # written once
    assert sorted(p.name for p in dm.folder.parent.iterdir()) == ["t"]  # no scratch left


def test_collate_pads_images_with_zero_and_masks_with_ignore():
    a = (torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.long))
    b = (torch.ones(3, 4, 2), torch.ones(4, 2, dtype=torch.long))
    images, masks = collate_segmentation([a, b])
    assert images.shape == (2, 3, 4, 3) and masks.shape == (2, 4, 3)
    assert images[0, :, 2:].abs().sum() == 0 and (masks[0, 2:] == IGNORE_INDEX).all()
    assert (masks[1, :, 2] == IGNORE_INDEX).all() and (masks[1, :, :2] == 1).all()


def test_bad_label_pngs_name_the_file(tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(DatasetError, match="rgb.png is mode 'RGB'"):
        read_label_png(rgb, expected_hw=(4, 4), num_values=4)
    odd = tmp_path / "odd.png"
    save_palette_png(odd, np.full((4, 4), 7, np.uint8))
    assert np.array(Image.open(odd)).max() == 7
    with pytest.raises(DatasetError, match=r"odd.png holds values \[7\]"):
        read_label_png(odd, expected_hw=(4, 4), num_values=4)
    with pytest.raises(DatasetError, match="odd.png is 4x4 but"):
        read_label_png(odd, expected_hw=(5, 4), num_values=21)
    cut = tmp_path / "cut.png"
    cut.write_bytes(odd.read_bytes()[:-12])
    with pytest.raises(DatasetError, match="cut.png"):
        read_label_png(cut, expected_hw=(4, 4), num_values=21)


def test_segmentation_on_the_real_sample_without_pngs_names_the_missing_listing(shared_data):
    from lit_papers.data.download import DatasetMissingError
    from lit_papers.data.voc import VOCDataModule

    dm = VOCDataModule(root=str(shared_data), task="segmentation", train_splits=["2012_trainval"],
                       test_splits=["2012_trainval"], download=False, num_workers=0)
    with pytest.raises(DatasetMissingError, match=r"ImageSets/Segmentation/trainval.txt not found"):
        dm.setup("fit")


def test_segmentation_flip_moves_image_and_mask_together(voc_set):
    plain = VOCSegmentation(voc_set / "VOCdevkit", ["2012_train"], classes=SHAPE_CLASSES)
    flipped = VOCSegmentation(voc_set / "VOCdevkit", ["2012_train"], classes=SHAPE_CLASSES, hflip=1.0)
    (image, mask), (image_f, mask_f) = plain[(3, 0)], flipped[(3, 0)]
    assert torch.equal(mask_f, mask.flip(-1)) and not torch.equal(mask_f, mask)
    assert torch.equal(image_f, image.flip(-1))


def test_the_same_set_serves_detection(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_PAPERS_CACHE", str(tmp_path / "cache"))
    dm = VOCShapesDataModule(num_train=12, num_val=4, image_size=48, batch_size=2, num_workers=0, subdir="d",
                             task="detection")
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert images[0].shape == (3, 48, 48) and targets[0]["labels"].min() >= 1 and targets[0]["labels"].max() <= 3
    assert dm.datasets["test"].coco.loadCats([1])[0]["name"] == "circle"


def test_setup_finds_a_truncated_label_png(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_PAPERS_CACHE", str(tmp_path / "cache"))
    dm = VOCShapesDataModule(num_train=6, num_val=3, image_size=48, num_workers=0, subdir="bad")
    dm.prepare_data()
    png = dm.devkit / "VOC2012" / "SegmentationClass" / "2012_000002.png"
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"2012_000002.png"):
        dm.setup("fit")
