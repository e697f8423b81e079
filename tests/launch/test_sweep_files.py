"""Generic checks over every sweep file and every paper (papers added later are covered automatically):

* every paper folder under configs/ has sweeps/<paper>.yaml;
* every sweep file validates with W&B's own schema and has a runnable `command`;
* every parameter key parses in the CLI and lands at its place in the resolved config (`--print_config`);
* `metric.name` is a key the paper's module logs (real run of configs/<paper>/tiny.yaml, read from metrics.csv).
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lit_papers.launch import sweep
from tests.conftest import shared_tiny_fit

REPO = Path(__file__).resolve().parents[2]
SWEEP_FILES = sorted((REPO / "sweeps").glob("*.yaml")) + [REPO / "tests/launch/tiny_grid_sweep.yaml"]
PAPERS = sorted(p.name for p in (REPO / "configs").iterdir() if p.is_dir() and p.name != "trainer")
ids = [str(p.relative_to(REPO)) for p in SWEEP_FILES]


def paper_of(config: dict) -> str:
    return Path(sweep.config_paths(config)[0]).parent.name


@pytest.mark.parametrize("paper", PAPERS)
def test_every_paper_has_a_sweep(paper):
    path = REPO / "sweeps" / f"{paper}.yaml"
    assert path.is_file(), f"add {path.relative_to(REPO)} (W&B sweep format, see sweeps/resnet_cifar.yaml)"
    config = sweep.load_sweep(path)
    assert all(Path(c).parent.name == paper for c in sweep.config_paths(config)), "sweep of another paper's config"


@pytest.mark.parametrize("path", SWEEP_FILES, ids=ids)
def test_sweep_file_is_valid(path):
    config = sweep.load_sweep(path)
    assert config["parameters"], "a sweep without parameters"
    for config_path in sweep.config_paths(config):
        assert (REPO / config_path).is_file(), f"{path}: {config_path} does not exist"
    assert config.get("metric", {}).get("name"), f"{path}: metric.name is required (a logged key)"


def _get(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("path", SWEEP_FILES[:-1], ids=ids[:-1])  # the test grid's keys are a subset
def test_parameters_parse_in_the_cli(path, tmp_path, monkeypatch, capsys):
    """W&B's first proposal, expanded as `wandb agent` would, resolves with every value at its key. The command's
    arguments run through the CLI's own entry point in this process (`--print_config` stops after parsing; a
    subprocess per sweep file only added the interpreter's start-up); tests/launch/test_sweep_runner.py runs
    trials as real subprocesses."""
    from lit_papers.cli import main
    from lit_papers.launch.run_dir import RUN_DIR_ENV

    sweeps = sweep.import_sweeps()
    config = sweep.load_sweep(path)
    random.seed(0)
    np.random.seed(0)
    params = sweep.plain({k: v["value"] for k, v in sweeps.next_run(config, []).config.items()})
    argv = sweep.trial_command(config, params, ["--print_config"])
    assert argv[:3] == [sys.executable, "-m", "lit_papers"] and argv[3] == "fit"
    assert [a for a in argv if a.startswith("--model") or a.startswith("--data") or a.startswith("--trainer")] == [
        f"--{k}={v}" for k, v in params.items()]
    monkeypatch.setenv("LIT_PAPERS_RUNS", str(tmp_path))
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    monkeypatch.chdir(REPO)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv[3:])
    out = capsys.readouterr()
    assert exit_.value.code in (0, None), out.err[-3000:]
    resolved = yaml.safe_load(out.out)
    for key, value in params.items():
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        assert _get(resolved, key) == (pytest.approx(value) if numeric else value), key


@pytest.mark.parametrize("paper", PAPERS)
def test_sweep_metric_is_logged(paper):
    """The paper's tiny config trained (the session's shared run, tests/conftest.py:shared_tiny_fit): the logged
    keys, read from the CSV log."""
    path = REPO / "sweeps" / f"{paper}.yaml"
    if not path.is_file():
        pytest.fail(f"no sweep file for {paper}")
    metric = sweep.load_sweep(path)["metric"]["name"]
    folder, _ = shared_tiny_fit(paper)
    (metrics_csv,) = (folder / "runs").glob(f"{paper}/tiny/*/csv/metrics.csv")
    with open(metrics_csv) as fh:
        rows = list(csv.DictReader(fh))
    assert any(row.get(metric) not in (None, "") for row in rows), f"{metric} never logged; logged: {list(rows[0])}"
    assert metric.split("/")[0] in ("val", "train"), "sweep on a validation (or training) metric, never test/*"
