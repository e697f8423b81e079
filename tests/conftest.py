"""Shared test fixtures.

``LIT_PAPERS_DATA`` points at the real dataset samples (CI: ``../shared/data``); when unset, the sibling
``shared/data`` of the checkout is used. Tests never touch the network: downloads are tested against a
loopback HTTP server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_default = REPO.parent / "shared" / "data"
if not os.environ.get("LIT_PAPERS_DATA") and _default.is_dir():
    os.environ["LIT_PAPERS_DATA"] = str(_default)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download (timm weights): fail fast instead of retrying


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real dataset samples (``$LIT_PAPERS_DATA``)."""
    root = Path(os.environ.get("LIT_PAPERS_DATA", _default))
    if not root.is_dir():
        pytest.fail(f"LIT_PAPERS_DATA={root} does not exist; point it at ../shared/data")
    return root


def run_cli(args: list[str], *, runs: Path, env: dict | None = None, timeout: float = 600,
            check: bool = True) -> subprocess.CompletedProcess:
    """``python -m lit_papers <args>`` in a subprocess from the repository root, runs under ``runs``."""
    full_env = {**os.environ, "LIT_PAPERS_RUNS": str(runs), "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("LIT_PAPERS_RUN_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "lit_papers", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"lit-papers {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture
def cli(tmp_path):
    """Run the CLI in a subprocess with runs under tmp_path; returns (CompletedProcess, runs root)."""
    runs = tmp_path / "runs"

    def _run(*args: str, env: dict | None = None, check: bool = True, timeout: float = 600):
        return run_cli(list(args), runs=runs, env=env, check=check, timeout=timeout)

    _run.runs = runs
    return _run
