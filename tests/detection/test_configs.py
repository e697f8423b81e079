"""Every detection config parses into a full CLI config; the Fast R-CNN tiny config runs end to end on real VOC."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(str(p.relative_to(REPO)) for d in ("mask_rcnn", "faster_rcnn") for p in (REPO / "configs" / d).glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS)
def test_config_parses(config):
    """Model and data sections type-check against the constructors (in-process; nothing is instantiated, so
    faithful configs with ``pretrained: true`` download nothing)."""
    import lightning as L
    from jsonargparse import ArgumentParser

    raw = yaml.safe_load((REPO / config).read_text())
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningModule, "model")
    parser.add_subclass_arguments(L.LightningDataModule, "data")
    cfg = parser.parse_object({"model": raw["model"], "data": raw["data"]})
    assert cfg.model.init_args.model.class_path.startswith("lit_papers.papers.")
    assert cfg.data.class_path.startswith("lit_papers.data.")


def test_fast_rcnn_tiny_on_voc(cli, tiny_fit):
    proc = tiny_fit("faster_rcnn", into=cli.runs)  # the session's shared fit (conftest.py)
    metrics = (cli.runs / "faster_rcnn" / "tiny" / "v0" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/voc07_mAP" in metrics and "val/voc_mAP" in metrics and "val/bbox_AP50" in metrics
    assert "COCO AP on 5 images" in proc.stdout + proc.stderr
