"""A CSV logger that keeps the rows of earlier attempts when a run resumes.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so a preempted or crashed run
that resumes into the same folder would lose its history. With ``append=True`` the existing file is kept,
its header re-read, and new rows are appended (the header grows when new metrics appear). Steps logged after
the last checkpoint and before the crash are logged again by the resumed attempt, so a step can appear twice;
the later row is the one that belongs to the final weights.
"""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # keep what an earlier attempt wrote
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                header = next(csv.reader(fh), [])
            self.metrics_keys = sorted(header)


class ResumableCSVLogger(CSVLogger):
    def __init__(self, *args, append: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.append = append

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.append:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return super().experiment
