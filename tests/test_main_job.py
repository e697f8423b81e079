"""README command 1 (the main job), scaled down: generated data in the official CIFAR format, trained and tested
through the real CLI with a fresh data root (no download, no ../shared)."""

from __future__ import annotations

import csv
import subprocess
import sys

from lit_papers.data.cifar import load_cifar
from lit_papers.launch import report
from tests.conftest import REPO


def test_main_job_runs_on_generated_data(cli, tmp_path):
    data = tmp_path / "data"
    cli("fit", "--config", "configs/resnet_cifar/synthetic.yaml", "--wandb", "false",
        "--data.init_args.per_batch", "120", "--data.init_args.test_size", "200", "--data.init_args.val_size", "100",
        "--data.init_args.num_workers", "0", "--trainer.max_epochs", "1",
        env={"LIT_PAPERS_DATA": str(data)})
    loaded = load_cifar(data / "cifar" / "synthetic-cifar-10-batches-py")
    assert loaded["train"][0].shape == (600, 32, 32, 3) and loaded["test"][0].shape == (200, 32, 32, 3)
    assert loaded["classes"][0] == "disc"
    run = cli.runs / "resnet_cifar" / "synthetic" / "v0"
    with open(run / "csv" / "metrics.csv") as fh:
        tested = [float(r["test/acc"]) for r in csv.DictReader(fh) if r.get("test/acc")]
    assert len(tested) == 1 and 0.0 <= tested[0] <= 1.0


def test_readme_paper_table_is_current():
    text = (REPO / "README.md").read_text()
    current = text.split(report.START, 1)[1].split(report.END, 1)[0].strip()
    assert current == report.markdown(report.collect()).strip(), "run `lit-papers report --write README.md`"


def test_report_json_lists_rows_with_evidence():
    out = subprocess.run([sys.executable, "-m", "lit_papers", "report", "--json"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    import json

    rows = json.loads(out)
    assert {"paper", "variant", "metric", "paper_value", "ours", "delta", "pass", "evidence"} <= set(rows[0])
    kept = [r for r in rows if r["ours"] is not None]
    assert kept and all(r["evidence"]["seed"] is not None and r["evidence"]["versions"] for r in kept)
