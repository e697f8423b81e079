"""Mask R-CNN / Faster R-CNN models: losses, gradients, inference outputs, the paper's switches, the NaN guard,
and an end-to-end CLI run of the tiny config."""

from __future__ import annotations

import json

import pytest
import torch

from lit_papers.callbacks.nonfinite import NONFINITE_FILE, NonFiniteError, NonFiniteGuard
from lit_papers.detection.module import DetectionLitModule
from lit_papers.detection.rcnn import RCNN
from lit_papers.papers.mask_rcnn.model import MaskRCNN

SMALL = dict(num_classes=3, backbone="resnet18", fpn_channels=16, anchor_sizes=((8,), (16,), (32,), (64,), (128,)),
             rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=100,
             rpn_post_nms_top_n_test=50, box_head_dim=32, roi_batch_size_per_image=16)


def batch(n=2, size=64):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size - 8 * i, generator=g) for i in range(n)]
    targets = []
    for i in range(n):
        masks = torch.zeros(2, size, size - 8 * i, dtype=torch.uint8)
        masks[0, 5:30, 8:30] = 1
        masks[1, 30:60, 20:50] = 1
        targets.append({"boxes": torch.tensor([[8.0, 5, 30, 30], [20, 30, 50, 60]]), "labels": torch.tensor([1, 3]),
                        "masks": masks, "image_id": i})
    return images, targets


@pytest.mark.parametrize("options", [
    {},
    {"mask_pooler": "pool", "box_pooler": "pool"},
    {"class_agnostic_masks": True},
    {"mask_loss": "softmax"},
])
def test_mask_rcnn_trains_and_predicts(options):
    torch.manual_seed(0)
    model = MaskRCNN(**SMALL, mask_head_convs=2, mask_head_dim=16, **options)
    images, targets = batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det in out:
        n = len(det["boxes"])
        assert det["mask_probs"].shape == (n, 1, 28, 28) and det["labels"].shape == (n,)
        assert ((det["mask_probs"] >= 0) & (det["mask_probs"] <= 1)).all()


def test_mask_head_outputs_one_mask_per_class_or_one():
    model = MaskRCNN(**SMALL, mask_head_convs=1, mask_head_dim=8)
    assert model.roi_heads.mask_branch.head.predictor.out_channels == 4  # K + 1 (background channel unused)
    agnostic = MaskRCNN(**SMALL, mask_head_convs=1, mask_head_dim=8, class_agnostic_masks=True)
    assert agnostic.roi_heads.mask_branch.head.predictor.out_channels == 1
    with pytest.raises(ValueError, match="class-specific"):
        MaskRCNN(**SMALL, class_agnostic_masks=True, mask_loss="softmax")


def test_fast_rcnn_setting_roipool_on_stride16():
    """Fast R-CNN setting: no FPN, RoIPool on the single stride-16 map C4."""
    model = RCNN(**{**SMALL, "anchor_sizes": ((16, 32, 64),)}, fpn=False, box_pooler="pool")
    pooler = model.roi_heads.box_roi_pool
    assert pooler.strides == [16] and pooler.kind == "pool"
    images, targets = batch()
    losses = model(images, targets)
    assert "loss_mask" not in losses and all(torch.isfinite(v) for v in losses.values())


class _NaNModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, images, targets=None):
        return {"loss_classifier": self.w * float("nan"), "loss_box_reg": self.w}


def test_nonfinite_loss_stops_and_saves_image_ids(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader

    module = DetectionLitModule(model=_NaNModel(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    images, targets = batch()
    targets[0]["image_id"], targets[1]["image_id"] = 139, 802
    trainer = L.Trainer(default_root_dir=tmp_path, max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[NonFiniteGuard()])
    with pytest.raises(NonFiniteError, match="139"):
        trainer.fit(module, DataLoader([(images, targets)], batch_size=None, collate_fn=lambda b: b))
    record = json.loads((tmp_path / NONFINITE_FILE).read_text())
    assert record["batch_identifiers"] == [139, 802] and record["reason"] == "loss"
    assert module.model.w.item() == 1.0  # no step taken


def test_tiny_config_end_to_end(cli, tmp_path):
    proc = cli("fit", "--config", "configs/mask_rcnn/tiny.yaml", "--wandb", "false",
               "--data.init_args.root", str(tmp_path / "data"))
    run = cli.runs / "mask_rcnn" / "tiny" / "v0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "predictions_val.png").is_file()
    text = proc.stdout + proc.stderr
    assert "COCO AP on 4 images" in text and "segm" in text
    metrics = (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/segm_AP50" in metrics and "val/bbox_AP" in metrics and "train/loss_mask" in metrics
    test = cli("test", "--config", "configs/mask_rcnn/tiny.yaml", "--wandb", "false",
               "--data.init_args.root", str(tmp_path / "data"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    assert test.returncode == 0
    results = json.loads((cli.runs / "mask_rcnn" / "tiny" / "v1" / "coco_results_test.json").read_text())
    assert all({"image_id", "category_id", "bbox", "score", "segmentation"} <= set(r) for r in results)


def test_linear_scaling_rule(capsys):
    from types import SimpleNamespace

    module = DetectionLitModule(model=_NaNModel(), optimizer=lambda p: torch.optim.SGD(p, lr=0.02),
                                reference_batch_size=16)
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(batch_size=2), world_size=2, accumulate_grad_batches=1)
    optimizer = module.optimizer_factory(module.parameters())
    module._apply_linear_scaling(optimizer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * 4 / 16)
