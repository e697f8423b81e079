"""VOCDataModule on the real VOC sample (../shared/data/voc)."""

from __future__ import annotations

import pytest
import torch

from lit_papers.data.download import DatasetError
from lit_papers.data.voc import VOC_CLASSES, VOCDataModule, VOCDetection, parse_voc_xml


def test_voc2007_boxes_labels_difficult(shared_data):
    devkit = shared_data / "voc" / "VOCdevkit"
    ds = VOCDetection(devkit, ["2007_test"])
    assert len(ds) == 5
    ann = parse_voc_xml(devkit / "VOC2007" / "Annotations" / "000001.xml")
    assert [o["name"] for o in ann["objects"]] == ["dog", "person"]
    # official 000001.xml: dog xmin 48 ymin 240 xmax 195 ymax 371 (1-based inclusive) -> (47, 239, 195, 371)
    assert ann["objects"][0]["box"] == [47.0, 239.0, 195.0, 371.0]
    image, target = ds[0]
    assert image.shape == (3, 500, 353)
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("person") + 1]
    assert torch.equal(target["boxes"][0], torch.tensor([47.0, 239.0, 195.0, 371.0]))
    assert len(ds.coco.anns) == sum(len(a["objects"]) for _, _, a in ds.items)


def test_voc07_plus_12_and_datamodule(shared_data):
    dm = VOCDataModule(root=str(shared_data), train_splits=["2007_trainval", "2012_trainval"], test_splits=["2007_test"],
                       min_size=300, max_size=500, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 10
    images, targets = next(iter(dm.train_dataloader()))
    assert len(images) == 2 and all(min(i.shape[1:]) == 300 or max(i.shape[1:]) == 500 for i in images)
    gt = dm.datasets["test"].voc_ground_truth()
    assert sum(len(b) for imgs in gt.values() for b, _ in imgs.values()) == len(dm.datasets["test"].coco.anns)


def test_malformed_xml_names_the_file(tmp_path):
    bad = tmp_path / "x.xml"
    bad.write_text("<annotation><size><width>10</width></size>")
    with pytest.raises(DatasetError, match="x.xml"):
        parse_voc_xml(bad)
