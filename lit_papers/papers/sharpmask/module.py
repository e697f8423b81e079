"""SharpMaskLitModule: the second training stage of Pinheiro et al. 2016 (sec. 3.3) -- DeepMask frozen, only the
refinement trained -- and the same class-agnostic proposal evaluation as DeepMask.

Loss: the per-pixel logistic loss of the refined mask at the patch's resolution, on positive patches only (as
DeepMask's mask term; the objectness score is the frozen DeepMask's and is not trained). Masks given at another
resolution than the network output are met by resampling the logits bilinearly.

Evaluation (:class:`~lit_papers.metrics.proposals.ProposalEvaluationMixin`): ``<stage>/segm_AR100`` ... for the
refined masks and ``<stage>/deepmask_segm_AR100`` ... for DeepMask's coarse masks *of the same windows and scores*
(the claim: refinement raises segment AR at the same proposals), ``<stage>/seconds_per_image`` for both together
(the two timed separately: ``tests/benchmarks/sharpmask_speed.py``).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_papers.metrics.proposals import ProposalEvaluationMixin
from lit_papers.schedules import optimizer_config


def refinement_loss(mask_logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel logistic loss over positive patches (``labels`` 1); 0 (with a graph) when there is none."""
    if mask_logits.shape[-2:] != masks.shape[-2:]:
        mask_logits = F.interpolate(mask_logits[:, None], size=masks.shape[-2:], mode="bilinear",
                                    align_corners=False)[:, 0]
    per_patch = F.binary_cross_entropy_with_logits(mask_logits.float(), masks.float(), reduction="none").flatten(1)
    positive = labels > 0.5
    return per_patch[positive].mean() if positive.any() else per_patch.sum() * 0.0


class SharpMaskLitModule(ProposalEvaluationMixin, L.LightningModule):
    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None = None,
                 scales: list[float] = (0.25, 0.354, 0.5, 0.707, 1.0, 1.414, 2.0), max_proposals: int = 1000,
                 mask_threshold: float = 0.2, nms_iou: float | None = None, max_dets: tuple[int, ...] = (10, 100, 1000),
                 max_pictures: int = 4, picture_top: int = 5) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.example_predictions: dict | None = None

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        patches, masks, labels = batch
        mask_logits, _ = self.model(patches)
        loss = refinement_loss(mask_logits, masks, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def proposal_sets(self, image: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        hp = self.hparams
        return self.model.propose_sets(image, scales=list(hp.scales), max_proposals=hp.max_proposals,
                                       mask_threshold=hp.mask_threshold, nms_iou=hp.nms_iou)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]  # the refinement only: DeepMask is frozen
        return optimizer_config(self.optimizer_factory(params), self.scheduler_factory)
