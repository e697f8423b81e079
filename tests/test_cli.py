"""The one CLI, end to end on the real CIFAR sample: run folders, saved config, W&B, errors."""

from __future__ import annotations

import csv
import json
import shutil

import yaml

TINY = "configs/resnet_cifar/tiny.yaml"


def _metrics(run_dir):
    with open(run_dir / "csv" / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_tiny_fit_writes_a_complete_run_folder(cli):
    cli("fit", "--config", TINY, "--wandb", "false")
    run = cli.runs / "resnet_cifar" / "tiny" / "v0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "FINISHED").exists() and not (run / "run.lock").exists()
    config = yaml.safe_load((run / "config.yaml").read_text())
    # the *resolved* config: defaults filled in, run folder recorded
    assert config["model"]["init_args"]["model"]["init_args"]["depth"] == 8
    assert config["model"]["init_args"]["optimizer"]["init_args"]["momentum"] == 0.9
    assert config["data"]["init_args"]["normalization"] == "per_pixel_mean"  # a default, not in tiny.yaml
    assert config["trainer"]["default_root_dir"] == str(run)
    assert config["seed_everything"] == 0
    rows = _metrics(run)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    accs = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
    lrs = [float(r["lr-SGD"]) for r in rows if r.get("lr-SGD")]
    assert losses and all(loss == loss for loss in losses)
    assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
    assert min(lrs) < max(lrs)  # the learning-rate monitor saw warm-up and steps

    # same command again after it finished: a new run folder, the first is untouched
    cli("fit", "--config", TINY, "--wandb", "false", "--trainer.max_steps", "2")
    assert (cli.runs / "resnet_cifar" / "tiny" / "v1" / "config.yaml").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_steps"] == 12


def test_test_after_fit_and_wandb_offline_with_full_config(cli, tmp_path):
    out = tmp_path / "wandb_config.json"
    env = {"HOME": str(tmp_path), "WANDB_MODE": "", "WANDB_API_KEY": "", "WANDB_DIR": str(tmp_path)}
    cli("fit", "--config", TINY, "--trainer.max_steps", "4", "--run.test_after_fit", "true",
        "--trainer.callbacks+=tests.helpers.probes.CaptureLoggerConfig", f"--trainer.callbacks.out={out}", env=env)
    captured = json.loads(out.read_text())
    assert captured["offline"] in ("offline", "dryrun")  # no credentials -> offline, no server contacted
    config = captured["config"]
    assert config["model"]["init_args"]["model"]["class_path"] == "lit_papers.papers.resnet_cifar.model.ResNetCifar"
    assert config["data"]["init_args"]["val_size"] == 500
    assert config["trainer"]["max_steps"] == 4
    run = cli.runs / "resnet_cifar" / "tiny" / "v0"
    assert list((run / "wandb").glob("offline-run-*"))
    assert any(r.get("test/acc") for r in _metrics(run))


def test_a_crashed_test_after_fit_leaves_the_run_resumable_and_the_rerun_only_tests(cli, tmp_path):
    ok = tmp_path / "let_the_test_pass"
    args = ("fit", "--config", TINY, "--wandb", "false", "--trainer.max_steps", "4", "--run.test_after_fit", "true",
            "--trainer.callbacks+=tests.helpers.probes.FailTestUnless", f"--trainer.callbacks.unless={ok}")
    proc = cli(*args, check=False)
    assert proc.returncode != 0 and "failed on purpose" in proc.stderr
    run = cli.runs / "resnet_cifar" / "tiny" / "v0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "FINISHED").exists()  # training ended, the run did not (it has no test result)
    assert not any(r.get("test/acc") for r in _metrics(run))
    trained = [r["step"] for r in _metrics(run) if r.get("train/loss")]

    ok.write_text("")
    cli(*args)  # the same command: resumes v0 at step 4, trains nothing, tests
    assert not (cli.runs / "resnet_cifar" / "tiny" / "v1").exists()
    assert (run / "FINISHED").exists() and not (run / "run.lock").exists()
    rows = _metrics(run)
    assert [r["step"] for r in rows if r.get("train/loss")] == trained  # no training step was repeated
    assert any(r.get("test/acc") for r in rows)


def test_test_into_the_training_run_folder_keeps_its_metrics(cli):
    """`test --run.version v0` (e.g. to add a card result to a finished run) appends its rows to metrics.csv;
    it used to replace the file, so the run's training curves were lost."""
    cli("fit", "--config", TINY, "--wandb", "false", "--trainer.max_steps", "4")
    run = cli.runs / "resnet_cifar" / "tiny" / "v0"
    trained = [(r["step"], r["train/loss"]) for r in _metrics(run) if r.get("train/loss")]
    assert trained
    cli("test", "--config", TINY, "--wandb", "false", "--run.version", "v0",
        "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    rows = _metrics(run)
    assert [(r["step"], r["train/loss"]) for r in rows if r.get("train/loss")] == trained
    assert any(r.get("test/acc") for r in rows)


def test_wrong_config_key_is_a_clear_error(cli):
    proc = cli("fit", "--config", TINY, "--wandb", "false", "--model.init_args.model.init_args.dept", "20", check=False)
    assert proc.returncode != 0
    assert "dept" in proc.stderr


def test_console_script_and_module_entry_point(cli):
    assert "fit" in cli("--help").stdout
    script = shutil.which("lit-papers")
    assert script is not None, "console script `lit-papers` not installed (pip install -e .)"


def test_default_precision_is_bf16_on_gpus_only():
    from lit_papers.cli import default_precision

    assert default_precision("auto", cuda=True, bf16=True) == "bf16-mixed"
    assert default_precision("gpu", cuda=True, bf16=False) == "16-mixed"
    assert default_precision("cpu", cuda=True, bf16=True) is None
    assert default_precision("auto", cuda=False) is None


def test_predict_writes_class_probabilities(tmp_path):
    import torch

    from lit_papers.classification import ClassifierLitModule
    from lit_papers.papers.resnet_cifar.model import ResNetCifar

    module = ClassifierLitModule(model=ResNetCifar(depth=8), optimizer=torch.optim.SGD)
    out = module.predict_step((torch.randn(3, 3, 32, 32), torch.zeros(3, dtype=torch.long)), 0)
    assert out["probs"].shape == (3, 10)
    assert torch.allclose(out["probs"].sum(-1), torch.ones(3))
    assert torch.equal(out["label"], out["probs"].argmax(-1))


def test_hparam_differences_names_each_changed_model_argument():
    from jsonargparse import Namespace

    from lit_papers.cli import hparam_differences

    model = Namespace(class_path="a.B", init_args=Namespace(lr=0.1, sizes=(16, 10.0), tta=None, nested=Namespace(x=1)))
    saved = {"_class_path": "a.B", "_instantiator": "x", "lr": 0.1, "sizes": [16, 10], "tta": [2, 1], "nested": {"x": 1},
             "not_in_config": 3}
    lines = hparam_differences(saved, model)
    assert lines == ["model.init_args.tta: using the config's None; the checkpoint was trained with [2, 1]"]
    assert hparam_differences({"_class_path": "a.C"}, model) == ["model class: config a.B, checkpoint a.C"]
    assert hparam_differences({}, model) == []


def test_help_lists_every_subcommand(cli):
    from lit_papers.cli import COMMANDS

    out = cli("--help").stdout
    for name in ("fit", "validate", "test", "predict", "report", "sweep", "slurm", "retarget", "check-data"):
        assert name in COMMANDS
        lines = [line for line in out.splitlines() if line.split()[:1] == [name]]
        assert len(lines) == 1 and len(lines[0].split()) > 2, f"{name}: {lines}"


def test_check_data_dispatches_to_the_data_checker(monkeypatch):
    import sys
    import types

    import pytest

    from lit_papers import cli

    calls = []
    fake = types.ModuleType("lit_papers.data.check")
    fake.main = lambda argv: calls.append(argv) or 3
    monkeypatch.setitem(sys.modules, "lit_papers.data.check", fake)
    with pytest.raises(SystemExit) as info:
        cli.main(["check-data", "--config", TINY])
    assert info.value.code == 3 and calls == [["--config", TINY]]


def test_switching_the_datamodule_class_names_the_kept_config_values(cli):
    # issue 17 case 13: --data COCODataModule over the shapes tiny recipe keeps subdir: shapes-tiny; the CLI says so
    # before anything runs, and the missing-data error names the config key that chose the folder.
    proc = cli("fit", "--config", "configs/mask_rcnn/tiny.yaml", "--data", "lit_papers.data.coco.COCODataModule",
               "--wandb", "false", "--trainer.max_steps", "1", check=False)
    err = proc.stderr
    assert proc.returncode != 0
    assert "--data switched lit_papers.data.coco.ShapesDataModule -> lit_papers.data.coco.COCODataModule" in err
    assert "data.init_args.subdir = 'shapes-tiny'" in err



def test_a_second_checkout_in_the_current_folder_is_named(tmp_path, capsys, monkeypatch):
    """Run from another checkout (a git worktree), the console script would run this checkout's code: it says so."""
    from pathlib import Path

    import pytest

    import lit_papers
    from lit_papers import cli as cli_module

    here = Path(lit_papers.__file__).resolve().parent.parent
    assert cli_module.other_checkout(here) is None
    assert cli_module.other_checkout(here / "configs" / "resnet_cifar") is None  # below this checkout: fine
    other = tmp_path / "wt"
    (other / "lit_papers").mkdir(parents=True)
    (other / "lit_papers" / "__init__.py").write_text("")
    (other / "pyproject.toml").write_text("[project]\nname = 'lit-papers'\n")
    (other / "configs").mkdir()
    assert cli_module.other_checkout(other / "configs") == other.resolve()
    assert cli_module.other_checkout(tmp_path) is None  # not inside any checkout
    monkeypatch.chdir(other / "configs")
    with pytest.raises(SystemExit):
        cli_module.main(["report", "--help"])
    err = capsys.readouterr().err
    assert f"inside the checkout {other.resolve()}" in err and "python -m lit_papers" in err
    monkeypatch.chdir(here)
    with pytest.raises(SystemExit):
        cli_module.main(["report", "--help"])
    assert "inside the checkout" not in capsys.readouterr().err
