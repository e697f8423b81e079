"""``lit-papers check-data`` (issue 17, case 2): the full check of every split, its summary and exit status, on
temporary copies; the DataModule is built from the config exactly as ``fit`` builds it."""

from __future__ import annotations

import yaml

from lit_papers.data.check import build_datamodule, main
from tests.conftest import REPO
from tests.data.test_detection_data_checks import coco_copy, voc_copy

REPO_CONFIGS = str(REPO / "configs")


def _config(tmp_path, data: dict) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"seed_everything": 0, "trainer": {"max_steps": 1},
                                    "model": {"class_path": "not.imported.Model"}, "data": data}))
    return str(path)


def _coco_data(root) -> dict:
    return {"class_path": "lit_papers.data.coco.COCODataModule",
            "init_args": {"root": str(root), "train_split": "val2017", "val_split": "val2017",
                          "test_split": "val2017", "download": False, "num_workers": 0}}


def test_check_data_reports_every_bad_file_and_exits_nonzero(shared_data, tmp_path, capsys):
    folder, images = coco_copy(shared_data, tmp_path, n=4)
    for info in images[1:3]:  # two truncated files: both are listed, training would not start
        path = folder / "val2017" / info["file_name"]
        path.write_bytes(path.read_bytes()[:2000])
    assert main(["--config", _config(tmp_path, _coco_data(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "COCODataModule: 4 files checked, 2 bad" in out
    for info in images[1:3]:
        assert f"BAD image {folder / 'val2017' / info['file_name']} is a truncated JPEG" in out


def test_check_data_passes_on_good_data_and_reads_option_overrides(shared_data, tmp_path, capsys):
    voc_copy(shared_data, tmp_path)
    config = _config(tmp_path, {"class_path": "lit_papers.data.voc.VOCDataModule",
                                "init_args": {"root": "/nonexistent", "download": False, "num_workers": 0}})
    assert main(["--config", config, "--data.init_args.root", str(tmp_path)]) == 0  # later options win
    assert "VOCDataModule: 5 files checked, 0 bad" in capsys.readouterr().out


def test_check_data_on_missing_data_names_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIT_PAPERS_DATA", str(tmp_path))
    # issue 17, case 13: switching the class over the tiny shapes recipe keeps its subdir
    args = ["--config", f"{REPO_CONFIGS}/mask_rcnn/tiny.yaml", "--data", "lit_papers.data.coco.COCODataModule"]
    dm = build_datamodule(args[1:2], args[2:])
    assert type(dm).__name__ == "COCODataModule" and dm.hparams.subdir == "shapes-tiny"  # what fit would build
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "data.init_args.subdir = 'shapes-tiny'" in err and "--data.init_args.subdir null" in err
    assert "--data switched lit_papers.data.coco.ShapesDataModule -> lit_papers.data.coco.COCODataModule" in err


def test_check_data_builds_the_tiny_recipe_like_fit(tmp_path, capsys):
    assert main(["--config", f"{REPO_CONFIGS}/mask_rcnn/tiny.yaml", "--mode", "header"]) == 0
    assert "ShapesDataModule: 20 files checked, 0 bad" in capsys.readouterr().out


def test_switched_class_note_lists_the_kept_config_values(tmp_path):
    from lit_papers.data.check import switched_class_note

    tiny = f"{REPO_CONFIGS}/mask_rcnn/tiny.yaml"
    resolved = {"class_path": "lit_papers.data.coco.COCODataModule",
                "init_args": {"subdir": "shapes-tiny", "batch_size": 2, "min_size": 800}}
    note = switched_class_note([tiny], resolved)
    assert "ShapesDataModule -> lit_papers.data.coco.COCODataModule" in note
    assert "data.init_args.subdir = 'shapes-tiny'" in note and "min_size" not in note
    same = {"class_path": "lit_papers.data.coco.ShapesDataModule", "init_args": {"subdir": "shapes-tiny"}}
    assert switched_class_note([tiny], same) is None
    assert switched_class_note([tiny], {"class_path": "lit_papers.data.coco.COCODataModule",
                                        "init_args": {"subdir": None}}) is None
