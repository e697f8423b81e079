"""Asking for ImageNet weights without network is one clear error that says how to provide them."""

from __future__ import annotations

import pytest

from lit_papers.backbones.timm_backbone import TimmBackbone


def test_pretrained_without_network_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: the weights are not there
    with pytest.raises(RuntimeError, match="resnet18.*checkpoint_path.*pretrained: false"):
        TimmBackbone(name="resnet18", pretrained=True)
    backbone = TimmBackbone(name="resnet18", pretrained=False, out_indices=(1, 2, 3, 4))
    assert backbone.strides == [4, 8, 16, 32] and backbone.out_channels == [64, 128, 256, 512]
