"""Test probes injected into real CLI runs by class path (``--trainer.callbacks+=tests.helpers.probes.X``)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import torch


class RecordBatches(L.Callback):
    """Writes, per rank, a hash of every training image seen to ``<out>/rank<r>.json``."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.hashes: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images = batch[0]
        for image in images:
            self.hashes.append(hashlib.sha1(image.detach().cpu().numpy().tobytes()).hexdigest())

    def on_train_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        info = {"rank": trainer.global_rank, "world_size": trainer.world_size, "hashes": self.hashes}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(info))


class FailTestUnless(L.Callback):
    """Raises at the start of ``test`` unless the file ``unless`` exists (a test phase that crashes)."""

    def __init__(self, unless: str) -> None:
        self.unless = Path(unless)

    def on_test_start(self, trainer, pl_module) -> None:
        if not self.unless.exists():
            raise RuntimeError(f"test phase failed on purpose (create {self.unless} to let it pass)")


class KillAtStep(L.Callback):
    """SIGKILLs its own process when the global step reaches ``$KILL_AT_STEP`` (a crash mid-epoch)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = os.environ.get("KILL_AT_STEP")
        if step is not None and trainer.global_step == int(step):
            os.kill(os.getpid(), signal.SIGKILL)


class SlowSteps(L.Callback):
    """Marks the start of training with the file ``$PROBE_STARTED`` and sleeps ``$PROBE_STEP_S`` seconds after
    every step, so that a test can signal a run while it is certainly mid-training."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        started = os.environ.get("PROBE_STARTED")
        if started:
            Path(started).touch()
        time.sleep(float(os.environ.get("PROBE_STEP_S", "0")))


class CaptureLoggerConfig(L.Callback):
    """Dumps the W&B run config (as the W&B run holds it) to ``<out>`` at the end of fit."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_fit_end(self, trainer, pl_module) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                config = dict(logger.experiment.config)
                Path(self.out).write_text(json.dumps({"offline": logger.experiment.settings.mode, "config": config},
                                                     default=str))


class RecordDtypes(L.Callback):
    """Records the dtype of the model's output logits in the first training step to ``<out>``."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.handle = None

    def on_train_start(self, trainer, pl_module) -> None:
        def hook(module, inputs, output):
            Path(self.out).write_text(json.dumps({"logits": str(output.dtype), "weight": str(module.weight.dtype)}))
            self.handle.remove()

        self.handle = pl_module.model.fc.register_forward_hook(hook)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        assert torch.isfinite(loss), "non-finite loss under bf16-mixed"


class CheckAllGradients(L.Callback):
    """After the first backward, writes the names of trainable parameters without a finite gradient to ``<out>``."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.done = False

    def on_after_backward(self, trainer, pl_module) -> None:
        if self.done:
            return
        self.done = True
        missing = [name for name, p in pl_module.named_parameters()
                   if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
        total = sum(1 for p in pl_module.parameters() if p.requires_grad)
        Path(self.out).write_text(json.dumps({"missing": missing, "total": total}))
