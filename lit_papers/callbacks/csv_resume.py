"""A CSV logger that keeps the rows of earlier attempts when a run resumes.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so a preempted or crashed run
that resumes into the same folder would lose its history. With ``append=True`` the existing file is kept,
its header re-read, and new rows are appended (the header grows when new metrics appear).

Rows logged after the checkpoint the run resumes from (and before the crash) would be logged again by the resumed
attempt. With ``resume_step=S`` (the checkpoint's ``global_step``) the earlier attempt's rows whose ``step`` is
``>= S`` are dropped when the file is reopened: Lightning writes the rows of the ``k``-th optimizer step (and a
validation right after it) with ``step = k - 1``, so those are exactly the steps the resumed attempt replays.
The file is rewritten atomically (temporary file + rename).
"""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


def drop_rows_from_step(path: str, resume_step: int) -> int:
    """Remove the rows of ``path`` (a metrics CSV) whose ``step`` is ``>= resume_step``; returns how many."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = list(reader)

    def replayed(row: dict) -> bool:
        try:
            return int(float(row.get("step") or "")) >= resume_step
        except ValueError:
            return False

    kept = [row for row in rows if not replayed(row)]
    if len(kept) == len(rows):
        return 0
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)
    return len(rows) - len(kept)


class _AppendingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int | None = None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:  # keep what an earlier attempt wrote
        if os.path.isfile(self.metrics_file_path):
            if self.resume_step is not None:
                drop_rows_from_step(self.metrics_file_path, self.resume_step)
            with open(self.metrics_file_path, newline="") as fh:
                header = next(csv.reader(fh), [])
            self.metrics_keys = sorted(header)


class ResumableCSVLogger(CSVLogger):
    def __init__(self, *args, append: bool = False, resume_step: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.append = append
        self.resume_step = resume_step

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.append:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir, resume_step=self.resume_step)
        return super().experiment
