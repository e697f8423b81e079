"""Shared test fixtures.

``LIT_PAPERS_DATA`` points at the real dataset samples (CI: ``../shared/data``); when unset, the sibling
``shared/data`` of the checkout is used. Tests never touch the network: downloads are tested against a
loopback HTTP server.

The data root is read-only for the suite: generated data (shapes, synthetic sets) goes to ``$LIT_PAPERS_CACHE``,
which is a per-session temporary folder unless set, and the session fails if the listing (path, size, mtime) of
``$LIT_PAPERS_DATA`` changed while it ran.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_default = REPO.parent / "shared" / "data"
if not os.environ.get("LIT_PAPERS_DATA") and _default.is_dir():
    os.environ["LIT_PAPERS_DATA"] = str(_default)
if os.environ.get("LIT_PAPERS_DATA"):  # CI passes ../shared/data: absolute, so symlinks and subprocesses in other
    os.environ["LIT_PAPERS_DATA"] = str(Path(os.environ["LIT_PAPERS_DATA"]).resolve())  # folders see the same root
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
if not os.environ.get("_LIT_PAPERS_TEST_SHARED"):  # this session's folder shared by its xdist workers (they inherit
    _shared = tempfile.mkdtemp(prefix="lit-papers-test-shared-")  # the controller's environment): the tiny fits
    os.environ["_LIT_PAPERS_TEST_SHARED"] = _shared
    atexit.register(shutil.rmtree, _shared, ignore_errors=True)
if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("OMP_NUM_THREADS"):
    # ``pytest -n N`` (the default, see pyproject.toml): N workers share the cores, one thread each, and so do
    # the CLI subprocesses they start (inherited); a test whose numbers depend on the thread count is a bug in it
    os.environ["OMP_NUM_THREADS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download (timm weights): fail fast instead of retrying
if not os.environ.get("LIT_PAPERS_CACHE"):  # generated sets of this session: never the data root, never stale
    _cache = tempfile.mkdtemp(prefix="lit-papers-test-cache-")
    os.environ["LIT_PAPERS_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject.toml): one worker per usable core, at most 4 (each worker starts CLI subprocesses
    of ~1 GB; more workers than that only add memory pressure on a large machine)."""
    return max(1, min(len(os.sched_getaffinity(0)), 4))


def tree_listing(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file and folder under ``root`` (symlinks not followed)."""
    out: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


def listing_changes(before: dict, after: dict, limit: int = 20) -> list[str]:
    """Human-readable differences between two :func:`tree_listing` results (at most ``limit``)."""
    lines = [f"added {p}" for p in sorted(after.keys() - before.keys())]
    lines += [f"removed {p}" for p in sorted(before.keys() - after.keys())]
    lines += [f"changed {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])


_DATA_ROOT = Path(os.environ["LIT_PAPERS_DATA"]) if os.environ.get("LIT_PAPERS_DATA") else None
_DATA_BEFORE = tree_listing(_DATA_ROOT) if _DATA_ROOT is not None and _DATA_ROOT.is_dir() else None


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when the suite wrote into the data root (issue 17, case 15)."""
    if _DATA_BEFORE is None or hasattr(session.config, "workerinput"):  # xdist: the controller checks
        return
    changes = listing_changes(_DATA_BEFORE, tree_listing(_DATA_ROOT))
    if changes:
        print(f"\nERROR: the test suite modified LIT_PAPERS_DATA={_DATA_ROOT} (it must stay read-only):\n  "
              + "\n  ".join(changes), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


def shared_tiny_fit(paper: str) -> tuple[Path, subprocess.CompletedProcess]:
    """One ``fit --config configs/<paper>/tiny.yaml --wandb false`` per test session, shared by every test (and
    every xdist worker, through a file lock) that needs a trained tiny run: the generic tiny-config test, the
    sweep-metric test and the papers' fit-then-test tests each used to train the same run again. The fit also
    carries the gradient probe (``tests.helpers.probes.CheckAllGradients``, first backward -> ``grads.json``).

    Returns (folder, the fit's process: stdout, stderr): ``folder/runs`` is the runs root (``runs/<paper>/tiny/v0``),
    ``folder/grads.json`` the probe's output; ``folder`` lives in this session's temporary folder, never reused by
    another session. Read-only for the tests: copy it (:func:`tiny_fit`) to write. A failed fit raises here and
    is retried by the next test that asks (nothing half-done is reused)."""
    import json

    from filelock import FileLock

    base = Path(os.environ["_LIT_PAPERS_TEST_SHARED"]) / "tiny-fits"
    base.mkdir(parents=True, exist_ok=True)
    folder, done = base / paper, base / paper / "fit.json"
    with FileLock(str(base / f"{paper}.lock")):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            proc = run_cli(["fit", "--config", f"configs/{paper}/tiny.yaml", "--wandb", "false",
                            "--trainer.callbacks+=tests.helpers.probes.CheckAllGradients",
                            f"--trainer.callbacks.out={folder / 'grads.json'}"], runs=folder / "runs")
            done.write_text(json.dumps({"args": proc.args, "stdout": proc.stdout, "stderr": proc.stderr}))
        record = json.loads(done.read_text())
        return folder, subprocess.CompletedProcess(record["args"], 0, record["stdout"], record["stderr"])


@pytest.fixture
def tiny_fit():
    """``tiny_fit(paper, into=runs)``: the session's shared tiny fit of ``paper`` (:func:`shared_tiny_fit`),
    copied into ``runs`` (e.g. ``cli.runs``) when given, so that a test may test, resume or add to it; returns
    the fit's process (stdout, stderr)."""

    def _fit(paper: str, into: Path | None = None) -> subprocess.CompletedProcess:
        folder, proc = shared_tiny_fit(paper)
        if into is not None:
            shutil.copytree(folder / "runs", into, dirs_exist_ok=True, symlinks=True)
        return proc

    return _fit
