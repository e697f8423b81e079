"""MotionRetargetLitModule: training with cross-reconstruction and triplet losses (Aberman et al. 2019, sec. 4.2),
evaluation of retargeting against ground truth, the scaled-copy baseline and motion retrieval.

Training batches come from :class:`lit_papers.data.mixamo.MixamoPairs`: ``x``/``y`` (B, K, 30, T) with the
K = 2**F combinations of (motion, body[, view]) in ``itertools.product((0, 1), repeat=F)`` order. The codes of
the two real samples, combination (0, ..., 0) and (1, ..., 1), are swapped to decode every combination:
* reconstruction (own codes): ``rec_weight`` x MSE, for the two real samples;
* cross-reconstruction (swapped codes) against the real sample of that combination: ``cross_weight`` x MSE;
  ``cross_weight: 0`` is the "autoencoder without cross-reconstruction" baseline;
* triplet losses on every code: anchor = the code of a sample that shares only that factor with sample i,
  positive = sample i's code, negative = the other sample's code, margin ``triplet_margin``;
* foot velocity: ``footvel_weight`` x MSE of the global ankle velocities (official ``get_foot_vel``).

Evaluation batches (:class:`lit_papers.data.mixamo.MixamoRetargetEval`): the source motion decoded with the
static codes of a clip of the target character; logged per stage ``<stage>/mse_norm`` (normalised units),
``<stage>/mse_px`` and ``<stage>/mpjpe_px`` (pixels at the 512-px scale, root trajectory integrated from the
predicted velocity), ``<stage>/mpjpe_rel_px`` (root-relative pose error in pixels), the same for the scaled-copy baseline
(``..._copy``), with views also skeleton + view transfer (``mse_norm_view``, ``mpjpe_rel_px_view``: target clip
and ground truth from another view; no copy baseline exists for it), and motion retrieval top-1 by nearest motion code among other characters (``retrieval_top1``:
same window, ``retrieval_top1_anim``: same animation).
"""

from __future__ import annotations

import itertools

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lit_papers.metrics.intervals import MeanCI95
from lit_papers.ops.motion2d import ROOT, postprocess_torch
from lit_papers.papers.motion_retarget.model import RetargetNet, foot_velocity, triplet_loss
from lit_papers.schedules import optimizer_config


class MotionRetargetLitModule(L.LightningModule):
    def __init__(
        self,
        *,
        model: RetargetNet,
        optimizer: OptimizerCallable,
        scheduler: LRSchedulerCallable | None = None,
        rec_weight: float = 1.0,
        cross_weight: float = 1.0,
        triplet_weight: float = 1.0,
        triplet_margin: float = 1.0,
        footvel_weight: float = 0.0,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.factors = model.factors
        self.combos = list(itertools.product((0, 1), repeat=len(self.factors)))
        names = [f"{n}{s}" for s in ("", "_copy") for n in ("mse_norm", "mse_px", "mpjpe_px", "mpjpe_rel_px")]
        names += ["mse_norm_view", "mpjpe_rel_px_view"]  # full model: target seen from another view
        # per-item means with a 95 % interval over the evaluated items (each item: one retargeted clip window)
        self.eval_metrics = torch.nn.ModuleDict({f"{s}_{n}": MeanCI95() for s in ("val", "test") for n in names})
        self._codes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # -- training -------------------------------------------------------------------------------------------
    def losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """x, y: (B, K, 30, T) inputs and targets -> dict of weighted loss terms (their sum is the loss)."""
        hp = self.hparams
        K = len(self.combos)
        if x.shape[1] != K:
            raise ValueError(f"batch has {x.shape[1]} combinations, the {len(self.factors)}-factor model needs {K}")
        codes = (self.model.encode(x[:, 0]), self.model.encode(x[:, K - 1]))  # the two real samples
        out: dict[str, torch.Tensor] = {}
        rec, cross, foot = [], [], []
        for k, combo in enumerate(self.combos):
            own = len(set(combo)) == 1
            if not own and hp.cross_weight == 0:
                continue
            pred = self.model.decode(*(codes[bit][f] for bit, f in zip(combo, self.factors)))
            (rec if own else cross).append(F.mse_loss(pred, y[:, k]))
            if hp.footvel_weight:
                foot.append(F.mse_loss(foot_velocity(pred), foot_velocity(y[:, k])))
        out["rec"] = hp.rec_weight * torch.stack(rec).sum()
        if cross:
            out["cross"] = hp.cross_weight * torch.stack(cross).sum()
        if foot:
            out["footvel"] = hp.footvel_weight * torch.stack(foot).sum()
        if hp.triplet_weight:
            for f_index, factor in enumerate(self.factors):
                terms = []
                for i in (0, 1):  # anchor shares only `factor` with real sample i
                    combo = tuple(i if j == f_index else 1 - i for j in range(len(self.factors)))
                    anchor = self.model.encode(x[:, self.combos.index(combo)], which=(factor,))[factor]
                    terms.append(triplet_loss(anchor, codes[i][factor], codes[1 - i][factor], hp.triplet_margin))
                out[f"triplet_{factor}"] = hp.triplet_weight * torch.stack(terms).sum()
        return out

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        terms = self.losses(batch["x"], batch["y"])
        loss = torch.stack(list(terms.values())).sum()
        self.log("train/loss", loss, prog_bar=True)
        for name, value in terms.items():
            self.log(f"train/loss_{name}", value)
        return loss

    # -- evaluation -----------------------------------------------------------------------------------------
    def _evaluate(self, batch, stage: str) -> None:
        src, ref, gt, copy = batch["src"], batch["ref"], batch["gt"], batch["copy"]
        pred = self.model.retarget(src, ref)
        mean, std = batch["mean"], batch["std"]
        start = batch["gt_px"][:, ROOT, :, 0]  # (B, 2) ground-truth root at frame 0
        gt_px = postprocess_torch(gt, mean, std, start)  # (B, 15, 2, T)
        for suffix, guess in (("", pred), ("_copy", copy)):
            px = postprocess_torch(guess, mean, std, start)
            self.eval_metrics[f"{stage}_mse_norm{suffix}"](((guess - gt) ** 2).mean(dim=(1, 2)))
            self.eval_metrics[f"{stage}_mse_px{suffix}"](((px - gt_px) ** 2).mean(dim=(1, 2, 3)))
            self.eval_metrics[f"{stage}_mpjpe_px{suffix}"]((px - gt_px).norm(dim=2).mean(dim=(1, 2)))
            rel = (px - px[:, ROOT:ROOT + 1]) - (gt_px - gt_px[:, ROOT:ROOT + 1])  # (B, 15, 2, T) pose error only
            self.eval_metrics[f"{stage}_mpjpe_rel_px{suffix}"](rel.norm(dim=2).mean(dim=(1, 2)))
        if "gt_view" in batch and self.model.view_encoder is not None:  # change skeleton and view at once
            pred_v = self.model.retarget(src, batch["ref_view"])
            start_v = batch["gt_view_px"][:, ROOT, :, 0]
            px = postprocess_torch(pred_v, mean, std, start_v)
            gt_v_px = postprocess_torch(batch["gt_view"], mean, std, start_v)
            self.eval_metrics[f"{stage}_mse_norm_view"](((pred_v - batch["gt_view"]) ** 2).mean(dim=(1, 2)))
            rel = (px - px[:, ROOT:ROOT + 1]) - (gt_v_px - gt_v_px[:, ROOT:ROOT + 1])
            self.eval_metrics[f"{stage}_mpjpe_rel_px_view"](rel.norm(dim=2).mean(dim=(1, 2)))
        motion_code = self.model.encode(src, which=("motion",))["motion"].flatten(1)  # (B, Cm * T/8)
        self._codes.append((motion_code.float().cpu(), batch["motion"].cpu(), batch["animation"].cpu(),
                            batch["char"].cpu()))

    def _finish(self, stage: str) -> None:
        for name, metric in self.eval_metrics.items():
            if name.startswith(stage + "_") and metric.update_count:
                mean, half, n = metric.compute()  # synced across ranks
                key = f"{stage}/{name[len(stage) + 1:]}"
                self.log(key, mean.float())
                self.log(f"{key}_ci95", half.float())
                self.log(f"{key}_n", n.float())
                metric.reset()
        if self._codes and self.trainer.world_size == 1:  # retrieval needs every code in one process
            top1, top1_anim, queries = retrieval_top1(*(torch.cat(t) for t in zip(*self._codes)), with_count=True)
            self.log(f"{stage}/retrieval_top1", top1)
            self.log(f"{stage}/retrieval_top1_anim", top1_anim)
            # a proportion over the queries: the card gives it a Wilson interval from this count
            self.log(f"{stage}/retrieval_top1_n", float(queries))
            self.log(f"{stage}/retrieval_top1_anim_n", float(queries))
        self._codes = []

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    def configure_optimizers(self):
        # the official code decays the learning rate once per epoch (ExponentialLR(0.99))
        return optimizer_config(self.optimizer_factory(self.parameters()), self.scheduler_factory,
                                interval=self.hparams.scheduler_interval)


def retrieval_top1(codes: torch.Tensor, motion: torch.Tensor, animation: torch.Tensor,
                   char: torch.Tensor, *, with_count: bool = False) -> tuple:
    """Motion retrieval by code similarity: each (motion, character) code queries the codes of the *other*
    characters; returns the fraction whose nearest (L2) code is the same motion window, and the same animation
    (and, ``with_count``, the number of queries). codes: (N, D); motion, animation, char: (N,) int. Duplicate
    (motion, char) rows are merged first."""
    key = motion * (int(char.max()) + 1) + char
    _, first = torch.unique(key, return_inverse=True)
    keep = torch.zeros(int(first.max()) + 1, dtype=torch.long)
    keep.scatter_(0, first, torch.arange(len(key)))  # one row per (motion, char)
    codes, motion, animation, char = codes[keep], motion[keep], animation[keep], char[keep]
    dist = torch.cdist(codes.double(), codes.double())  # (N, N)
    dist[char[:, None] == char[None, :]] = float("inf")  # only other characters
    nearest = dist.argmin(dim=1)
    top1 = float((motion[nearest] == motion).double().mean())
    top1_anim = float((animation[nearest] == animation).double().mean())
    return (top1, top1_anim, len(codes)) if with_count else (top1, top1_anim)
