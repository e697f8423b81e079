"""Mask R-CNN overfits 4 real COCO images to box AP >= 0.9 on those images (slow: minutes on CPU)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lit_papers.data.coco import COCODataModule
from lit_papers.detection.module import DetectionLitModule
from lit_papers.papers.mask_rcnn.model import MaskRCNN
from lit_papers.schedules import WarmupMultiStepLR


@pytest.mark.slow
def test_overfit_four_coco_images(tmp_path):
    L.seed_everything(0)
    dm = COCODataModule(train_split="train2017", val_split="train2017", min_size=320, max_size=480, hflip=0.0,
                        aspect_ratio_grouping=False, max_train_images=4, max_eval_images=4, batch_size=4,
                        eval_batch_size=4, num_workers=0)
    model = MaskRCNN(num_classes=80, backbone="resnet18", fpn_channels=128, box_head_dim=512,
                     rpn_post_nms_top_n_train=500, roi_batch_size_per_image=128, mask_head_dim=128)
    module = DetectionLitModule(
        model=model, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-4, weight_decay=0.0),
        scheduler=lambda o: WarmupMultiStepLR(o, milestones=[500], warmup_steps=20, warmup_factor=0.01,
                                              warmup="linear"))
    trainer = L.Trainer(max_steps=600, accelerator="cpu", logger=False, enable_checkpointing=False,
                        num_sanity_val_steps=0, val_check_interval=600, check_val_every_n_epoch=None,
                        default_root_dir=str(tmp_path), use_distributed_sampler=False, enable_progress_bar=False)
    dm.setup("fit")
    assert dm.datasets["train"].ids == dm.datasets["val"].ids  # the same 4 images
    trainer.fit(module, datamodule=dm)
    assert module.last_metrics["bbox_AP"] >= 0.9
