"""Stop a run at the first NaN/inf training loss or gradient, before the optimizer step that it would poison.

One guard for every paper, installed by the CLI for every ``fit``:

* ``on_before_backward`` (every backward, also ``manual_backward``) keeps a device-side flag "this loss is
  finite" (no host sync there);
* ``on_before_optimizer_step`` (after backward, before gradient clipping and the step; called for manual
  optimisation's ``opt.step()`` too) checks the losses since the last step and each gradient's 2-norm
  (``torch._foreach_norm``: NaN/inf propagate; one fused pass on GPU) with one host sync; only when that says
  non-finite are the tensors themselves checked (a finite gradient whose norm overflows does not stop the run).
  Under ``16-mixed`` the gradient check is left to the GradScaler, which skips steps with inf gradients by design.

On a non-finite value it writes ``<run folder>/nonfinite_batch.json`` (``nonfinite_batch_rank<r>.json`` on other
ranks): the global step, epoch, the batch index and identifiers of each micro-batch since the last step (a
LightningModule may define ``batch_identifiers(batch) -> list``, e.g. COCO image ids; otherwise only the
batch index is known), which losses were non-finite, the names of up to 20 parameters with non-finite gradients,
and ``last_finite_checkpoint``: the newest checkpoint of the run whose weights are all finite (every candidate is
loaded with ``weights_only=True`` and checked, since a step with finite gradients can still overflow a weight).
Then it raises :class:`NonFiniteError`: no optimizer step is taken, the run is not marked ``FINISHED``, the CLI
exits with status 1, and the reproduction card writes no result for a run folder holding that file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_papers.ops.checkpoint import CheckpointError, read_checkpoint

NONFINITE_FILE = "nonfinite_batch.json"
MAX_NAMES = 20


class NonFiniteError(FloatingPointError):
    """A training loss or gradient was NaN/inf; raised before the optimizer step. ``record`` is what was saved."""

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


def _finite_weights(path: Path) -> bool:
    try:
        state = read_checkpoint(path).get("state_dict") or {}
    except CheckpointError:
        return False
    return all(torch.isfinite(v).all() for v in state.values() if torch.is_tensor(v) and v.is_floating_point())


def last_finite_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest checkpoint file of this run (checkpoint folders, HPC checkpoints, the one resumed from) whose
    floating-point weights are all finite; None when there is none."""
    candidates: set[Path] = set()
    for cb in trainer.checkpoint_callbacks:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath and Path(cb.dirpath).is_dir():
            candidates.update(Path(cb.dirpath).glob("*.ckpt"))
    candidates.update(Path(trainer.default_root_dir).glob("hpc_ckpt_*.ckpt"))
    if trainer.ckpt_path and Path(trainer.ckpt_path).is_file():
        candidates.add(Path(trainer.ckpt_path))
    for path in sorted((p for p in candidates if p.is_file()), key=lambda p: p.stat().st_mtime_ns, reverse=True):
        if _finite_weights(path):
            return str(path)
    return None


class NonFiniteGuard(L.Callback):
    """See the module docstring. ``check_gradients``: also check gradients (one norm per tensor per step)."""

    def __init__(self, *, check_gradients: bool = True) -> None:
        self.check_gradients = check_gradients
        self._window: list[tuple[int, Any]] = []  # (batch_idx, batch) of the micro-batches since the last step
        self._losses: list[tuple[int, torch.Tensor]] = []  # (batch_idx, detached loss) since the last step
        self._batch_idx = -1
        self._stepped = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._batch_idx = batch_idx
        self._window.append((batch_idx, batch))

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._losses.append((self._batch_idx, loss.detach()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        checks = [loss.float().reshape(-1) for _, loss in self._losses]
        grads = []
        if self.check_gradients and getattr(trainer.precision_plugin, "scaler", None) is None:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:  # each tensor's 2-norm is finite iff all its entries are (or it overflowed: checked below)
                checks.append(torch.stack(torch._foreach_norm(grads)).float().reshape(-1))
        if checks:
            device = checks[0].device
            bad = not bool(torch.isfinite(torch.cat([c.to(device) for c in checks])).all())  # one host sync
            if bad:  # exact test, so that a huge but finite gradient whose norm overflowed does not stop the run
                bad = any(not bool(torch.isfinite(x).all()) for x in [*(loss for _, loss in self._losses), *grads])
            if trainer.world_size > 1:
                bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
            if bad:
                self._stop(trainer, pl_module, optimizer)
        self._losses.clear()
        self._stepped = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._stepped:  # else inside a gradient-accumulation window: keep its batches
            self._window.clear()
            self._stepped = False

    def _stop(self, trainer, pl_module, optimizer) -> None:
        identify = getattr(pl_module, "batch_identifiers", None)
        batches = []
        for batch_idx, batch in self._window:
            losses = [float(v) for idx, loss in self._losses if idx == batch_idx for v in loss.float().reshape(-1)]
            finite = all(math.isfinite(v) for v in losses)
            entry: dict[str, Any] = {"batch_idx": batch_idx, "loss_finite": finite,  # strict JSON: "nan", "inf"
                                     "loss": [v if math.isfinite(v) else str(v) for v in losses] or None}
            if callable(identify):
                entry["identifiers"] = list(identify(batch))
            batches.append(entry)
        names = {id(p): n for n, p in pl_module.named_parameters()}
        bad_grads = [names.get(id(p), "?") for group in optimizer.param_groups for p in group["params"]
                     if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        loss_bad = [b for b in batches if not b["loss_finite"]]
        offending = loss_bad or batches
        identifiers = [i for b in offending for i in b.get("identifiers", [])]
        record = {
            "global_step": int(trainer.global_step),
            "epoch": int(trainer.current_epoch),
            "reason": "loss" if loss_bad else "gradient",
            "batch_idx": [b["batch_idx"] for b in offending],
            "batch_identifiers": identifiers if callable(identify) else None,
            "batches": batches,
            "nonfinite_gradients": bad_grads[:MAX_NAMES],
            "nonfinite_gradients_count": len(bad_grads),
            "last_finite_checkpoint": last_finite_checkpoint(trainer),
        }
        folder = Path(trainer.default_root_dir)
        path = folder / (NONFINITE_FILE if trainer.global_rank == 0 else f"nonfinite_batch_rank{trainer.global_rank}.json")
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str, allow_nan=False))
        os.replace(tmp, path)
        what = ("loss " + ", ".join(f"{v}" for b in loss_bad for v in b["loss"]) if loss_bad else f"gradients of {len(bad_grads)} parameters (e.g. {bad_grads[:3]})")
        ids = f"; batch identifiers {identifiers[:10]}" if callable(identify) else ""
        resume = record["last_finite_checkpoint"] or "none (no finite checkpoint yet)"
        raise NonFiniteError(
            f"non-finite {what} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch_idx "
            f"{record['batch_idx']}){ids}; no optimizer step was taken. Saved {path}; last finite checkpoint: "
            f"{resume}. Lower the learning rate or check that batch's data.", record)
