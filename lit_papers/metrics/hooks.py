"""Lightning's validation and test hooks routed to one evaluation per stage.

A LightningModule that evaluates the same way on ``val`` and ``test`` lists :class:`EvaluationHooks` before
``L.LightningModule`` among its bases and defines three methods:

    _start_eval(stage)            reset the accumulators ("val" or "test")
    _eval_step(batch, batch_idx)  accumulate one batch
    _end_eval(stage)              compute, log ``<stage>/...`` and reset

No Lightning import here: the hooks are plain methods that Lightning finds by name.
"""

from __future__ import annotations

from typing import Any


class EvaluationHooks:
    def _start_eval(self, stage: str) -> None:  # pragma: no cover - defined by the module
        raise NotImplementedError

    def _eval_step(self, batch: Any, batch_idx: int) -> None:  # pragma: no cover - defined by the module
        raise NotImplementedError

    def _end_eval(self, stage: str) -> None:  # pragma: no cover - defined by the module
        raise NotImplementedError

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")
