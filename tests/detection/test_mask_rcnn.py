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
    assert "val/segm_AP_ci95" not in metrics  # the bootstrap interval is a test-time number (cost)
    test = cli("test", "--config", "configs/mask_rcnn/tiny.yaml", "--wandb", "false",
               "--data.init_args.root", str(tmp_path / "data"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    assert test.returncode == 0
    results = json.loads((cli.runs / "mask_rcnn" / "tiny" / "v1" / "coco_results_test.json").read_text())
    assert all({"image_id", "category_id", "bbox", "score", "segmentation"} <= set(r) for r in results)
    import csv

    with open(cli.runs / "mask_rcnn" / "tiny" / "v1" / "csv" / "metrics.csv") as fh:
        row = next(r for r in csv.DictReader(fh) if r.get("test/segm_AP"))
    assert "test/segm_AP_ci95" not in row  # 4 images: too few to resample (bootstrap_min_images)


def test_linear_scaling_rule_callback():
    """Goyal et al. 2017: lr x B / reference, on the optimizer AND the scheduler's base lrs (a scheduler built
    before the scaling would undo it at its next step); applied once; a resumed run is not scaled again."""
    from types import SimpleNamespace

    from lit_papers.callbacks.lr_scaling import LinearScalingRule
    from lit_papers.schedules import WarmupMultiStepLR

    w = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([w], lr=0.02)
    scheduler = WarmupMultiStepLR(optimizer, milestones=[3], warmup_steps=2, warmup_factor=0.1, warmup="linear")
    trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=1, optimizers=[optimizer],
                              lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler)])
    rule = LinearScalingRule(reference_batch_size=16)
    images, targets = batch()  # 2 images per device x 2 devices = 4 of 16
    rule.on_train_batch_start(trainer, None, (images, targets), 0)
    assert rule.factor == pytest.approx(0.25)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * 0.1 * 0.25)  # warm-up start, scaled
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * 0.25 * 0.1)  # after the milestone, still scaled
    rule.on_train_batch_start(trainer, None, (images, targets), 1)  # not applied twice
    assert scheduler.base_lrs == [pytest.approx(0.005)]
    resumed = LinearScalingRule(reference_batch_size=16)
    resumed.load_state_dict(rule.state_dict())
    resumed.on_train_batch_start(trainer, None, (images, targets), 0)
    assert scheduler.base_lrs == [pytest.approx(0.005)]


def test_model_postprocess_maps_to_the_original_image():
    """The model owns its postprocess: boxes scaled to ``original_sizes``, masks pasted there and binarised."""
    torch.manual_seed(0)
    model = MaskRCNN(**{**SMALL, "rpn_post_nms_top_n_test": 20}, mask_head_convs=1, mask_head_dim=8, score_thresh=0.0).eval()
    assert model.iou_types == ("bbox", "segm") and RCNN.iou_types == ("bbox",)
    images, _ = batch()
    with torch.no_grad():
        at_input = model(images)
        original = model(images, original_sizes=[(128, 96), (32, 28)])  # image 0 x (2, 1.5); image 1 x 0.5
    assert len(at_input[0]["boxes"]) > 0
    torch.testing.assert_close(original[0]["boxes"], at_input[0]["boxes"] * torch.tensor([1.5, 2.0, 1.5, 2.0]))
    torch.testing.assert_close(original[1]["boxes"], at_input[1]["boxes"] * 0.5)
    for det, (h0, w0) in zip(original, [(128, 96), (32, 28)]):
        masks = det["masks"]
        assert masks.dtype == torch.uint8 and masks.shape == (len(det["boxes"]), h0, w0)
        for m, (x0, y0, x1, y1) in zip(masks, det["boxes"].tolist()):  # nothing outside the box (+1 px padding)
            ys, xs = torch.nonzero(m, as_tuple=True)
            if len(ys):
                assert xs.min() >= int(x0) - 2 and xs.max() <= x1 + 2 and ys.min() >= int(y0) - 2 and ys.max() <= y1 + 2


def test_evaluators_are_injected_and_check_their_dataset():
    from lit_papers.detection.evaluators import COCOMetrics, VOCMeanAP

    module = DetectionLitModule(model=_NaNModel(), optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    assert [type(e) for e in module.evaluators] == [COCOMetrics]
    with pytest.raises(TypeError, match="VOCMeanAP needs a VOC eval dataset"):
        VOCMeanAP().start(object(), ("bbox",))
    with pytest.raises(TypeError, match="COCOMetrics needs .*coco"):
        COCOMetrics().start(object(), ("bbox",))
    with pytest.raises(ValueError, match="11point"):
        VOCMeanAP(metric="12point")


def test_c4_head_is_res5_shared_by_box_and_mask_heads():
    """Fig. 4 left: 14x14 RoIs from C4 -> res5 (stride 2 in its first block) -> 7x7; the box head averages it,
    the mask head (deconv -> 14x14) branches from the SAME res5 weights, and both losses train res5."""
    from lit_papers.detection.box_heads import Res5Head

    torch.manual_seed(0)
    options = {**SMALL, "anchor_sizes": ((8, 16, 32, 64),)}
    model = MaskRCNN(**options, fpn=False, box_head="res5", box_pool_size=14, mask_head_convs=0, mask_head_dim=16)
    box_head, branch = model.roi_heads.box_head, model.roi_heads.mask_branch
    assert isinstance(box_head, Res5Head) and model.features.strides == [16] and model.features.names == ["c4"]
    assert branch.head[0] is box_head.trunk  # shared res5
    pooled = torch.rand(3, 256, 14, 14)  # resnet18 C4 has 256 channels
    assert box_head.trunk(pooled).shape == (3, 512, 7, 7) and box_head(pooled).shape == (3, 512)
    assert branch.head(pooled).shape == (3, 4, 14, 14) and branch.mask_size == 14
    # inference runs the head layer by layer (each input freed when used): the same function as the module call
    from lit_papers.papers.mask_rcnn.model import head_layers

    box_head.eval()
    with torch.no_grad():
        x = pooled
        for layer in head_layers(branch.head):
            x = layer(x)
        assert torch.equal(x, branch.head(pooled))
    box_head.train()
    images, targets = batch()
    losses = model(images, targets)
    res5 = dict(box_head.trunk.named_parameters())
    grads = dict(zip(res5, torch.autograd.grad(losses["loss_mask"], list(res5.values()), allow_unused=True)))
    # the mask loss reaches res5 (timm zero-initialises each block's last BN, so the shortcut carries it first)
    assert grads["layer4.0.downsample.0.weight"].abs().sum() > 0 and grads["layer4.1.bn2.weight"].abs().sum() > 0
    model.eval()
    with torch.no_grad():
        det = model(images)[0]
    assert det["mask_probs"].shape[-2:] == (14, 14) and det["masks"].shape[-2:] == images[0].shape[-2:]
    with pytest.raises(ValueError, match="mask_head_convs: 0"):
        MaskRCNN(**options, fpn=False, box_head="res5", box_pool_size=14, mask_head_convs=2)
    with pytest.raises(ValueError, match="fpn: false"):
        MaskRCNN(**SMALL, box_head="res5")
