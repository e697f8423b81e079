"""Our full ``fit`` against a plain PyTorch loop, interleaved in one process.

:func:`fit_vs_plain` builds the run exactly as ``lit-papers fit --config ...`` does (LitPapersCLI: Trainer with the
CLI's callbacks and loggers, the DataModule, the LightningModule), adds one callback and calls ``trainer.fit``. Every
``block`` training batches the callback pauses our clock and runs ``block`` steps of the plain loop, timed on their
own; then our clock resumes. So both see the same machine load (the machine is shared), and ours is timed from one
batch end to the next: everything the Trainer does between steps (data loading, hooks, logging, checkpointing)
counts. The first ``warmup`` batches of each are not timed.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

import lightning as L


class PlainInterleave(L.Callback):
    def __init__(self, plain_step: Callable[[], None], *, block: int, warmup: int) -> None:
        self.plain_step, self.block, self.warmup = plain_step, block, warmup
        self.ours_s = self.plain_s = 0.0
        self.ours_n = self.plain_n = 0
        self._mark: float | None = None
        self._seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self._seen += 1
        if self._mark is not None and self._seen > self.warmup:
            self.ours_s += now - self._mark
            self.ours_n += 1
        if self._seen >= self.warmup and self._seen % self.block == 0:
            for i in range(self.block + (1 if self.plain_n == 0 else 0)):  # one untimed warm-up step first
                start = time.perf_counter()
                self.plain_step()
                if self.plain_n > 0 or i > 0:
                    self.plain_s += time.perf_counter() - start
                    self.plain_n += 1
        self._mark = time.perf_counter()


def fit_vs_plain(config: str, plain_step_factory: Callable[[object], Callable[[], None]], *, steps: int, block: int,
                 warmup: int, extra_args: list[str] = ()) -> dict:
    """-> {ours_per_s, plain_per_s, ratio_vs_plain, ours_steps, plain_steps}. ``plain_step_factory(datamodule)``
    returns the plain loop's step (it may read the datamodule's decoded cache, so both train on the same images)."""
    from lit_papers.cli import LitPapersCLI
    from lit_papers.launch.run_dir import RUN_DIR_ENV

    with tempfile.TemporaryDirectory() as runs:
        os.environ["LIT_PAPERS_RUNS"] = runs
        os.environ.pop(RUN_DIR_ENV, None)
        cli = LitPapersCLI(args=["--config", config, "--wandb", "false", "--trainer.max_steps", str(steps),
                                 "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
                                 "--run.test_after_fit", "false", *extra_args], run=False)
        cli.datamodule.prepare_data()
        cli.datamodule.setup("fit")
        probe = PlainInterleave(plain_step_factory(cli.datamodule), block=block, warmup=warmup)
        cli.trainer.callbacks.append(probe)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        os.environ.pop(RUN_DIR_ENV, None)
    ours, plain = probe.ours_n / probe.ours_s, probe.plain_n / probe.plain_s
    return {"ours_per_s": round(ours, 3), "plain_per_s": round(plain, 3), "ratio_vs_plain": round(ours / plain, 3),
            "ours_steps_timed": probe.ours_n, "plain_steps_timed": probe.plain_n}
