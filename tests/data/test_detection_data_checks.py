"""Issue 17 on the detection datamodules, each case on a corrupted temporary copy of just the files it needs:
truncated images found at setup (2), the per-split summary printed and logged (3), a VOC object without
``<bndbox>`` (8), the missing-data error naming the config key (13), generated data never under the data root (15).
"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from lit_papers.data.coco import COCODataModule, ShapesDataModule
from lit_papers.data.download import DatasetError, DatasetMissingError
from lit_papers.data.voc import VOCDataModule, parse_voc_xml
from tests.conftest import listing_changes, tree_listing


def coco_copy(shared_data, root, n=3, *, split="val2017", extra_anns=()):
    """``root/coco`` with the first ``n`` images of the real val2017 sample and their annotations."""
    src = shared_data / "coco"
    data = json.loads((src / "annotations" / "instances_val2017.json").read_text())
    images = sorted(data["images"], key=lambda i: i["id"])[:n]
    ids = {i["id"] for i in images}
    out = root / "coco"
    (out / "annotations").mkdir(parents=True)
    (out / split).mkdir()
    for info in images:
        shutil.copyfile(src / "val2017" / info["file_name"], out / split / info["file_name"])
    anns = [a for a in data["annotations"] if a["image_id"] in ids] + list(extra_anns)
    sub = {"images": images, "annotations": anns, "categories": data["categories"]}
    (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(sub))
    return out, images


def voc_copy(shared_data, root):
    """``root/voc/VOCdevkit/VOC2007`` copied from the real sample (5 images, trainval = test)."""
    dst = root / "voc" / "VOCdevkit" / "VOC2007"
    shutil.copytree(shared_data / "voc" / "VOCdevkit" / "VOC2007", dst)
    return dst


class RecordingLogger:
    def __init__(self):
        self.params = {}

    def log_hyperparams(self, params):
        self.params.update(params)


def _attach(dm):
    logger = RecordingLogger()
    dm.trainer = SimpleNamespace(loggers=[logger], global_rank=0, world_size=1)
    return logger


def _coco_dm(root, **kw):
    return COCODataModule(root=str(root), train_split="val2017", val_split="val2017", test_split="val2017",
                          min_size=64, max_size=96, num_workers=0, download=False, **kw)


# -- case 2: truncated images are found at setup, before training ------------------------------------------------
def test_coco_truncated_jpeg_fails_setup_naming_the_file(shared_data, tmp_path):
    folder, images = coco_copy(shared_data, tmp_path)
    victim = folder / "val2017" / images[1]["file_name"]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(DatasetError, match=rf"1 of 3 images failed the 'header' check(.|\n)*{images[1]['file_name']}"):
        _coco_dm(tmp_path).setup("fit")
    dm = _coco_dm(tmp_path, verify_images="none")  # no setup check: loading the sample still names the file
    dm.setup("validate")
    with pytest.raises(DatasetError, match=rf"{images[1]['file_name']}.*truncated JPEG"):
        dm.datasets["val"][1]


def test_coco_size_mismatch_with_annotation_fails_setup(shared_data, tmp_path):
    folder, images = coco_copy(shared_data, tmp_path, n=2)
    ann = folder / "annotations" / "instances_val2017.json"
    data = json.loads(ann.read_text())
    data["images"][0]["width"] += 1
    ann.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=rf"{images[0]['file_name']} is {images[0]['width']}x"):
        _coco_dm(tmp_path).setup("validate")


def test_voc_truncated_jpeg_fails_setup(shared_data, tmp_path):
    devkit = voc_copy(shared_data, tmp_path)
    victim = devkit / "JPEGImages" / "000003.jpg"
    victim.write_bytes(victim.read_bytes()[:4000])
    dm = VOCDataModule(root=str(tmp_path), min_size=100, max_size=150, num_workers=0, download=False)
    with pytest.raises(DatasetError, match=r"000003\.jpg is a truncated JPEG"):
        dm.setup("fit")
    dm = VOCDataModule(root=str(tmp_path), min_size=100, max_size=150, num_workers=0, download=False,
                       verify_images="none")
    dm.setup("fit")
    index = [p.name for _, p, _ in dm.datasets["test"].items].index("000003.jpg")
    with pytest.raises(DatasetError, match=r"000003\.jpg is a truncated JPEG"):
        dm.datasets["test"][index]


# -- case 3: counted skips are printed and logged --------------------------------------------------------------
def test_coco_setup_prints_and_logs_counts_per_split(shared_data, tmp_path, capsys):
    first = json.loads((shared_data / "coco" / "annotations" / "instances_val2017.json").read_text())["images"]
    image_id = min(i["id"] for i in first)
    extra = [{"id": 10**9, "image_id": image_id, "category_id": 1, "bbox": [5, 5, 0, 4], "area": 0, "iscrowd": 0,
              "segmentation": []},  # degenerate
             {"id": 10**9 + 1, "image_id": image_id, "category_id": 1, "bbox": [5000, 5, 10, 10], "area": 100,
              "iscrowd": 0, "segmentation": []}]  # outside
    coco_copy(shared_data, tmp_path, n=3, extra_anns=extra)
    dm = _coco_dm(tmp_path)
    logger = _attach(dm)
    dm.setup("fit")
    err = capsys.readouterr().err
    train_line = next(line for line in err.splitlines() if line.startswith("[lit-papers] data train:"))
    assert "degenerate=1" in train_line and "outside=1" in train_line and str(tmp_path / "coco") in train_line
    assert "images checked (header): " in train_line
    assert any(line.startswith("[lit-papers] data val:") for line in err.splitlines())
    assert logger.params["data/train/dropped_degenerate"] == 1 and logger.params["data/train/dropped_outside"] == 1
    assert logger.params["data/train/images"] == len(dm.datasets["train"])
    assert logger.params["data/val/images"] == 3 and logger.params["data/val/checked"] == 3


def test_voc_setup_prints_and_logs_counts(shared_data, tmp_path, capsys):
    devkit = voc_copy(shared_data, tmp_path)
    xml = devkit / "Annotations" / "000002.xml"  # one object: make it difficult -> the image has no training object
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>"))
    dm = VOCDataModule(root=str(tmp_path), min_size=100, max_size=150, num_workers=0, download=False)
    logger = _attach(dm)
    dm.setup("fit")
    assert len(parse_voc_xml(xml)["objects"]) == 1
    err = capsys.readouterr().err
    assert "[lit-papers] data train: 2007_trainval" in err and "images_without_objects=1" in err
    assert logger.params["data/train/skipped_images_without_objects"] == 1 and logger.params["data/train/images"] == 4


def test_report_without_trainer_only_prints(shared_data, tmp_path, capsys):
    coco_copy(shared_data, tmp_path, n=1)
    _coco_dm(tmp_path).setup("validate")
    assert "[lit-papers] data val:" in capsys.readouterr().err


# -- case 8: a VOC object without <bndbox> ---------------------------------------------------------------------
def test_voc_object_without_bndbox_names_file_object_and_field(shared_data, tmp_path):
    src = shared_data / "voc" / "VOCdevkit" / "VOC2007" / "Annotations" / "000001.xml"  # objects: dog, person
    text = src.read_text()
    start = text.rindex("<bndbox>")
    end = text.index("</bndbox>", start) + len("</bndbox>")
    bad = tmp_path / "000001.xml"
    bad.write_text(text[:start] + text[end:])  # the person loses its box
    with pytest.raises(DatasetError, match=r"000001\.xml: .*object 1 \('person'\) has no <bndbox>"):
        parse_voc_xml(bad)
    bad.write_text(text.replace("<xmin>48</xmin>", "<xmin></xmin>", 1))
    with pytest.raises(DatasetError, match=r"000001\.xml: .*object 0 \('dog'\) <bndbox> has no <xmin>"):
        parse_voc_xml(bad)
    bad.write_text(text.replace("<ymax>371</ymax>", "<ymax>abc</ymax>", 1))
    with pytest.raises(DatasetError, match=r"object 0 \('dog'\) <bndbox> <ymax> is 'abc', not a number"):
        parse_voc_xml(bad)
    bad.write_text(text.replace("<name>dog</name>", "", 1))
    with pytest.raises(DatasetError, match=r"object 0 has no <name>"):
        parse_voc_xml(bad)
    start, end = text.index("<size>"), text.index("</size>") + len("</size>")
    bad.write_text(text[:start] + text[end:])
    with pytest.raises(DatasetError, match=r"000001\.xml: .*no <size>"):
        parse_voc_xml(bad)


# -- case 13: the missing-data error says which config key chose the folder --------------------------------------
def test_missing_coco_names_the_subdir_key(tmp_path):
    dm = COCODataModule(root=str(tmp_path), subdir="shapes-tiny", num_workers=0)
    dm.prepare_data()  # with a subdir nothing is downloaded
    with pytest.raises(DatasetMissingError) as info:
        dm.setup("fit")
    msg = str(info.value)
    assert "instances_train2017.json" in msg and "data.init_args.subdir = 'shapes-tiny'" in msg
    assert f"data.init_args.root = {str(tmp_path)!r}" in msg and "--data.init_args.subdir null" in msg
    assert not (tmp_path / "coco").exists()


def test_missing_voc_names_the_root_key(tmp_path):
    dm = VOCDataModule(root=str(tmp_path), num_workers=0, download=False)
    with pytest.raises(DatasetMissingError, match=r"trainval\.txt not found(.|\n)*data\.init_args\.root = "):
        dm.setup("fit")


# -- case 15: generated data never goes under the data root ----------------------------------------------------
def test_shapes_generation_leaves_the_data_root_unchanged(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "coco").mkdir(parents=True)
    (data / "coco" / "README").write_text("real data, read-only")
    data.chmod(0o555)  # as ../shared/data (root ignores the bits: the listing is what is checked)
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIT_PAPERS_DATA", str(data))
    monkeypatch.setenv("LIT_PAPERS_CACHE", str(cache))
    before = tree_listing(data)
    try:
        dm = ShapesDataModule(subdir="shapes-tiny", num_train=4, num_val=2, image_size=64, max_objects=1,
                              num_workers=0, aspect_ratio_grouping=False)
        dm.setup("fit")
    finally:
        data.chmod(0o755)
    assert listing_changes(before, tree_listing(data)) == []
    assert dm.folder == cache / "generated" / "coco" / "shapes-tiny"
    assert (dm.folder / "annotations" / "instances_val2017.json").is_file() and len(dm.datasets["train"]) == 4


def test_listing_changes_sees_an_added_and_a_modified_file(tmp_path):
    (tmp_path / "a").write_text("x")
    before = tree_listing(tmp_path)
    (tmp_path / "b").write_text("y")
    (tmp_path / "a").write_text("longer")
    assert listing_changes(before, tree_listing(tmp_path)) == ["added b", "changed a"]
