"""README command 1 (the main job: Mask R-CNN on generated shapes in the COCO format) and the ResNet job on generated
CIFAR-format data, scaled down, through the real CLI with a fresh data root (no download, no ../shared)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

from PIL import Image

from lit_papers.data.cifar import load_cifar
from lit_papers.launch import report
from tests.conftest import REPO


def test_readme_command_1_is_the_shapes_main_job_and_runs_scaled_down(cli, tmp_path):
    readme = (REPO / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", readme.split("## Quick start", 1)[1], re.S).group(1)
    assert "pip install -e" in first and "lit-papers fit --config configs/mask_rcnn/shapes.yaml" in first
    data = tmp_path / "data"
    proc = cli("fit", "--config", "configs/mask_rcnn/shapes.yaml", "--wandb", "false",
               "--data.init_args.num_train", "16", "--data.init_args.num_val", "4", "--data.init_args.batch_size", "4",
               "--data.init_args.eval_batch_size", "4", "--data.init_args.num_workers", "0",
               "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
               env={"LIT_PAPERS_DATA": str(data), "LIT_PAPERS_CACHE": str(tmp_path / "cache")})
    assert not data.exists()  # generated data goes to the cache, never into the data root
    generated = tmp_path / "cache" / "generated" / "coco" / "shapes"
    coco = json.loads((generated / "annotations" / "instances_val2017.json").read_text())
    assert len(coco["images"]) == 4 and {c["name"] for c in coco["categories"]} == {"circle", "square", "triangle"}
    assert all(a["segmentation"] for a in coco["annotations"])  # polygon masks
    run = cli.runs / "mask_rcnn" / "shapes" / "v0"
    out = proc.stdout + proc.stderr
    assert "COCO AP on 4 images" in out
    with open(run / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert any(r.get("val/segm_AP50") for r in rows) and any(r.get("val/bbox_AP50") for r in rows)
    picture = Image.open(run / "predictions_val.png")
    assert picture.width >= 128 and picture.height >= 128


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
    assert current == report.headline_markdown(report.collect()).strip(), "run `lit-papers report --write`"


def test_report_json_lists_rows_with_evidence():
    out = subprocess.run([sys.executable, "-m", "lit_papers", "report", "--json"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    rows = json.loads(out)
    assert {"paper", "variant", "metric", "paper_value", "ours", "delta", "pass", "evidence"} <= set(rows[0])
    kept = [r for r in rows if r["ours"] is not None]
    assert kept and all(r["evidence"]["seed"] is not None and r["evidence"]["versions"] for r in kept)
