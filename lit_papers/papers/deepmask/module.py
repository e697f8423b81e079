"""DeepMaskLitModule: the joint training objective of Pinheiro et al. 2015 (sec. 3.2) and the class-agnostic
proposal evaluation of sec. 4 (average recall of segments and boxes on COCO-format data).

Loss (sec. 3.2, eq. 1), for a batch of triplets (x_k, m_k, y_k), y_k in {+1, -1}:

    L = sum_k [ (1 + y_k) / (2 w° h°) sum_ij log(1 + exp(-m_k^ij f_segm^ij(x_k)))  +  lambda log(1 + exp(-y_k f_score(x_k))) ]

i.e. the mean per-pixel logistic loss of the mask, counted *only on positive patches*, plus lambda times the
patch's logistic objectness loss; lambda = 1/32 ("Implementation details"; ``score_weight``). Here both terms are
divided by the batch size (the ratio, which is what lambda sets, is unchanged). Mask targets at another
resolution than the network's ``w° x h°`` output are met by upsampling the logits bilinearly (the recipes give the
target at the output's 56 x 56, as in the paper).

Evaluation (val / test): every whole image of the split goes through :meth:`DeepMask.propose` (multi-scale
sliding windows, top ``max_proposals``), and :class:`~lit_papers.metrics.proposals.ProposalSets` gives
class-agnostic AR@10 / 100 / 1000 for segments and boxes and AR by object size. Logged ``<stage>/segm_AR100``,
``<stage>/box_AR10``, ``<stage>/segm_AR100_small`` ... each with ``_n`` (objects) and ``_ci95``, plus
``<stage>/seconds_per_image`` (proposal time per image on the evaluating device). The first images' top proposals
are kept in ``example_predictions`` for :class:`~lit_papers.papers.deepmask.pictures.ProposalPictures`.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_papers.metrics.proposals import ProposalEvaluationMixin, ProposalSets
from lit_papers.schedules import optimizer_config


def deepmask_loss(mask_logits: torch.Tensor, score_logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
                  *, score_weight: float) -> dict[str, torch.Tensor]:
    """Eq. 1 divided by the batch size. ``mask_logits`` (B, h, w), ``score_logits`` (B,), ``masks`` (B, H, W) in
    {0, 1}, ``labels`` (B,) 1 = positive / 0 = negative -> {"loss", "loss_mask", "loss_score"}. The {0, 1} targets
    with ``binary_cross_entropy_with_logits`` are exactly log(1 + exp(-y f)) with y in {+1, -1}."""
    if mask_logits.shape[-2:] != masks.shape[-2:]:
        mask_logits = F.interpolate(mask_logits[:, None], size=masks.shape[-2:], mode="bilinear",
                                    align_corners=False)[:, 0]
    per_patch = F.binary_cross_entropy_with_logits(mask_logits.float(), masks.float(), reduction="none")
    loss_mask = (per_patch.flatten(1).mean(1) * labels).sum() / len(labels)  # (1 + y) / 2 = 1 on positives only
    loss_score = F.binary_cross_entropy_with_logits(score_logits.float(), labels.float())
    return {"loss": loss_mask + score_weight * loss_score, "loss_mask": loss_mask, "loss_score": loss_score}


class DeepMaskLitModule(ProposalEvaluationMixin, L.LightningModule):
    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None = None,
                 score_weight: float = 1 / 32, scales: list[float] = (0.25, 0.354, 0.5, 0.707, 1.0, 1.414, 2.0),
                 max_proposals: int = 1000, mask_threshold: float = 0.2, nms_iou: float | None = None,
                 max_dets: tuple[int, ...] = (10, 100, 1000), max_pictures: int = 4, picture_top: int = 5) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.evaluator: ProposalSets | None = None
        self.example_predictions: dict | None = None
        self._seconds, self._images = 0.0, 0

    # -- training ------------------------------------------------------------------------------------------------
    def losses(self, batch) -> dict[str, torch.Tensor]:
        patches, masks, labels = batch
        mask_logits, score_logits = self.model(patches)
        return deepmask_loss(mask_logits, score_logits, masks, labels, score_weight=self.hparams.score_weight)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        out = self.losses(batch)
        for name, value in out.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=len(batch[2]))
        self.log("train/positive_fraction", batch[2].float().mean(), batch_size=len(batch[2]))
        return out["loss"]

    # -- proposals -----------------------------------------------------------------------------------------------
    def proposal_sets(self, image: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """{name: proposals} of one image from ``model.propose_sets`` (DeepMask: one set named "")."""
        hp = self.hparams
        return self.model.propose_sets(image, scales=list(hp.scales), max_proposals=hp.max_proposals,
                                       mask_threshold=hp.mask_threshold, nms_iou=hp.nms_iou)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return optimizer_config(self.optimizer_factory(params), self.scheduler_factory)
