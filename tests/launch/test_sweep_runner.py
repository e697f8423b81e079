"""The local sweep runner: command expansion, W&B search and hyperband through our state, and a real grid sweep."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest
import yaml

from lit_papers.launch import sweep
from lit_papers.launch.sweep_trial import SweepStore, SweepTrialCallback, best_trial

REPO = Path(__file__).resolve().parents[2]
TINY_GRID = REPO / "tests/launch/tiny_grid_sweep.yaml"
LR, WD = "model.init_args.optimizer.init_args.lr", "model.init_args.optimizer.init_args.weight_decay"


def write_sweep(tmp_path: Path, **overrides) -> Path:
    config = yaml.safe_load(TINY_GRID.read_text())
    config.update(overrides)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_command_expansion_matches_wandb_agent():
    config = sweep.load_sweep(TINY_GRID)
    argv = sweep.trial_command(config, {LR: 0.05, WD: 0.0001, "data.init_args.augment": False}, ["--wandb=false"])
    assert argv[1:] == ["-m", "lit_papers", "fit", "--config", "configs/resnet_cifar/tiny.yaml",
                        f"--{LR}=0.05", f"--{WD}=0.0001", "--data.init_args.augment=False", "--wandb=false"]


@pytest.mark.parametrize("bad, message", [
    ({"method": "annealing"}, "not a valid W&B sweep"),
    ({"command": ["${env}", "lit-papers", "fit", "--config", "x.yaml"]}, "${args}"),
    ({"command": ["${env}", "lit-papers", "test", "${args}"]}, "lit-papers fit"),
    ({"parameters": {LR: {"min": 0.1}}}, "not a valid W&B sweep"),
])
def test_bad_sweep_files_name_the_file(tmp_path, bad, message):
    path = write_sweep(tmp_path, **bad)
    with pytest.raises(sweep.SweepFileError, match=str(path).replace(".", r"\.")) as err:
        sweep.load_sweep(path)
    assert message in str(err.value)


def _store(tmp_path: Path, **overrides) -> tuple[SweepStore, dict]:
    path = write_sweep(tmp_path, **overrides)
    config = sweep.load_sweep(path)
    return sweep.init_sweep_dir(tmp_path / "sweep", config, path, seed=0), config


def test_grid_proposals_cover_the_grid_once(tmp_path):
    store, _ = _store(tmp_path)
    proposals = [sweep.propose(store, None, seed=0) for _ in range(5)]
    assert [i for i, _ in proposals] == [0, 1, 2, 3, 4]
    points = [(p[LR], p[WD]) for _, p in proposals[:4]]
    assert sorted(points) == sorted(itertools.product([0.05, 0.2], [0.0001, 0.0005]))
    assert proposals[4][1] is None  # exhausted
    assert sweep.propose(store, 2, seed=0) == (2, proposals[2][1])  # a requeued array task gets its record back


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_random_and_bayes_are_seeded(tmp_path, method):
    space = {LR: {"distribution": "log_uniform_values", "min": 0.01, "max": 1.0}, WD: {"values": [1e-4, 5e-4]}}

    def draws(folder: str, seed: int) -> list:
        store, _ = _store(tmp_path / folder, method=method, parameters=space)
        out = []
        for i in range(3):
            _, params = sweep.propose(store, None, seed=seed)
            with store.locked() as state:  # finish it with a made-up metric so bayes has data
                state["trials"][str(i)].update(state="finished", summary=params[LR], history=[params[LR]])
            out.append(params)
        return out

    a, b, c = draws("a", 0), draws("b", 0), draws("c", 1)
    assert a == b and a != c
    assert all(0.01 <= p[LR] <= 1.0 and p[WD] in (1e-4, 5e-4) and isinstance(p[LR], float) for p in a)


class _Strategy:
    @staticmethod
    def broadcast(obj, src=0):
        return obj


class _Trainer:
    """The parts of a Trainer the callback reads."""

    def __init__(self, value: float, run_dir: Path) -> None:
        import torch

        self.is_global_zero, self.sanity_checking, self.should_stop = True, False, False
        self.callback_metrics = {"val/acc": torch.tensor(value)}
        self.strategy, self.global_step, self.default_root_dir = _Strategy(), 10, str(run_dir)


def test_hyperband_stops_the_worst_trial(tmp_path):
    """min_iter 1, eta 2 (W&B's rule, computed by hand): at band 1 the threshold is the value at position
    int(n / eta) of all first-validation values sorted best first (the judged run included); a running run worse
    than it stops. Trial 2 (0.52): [0.7, 0.6, 0.52] -> 0.6 -> stop. Trial 3 (0.65), after trial 2 reported:
    [0.7, 0.65, 0.6, 0.52] -> 0.6 -> go on."""
    store, config = _store(tmp_path, method="random", parameters={LR: {"values": [0.1]}},
                           early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2})
    with store.locked() as state:
        for i, hist in enumerate([[0.6, 0.62], [0.7, 0.75]]):
            state["trials"][str(i)] = {"params": {LR: 0.1}, "state": "finished", "history": hist, "summary": hist[-1]}
        state["trials"]["2"] = {"params": {LR: 0.1}, "state": "running", "history": []}
        state["trials"]["3"] = {"params": {LR: 0.1}, "state": "running", "history": []}
    low, high = SweepTrialCallback(store.dir, 2), SweepTrialCallback(store.dir, 3)
    t_low, t_high = _Trainer(0.52, tmp_path), _Trainer(0.65, tmp_path)
    low.on_validation_end(t_low, None)
    high.on_validation_end(t_high, None)
    assert t_low.should_stop and low.stopped_early
    assert not t_high.should_stop
    trials = store.read()["trials"]
    assert trials["2"]["history"] == [pytest.approx(0.52)] and trials["3"]["summary"] == pytest.approx(0.65)


def test_best_trial_follows_the_goal():
    state = {"trials": {"0": {"summary": 0.3}, "1": {"summary": 0.7}, "2": {"summary": None}, "3": {"summary": 0.7}}}
    assert best_trial(state, {"metric": {"name": "m", "goal": "maximize"}})[0] == 1
    assert best_trial(state, {"metric": {"name": "m", "goal": "minimize"}})[0] == 0


def test_local_grid_sweep_end_to_end(cli, tmp_path):
    """Two trials of the tiny grid (shortened, each DDP on 2 CPU processes with gloo), real `fit`s: table rows =
    trials, metric = each trial's last logged val/acc read from its own CSV log, both ranks of each trial saw the
    trial's parameters, best.yaml = the best trial's full config with its parameters."""
    sweep_dir = tmp_path / "sweep"
    proc = cli("sweep", str(TINY_GRID), "--count", "2", "--dir", str(sweep_dir), "--", "--wandb=false",
               "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.devices=2",
               "--trainer.strategy=ddp")
    assert "best: trial" in proc.stderr
    rows = list(csv.DictReader(open(sweep_dir / "results.csv")))
    assert [r["trial"] for r in rows] == ["0", "1"] and all(r["state"] == "finished" for r in rows)
    state = json.loads((sweep_dir / "state.json").read_text())
    grid = set(itertools.product([0.05, 0.2], [0.0001, 0.0005]))
    for row in rows:
        assert (float(row[LR]), float(row[WD])) in grid
        run_dir = Path(row["run_dir"])
        assert run_dir == sweep_dir / "trials" / row["trial"] and (run_dir / "FINISHED").is_file()
        logged = [float(r["val/acc"]) for r in csv.DictReader(open(run_dir / "csv/metrics.csv")) if r.get("val/acc")]
        assert len(logged) == 2 and float(row["val/acc"]) == pytest.approx(logged[-1])
        assert state["trials"][row["trial"]]["history"] == pytest.approx(logged)
        run_opt = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["init_args"]["optimizer"]["init_args"]
        assert (run_opt["lr"], run_opt["weight_decay"]) == (float(row[LR]), float(row[WD]))
        assert int(row["steps"]) == 4
        trial = state["trials"][row["trial"]]
        assert trial["ranks_checked"] == 2  # rank 1 (launched by Lightning) parsed the same values as rank 0
        assert {k: float(v) for k, v in trial["rank_params"].items()} == {LR: float(row[LR]), WD: float(row[WD])}
    assert len({(r[LR], r[WD]) for r in rows}) == 2
    best = max(rows, key=lambda r: (float(r["val/acc"]), -int(r["trial"])))
    best_cfg = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    run_cfg = yaml.safe_load((Path(best["run_dir"]) / "config.yaml").read_text())
    assert best_cfg["model"] == run_cfg["model"] and best_cfg["data"] == run_cfg["data"]
    assert "ckpt_path" not in best_cfg and "default_root_dir" not in best_cfg["trainer"]
    assert best_cfg["trainer"]["max_steps"] == 4
    md = (sweep_dir / "results.md").read_text()
    assert md.count("\n| ") == 3 and f"best: trial {best['trial']}" in md  # header + 2 rows


@pytest.mark.slow
def test_hyperband_stops_a_real_trial(cli, tmp_path):
    """Random search with hyperband (min_iter 1, eta 2) over the tiny config: with seed 3, trial 3 (lr 0.074) is
    stopped at its first validation (step 2 of 8); W&B's rule re-checked on the recorded first-validation values."""
    import math

    path = write_sweep(tmp_path, method="random", early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2},
                       parameters={LR: {"distribution": "log_uniform_values", "min": 0.001, "max": 1.0}})
    sweep_dir = tmp_path / "sweep"
    cli("sweep", str(path), "--count", "4", "--seed", "3", "--dir", str(sweep_dir), "--", "--wandb=false",
        "--trainer.max_steps=8", "--trainer.val_check_interval=2")
    trials = json.loads((sweep_dir / "state.json").read_text())["trials"]
    stopped = [k for k, t in trials.items() if t["state"] == "stopped"]
    assert stopped == ["3"] and trials["3"]["steps"] == 2 and len(trials["3"]["history"]) == 1
    assert all(trials[k]["state"] == "finished" and trials[k]["steps"] == 8 for k in "012")
    firsts = sorted([trials[k]["history"][0] for k in "0123"], reverse=True)  # best first (maximize)
    threshold = firsts[math.floor(len(firsts) / 2)]
    assert trials["3"]["history"][0] < threshold
