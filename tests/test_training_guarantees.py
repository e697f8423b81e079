"""DDP on CPU (gloo), bf16-mixed on CPU, exact resume after a kill, atomic checkpoints."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lit_papers.callbacks.atomic_checkpoint import AtomicCheckpointIO

TINY = "configs/resnet_cifar/tiny.yaml"


def _last_metric(run_dir, key):
    with open(run_dir / "csv" / "metrics.csv") as fh:
        values = [row[key] for row in csv.DictReader(fh) if row.get(key)]
    return float(values[-1])


@pytest.mark.ddp
def test_ddp_ranks_see_disjoint_data_and_validation_is_exact(cli, tmp_path):
    probe = tmp_path / "probe"
    common = ["--wandb", "false", "--data.init_args.val_size", "251", "--trainer.limit_val_batches", "1.0"]
    cli("fit", "--config", TINY, *common, "--trainer.strategy", "ddp", "--trainer.devices", "2",
        "--trainer.accelerator", "cpu", "--trainer.max_steps", "6", "--trainer.val_check_interval", "6",
        "--trainer.callbacks+=tests.helpers.probes.RecordBatches", f"--trainer.callbacks.out={probe}", timeout=900)
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    seen0, seen1 = set(ranks[0]["hashes"]), set(ranks[1]["hashes"])
    assert len(ranks[0]["hashes"]) == len(ranks[1]["hashes"]) == 6 * 32
    assert not seen0 & seen1, "two DDP ranks trained on the same images"

    ckpt = cli.runs / "resnet_cifar" / "tiny" / "v0" / "checkpoints" / "last.ckpt"
    cli("validate", "--config", TINY, *common, "--ckpt_path", str(ckpt), "--trainer.strategy", "ddp",
        "--trainer.devices", "2", "--trainer.accelerator", "cpu", timeout=900)
    cli("validate", "--config", TINY, *common, "--ckpt_path", str(ckpt))
    two = cli.runs / "resnet_cifar" / "tiny" / "v1"
    one = cli.runs / "resnet_cifar" / "tiny" / "v2"
    # 251 images split 126/125 without padding: accuracy and loss equal the single-process values
    assert _last_metric(two, "val/acc") == pytest.approx(_last_metric(one, "val/acc"), abs=1e-7)
    assert _last_metric(two, "val/loss") == pytest.approx(_last_metric(one, "val/loss"), rel=1e-5)


def test_bf16_mixed_on_cpu(cli, tmp_path):
    out = tmp_path / "dtypes.json"
    cli("fit", "--config", TINY, "--wandb", "false", "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "3",
        "--trainer.callbacks+=tests.helpers.probes.RecordDtypes", f"--trainer.callbacks.out={out}")
    dtypes = json.loads(out.read_text())
    assert dtypes == {"logits": "torch.bfloat16", "weight": "torch.float32"}  # autocast, fp32 master weights


def test_killed_run_resumes_to_identical_weights(cli):
    common = ["--config", TINY, "--wandb", "false", "--run.checkpoint_every_n_steps", "3",
              "--trainer.callbacks+=tests.helpers.probes.KillAtStep"]
    cli("fit", *common, "--run.name", "straight")
    killed = cli("fit", *common, "--run.name", "interrupted", env={"KILL_AT_STEP": "7"}, check=False)
    assert killed.returncode != 0, "the probe should have killed the run at step 7"
    run = cli.runs / "interrupted" / "v0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    resumed = cli("fit", *common, "--run.name", "interrupted")
    assert "resuming from" in resumed.stderr
    a = torch.load(cli.runs / "straight" / "v0" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 12
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), f"{key} differs after resume"
    assert not (cli.runs / "interrupted" / "v1").exists()
    # the resumed attempt appends to metrics.csv instead of replacing the first attempt's rows
    with open(run / "csv" / "metrics.csv") as fh:
        steps = [int(row["step"]) for row in csv.DictReader(fh) if row.get("train/loss")]
    assert min(steps) < 6 <= max(steps), f"train/loss logged at steps {steps}"


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.ones(3)}, target)

    def crash(obj, fh, *a, **k):
        fh.write(b"partial")
        raise KeyboardInterrupt("killed during save")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"w": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
