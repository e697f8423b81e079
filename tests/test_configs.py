"""Generic checks over everything that exists: every config parses and builds; every tiny config trains with
every parameter receiving a gradient; the dependency rules of DESIGN.md hold."""

from __future__ import annotations

import ast
import csv
import json
import os
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_tiny_fit

CONFIGS = sorted(p for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name != "trainer")
TINY = sorted(p for p in CONFIGS if p.name == "tiny.yaml")
PAPERS = sorted(p for p in (REPO / "lit_papers" / "papers").iterdir() if (p / "model.py").exists())


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO))


@pytest.mark.parametrize("config", CONFIGS, ids=_rel)
def test_every_config_parses_and_builds(config, tmp_path, monkeypatch):
    from lit_papers.cli import LitPapersCLI
    from lit_papers.launch.run_dir import RUN_DIR_ENV

    monkeypatch.setenv("LIT_PAPERS_RUNS", str(tmp_path))
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    monkeypatch.chdir(REPO)
    # faithful detection configs ask for ImageNet weights (pretrained: true); tests download nothing, so the
    # backbone is built with random init and the request is recorded instead
    import timm

    from lit_papers.backbones import timm_backbone

    asked, create_model = [], timm.create_model

    def offline_create_model(name, *args, pretrained=False, **kwargs):
        asked.append(pretrained)
        return create_model(name, *args, pretrained=False, **kwargs)

    monkeypatch.setattr(timm_backbone.timm, "create_model", offline_create_model)
    try:
        cli = LitPapersCLI(args=["--config", str(config), "--wandb", "false", "--trainer.logger", "false"], run=False)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    assert sum(p.numel() for p in cli.model.parameters()) > 0
    assert cli.datamodule is not None


@pytest.mark.parametrize("config", TINY, ids=_rel)
def test_every_tiny_config_trains_and_every_parameter_gets_a_gradient(config):
    """The whole tiny config trains through the CLI (the session's shared run, which the sweep-metric test and the
    papers' fit-then-test tests reuse): a checkpoint and logged training rows, and every trainable parameter gets a
    finite gradient in the first backward."""
    paper = config.parent.name
    folder, _ = shared_tiny_fit(paper)
    grads = json.loads((folder / "grads.json").read_text())
    assert grads["total"] > 0
    assert grads["missing"] == [], f"parameters without a finite gradient: {grads['missing'][:10]}"
    (run,) = (folder / "runs" / paper / "tiny").iterdir()
    assert (run / "checkpoints" / "last.ckpt").is_file(), f"{run}: no last.ckpt"
    with open(run / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert any(v not in (None, "") for row in rows for k, v in row.items() if k.startswith("train/")), \
        f"{run}: no train/* value logged"


def _empty_classes(path: Path) -> list[str]:
    """Classes whose body is only a docstring and/or ``pass`` (kept only to exist)."""
    tree = ast.parse(path.read_text())
    return [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            and all(isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                    for s in node.body)]


def paper_layout_problems(paper: Path, configs: Path) -> list[str]:
    """model.py, card.yaml, README.md and configs/<paper>/tiny.yaml must exist; module.py is optional (a paper whose
    training is shared machinery, e.g. detection's DetectionLitModule, has none) but holds no empty classes, and
    without one every config of the paper names a LightningModule outside the paper folders."""
    import yaml

    problems = [f"{paper.name} lacks {name}" for name in ("model.py", "card.yaml", "README.md")
                if not (paper / name).is_file()]
    if not (configs / paper.name / "tiny.yaml").is_file():
        problems.append(f"configs/{paper.name}/tiny.yaml missing")
    module = paper / "module.py"
    if module.is_file():
        problems += [f"{paper.name}/module.py: class {c} is empty (delete it and use the shared module)"
                     for c in _empty_classes(module)]
    else:
        for cfg in sorted((configs / paper.name).glob("*.yaml")):
            path = ((yaml.safe_load(cfg.read_text()) or {}).get("model") or {}).get("class_path", "")
            if path.startswith("lit_papers.papers."):
                problems.append(f"{cfg.name}: model.class_path {path} points into papers/ but {paper.name} has no module.py")
    return problems


@pytest.mark.parametrize("paper", PAPERS, ids=lambda p: p.name)
def test_every_paper_has_its_parts(paper):
    assert paper_layout_problems(paper, REPO / "configs") == []


def test_paper_layout_check_catches_an_empty_module_and_missing_parts(tmp_path):
    paper, configs = tmp_path / "papers" / "p", tmp_path / "configs"
    paper.mkdir(parents=True)
    (configs / "p").mkdir(parents=True)
    (paper / "model.py").write_text("import torch\n")
    (paper / "module.py").write_text('class PLitModule(Base):\n    """Docstring."""\n\n    pass\n')
    problems = paper_layout_problems(paper, configs)
    assert "p lacks card.yaml" in problems and "configs/p/tiny.yaml missing" in problems
    assert any("class PLitModule is empty" in p for p in problems)
    (paper / "module.py").unlink()
    (configs / "p" / "tiny.yaml").write_text("model:\n  class_path: lit_papers.papers.p.module.PLitModule\n")
    assert any("has no module.py" in p for p in paper_layout_problems(paper, configs))


# layer -> lit_papers subpackages it must not import (DESIGN.md "Dependency direction"). "schedules" is the
# top-level module lit_papers/schedules.py (LR schedules: torch only).
FORBIDDEN = {
    "ops": ("layers", "backbones", "detection", "papers", "data", "metrics", "callbacks", "launch", "cli", "schedules"),
    "layers": ("backbones", "detection", "papers", "data", "metrics", "callbacks", "launch", "cli"),
    "backbones": ("detection", "papers", "data", "metrics", "callbacks", "launch", "cli"),
    # detection/module.py is the LightningModule shared by Faster and Mask R-CNN; it evaluates with metrics/
    # (COCO/VOC AP), which depend on ops only, so the edge creates no cycle (a documented DESIGN deviation)
    "detection": ("papers", "data", "callbacks", "launch", "cli"),
    "data": ("layers", "backbones", "detection", "papers", "metrics", "callbacks", "launch", "cli"),
    "metrics": ("layers", "backbones", "detection", "papers", "data", "callbacks", "launch", "cli"),
    "callbacks": ("layers", "backbones", "detection", "papers", "data", "metrics", "launch", "cli"),
    # launch/ renders and submits jobs and reports cards (callbacks.card); it never builds models or data
    "launch": ("layers", "backbones", "detection", "papers", "data", "metrics", "cli"),
    "schedules": ("layers", "backbones", "detection", "papers", "data", "metrics", "callbacks", "launch", "cli"),
    # classification.py is the LightningModule shared by the CIFAR papers (as detection/module.py for the R-CNNs):
    # the network is injected, so it needs neither a paper nor the data
    "classification": ("layers", "backbones", "detection", "papers", "data", "callbacks", "launch", "cli"),
}
LIGHTNING = ("lightning", "pytorch_lightning")


def _module_name(rel: Path) -> str:
    """lit_papers-relative path -> dotted module name (``detection/module.py`` -> ``lit_papers.detection.module``)."""
    parts = ["lit_papers", *rel.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, rel: Path) -> tuple[set[str], list[str]]:
    """Absolute names of everything ``path`` imports (relative imports resolved; ``from lit_papers import data``
    counted as ``lit_papers.data``), and the dynamic-import escapes it uses (``importlib`` other than
    ``importlib.metadata``, ``__import__``), which a static check cannot follow."""
    tree = ast.parse(path.read_text())
    package = _module_name(rel).split(".") if rel.name == "__init__.py" else _module_name(rel).split(".")[:-1]
    found, dynamic = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
                if alias.name == "importlib":
                    dynamic.append("import importlib")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            if module.split(".")[0] == "lit_papers":
                found |= {f"{module}.{alias.name}" for alias in node.names}  # a submodule or a name: both harmless
            if module == "importlib" and any(a.name != "metadata" for a in node.names):
                dynamic.append(f"from importlib import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            dynamic.append("__import__(...)")
    return found, dynamic


def dependency_problems(root: Path) -> list[str]:
    """Every violation of DESIGN.md's dependency rules in the package at ``root`` (a ``lit_papers`` folder)."""
    problems = []
    graph: dict[str, set[str]] = {}
    uses_lightning: set[str] = set()
    files = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        name = _module_name(rel)
        mods, dynamic = _imports(path, rel)
        files[name] = rel
        graph[name] = {m for m in mods if m.split(".")[0] == "lit_papers"}
        if any(m.split(".")[0] in LIGHTNING for m in mods):
            uses_lightning.add(name)
        layer = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for d in dynamic:
            problems.append(f"{rel}: dynamic import ({d}) hides dependencies from this check")
        for m in graph[name]:
            parts = m.split(".")
            if m == "lit_papers.cli" or m.startswith("lit_papers.cli."):
                if rel.name != "__main__.py":
                    problems.append(f"{rel}: imports lit_papers.cli (nothing imports cli.py)")
            if layer in FORBIDDEN and len(parts) > 1 and parts[1] in FORBIDDEN[layer]:
                problems.append(f"{rel}: {layer} must not import {m}")
            if layer == "papers" and len(rel.parts) > 2 and len(parts) > 2 and parts[1] == "papers" \
                    and parts[2] != rel.parts[1]:
                problems.append(f"{rel}: papers never import each other ({m})")
    # model.py: a pure nn.Module, so nothing it imports (transitively, package __init__s included) may import
    # lightning or lit_papers.data
    for name, rel in files.items():
        if not (rel.parts[0] == "papers" and rel.name == "model.py"):
            continue
        seen, stack, chain = {name}, [name], {name: [name]}
        while stack:
            current = stack.pop()
            if current != name and (current in uses_lightning or current.startswith("lit_papers.data")):
                what = "lit_papers.data" if current.startswith("lit_papers.data") else "lightning"
                problems.append(f"{rel}: model.py reaches {what} through {' -> '.join(chain[current])}")
                continue
            if current == name and current in uses_lightning:
                problems.append(f"{rel}: model.py imports lightning (pure nn.Module only)")
            for m in graph.get(current, ()):
                targets = [m] + [".".join(m.split(".")[:i]) for i in range(2, len(m.split(".")))]  # + parents
                for t in targets:
                    if t in graph and t not in seen:
                        seen.add(t)
                        chain[t] = chain[current] + [t]
                        stack.append(t)
    return problems


def test_dependency_direction():
    assert dependency_problems(REPO / "lit_papers") == []


CLEAN_TREE = {
    "__init__.py": "",
    "ops/__init__.py": "",
    "ops/boxes.py": "import torch\n",
    "detection/__init__.py": "",
    "detection/rcnn.py": "from lit_papers.ops.boxes import torch\nfrom ..ops import boxes\n",
    "data/__init__.py": "",
    "data/coco.py": "import lightning\n",
    "papers/__init__.py": "",
    "papers/p/__init__.py": "",
    "papers/p/model.py": "from lit_papers.detection.rcnn import torch\n",
    "papers/p/module.py": "import lightning\nfrom lit_papers.papers.p.model import torch\n",
    "papers/q/__init__.py": "",
    "papers/q/model.py": "import torch\n",
    "callbacks/__init__.py": "",
    "callbacks/evidence.py": "from importlib import metadata\n",
    "launch/__init__.py": "",
    "launch/report.py": "from lit_papers.callbacks import evidence\n",
    "schedules.py": "import torch\n",
    "cli.py": "import lightning\n",
    "__main__.py": "from lit_papers.cli import main\n",
}
VIOLATIONS = {  # file -> (source, what the message must say)
    "from lit_papers import data": ("ops/bad.py", "from lit_papers import data\n", "ops must not import lit_papers.data"),
    "relative import": ("detection/bad.py", "from ..data import coco\n", "detection must not import lit_papers.data"),
    "relative submodule": ("detection/bad.py", "from .. import papers\n", "detection must not import lit_papers.papers"),
    "importlib": ("ops/bad.py", "import importlib\nm = importlib.import_module('lit_papers.data')\n",
                  "dynamic import"),
    "import_module": ("ops/bad.py", "from importlib import import_module\n", "dynamic import"),
    "__import__": ("ops/bad.py", "m = __import__('lit_papers.data')\n", "dynamic import"),
    "model.py -> lightning, transitively": ("detection/rcnn.py", "from lit_papers.detection import helper\n",
                                            "model.py reaches lightning through"),
    "model.py -> lightning": ("papers/q/model.py", "import lightning as L\n", "model.py imports lightning"),
    "model.py -> data": ("papers/q/model.py", "from lit_papers.data.coco import x\n", "model.py reaches lit_papers.data"),
    "launch -> papers": ("launch/bad.py", "from lit_papers.papers.p import model\n", "launch must not import"),
    "schedules -> data": ("schedules.py", "from lit_papers.data import coco\n", "schedules must not import"),
    "papers -> papers": ("papers/q/module.py", "from lit_papers.papers.p.model import x\n",
                         "papers never import each other"),
    "-> cli": ("callbacks/bad.py", "import lit_papers.cli\n", "nothing imports cli.py"),
}


def _write_tree(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "lit_papers"
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_dependency_checker_passes_a_clean_tree(tmp_path):
    assert dependency_problems(_write_tree(tmp_path, CLEAN_TREE)) == []


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_dependency_checker_catches_an_injected_violation(case, tmp_path):
    rel, source, message = VIOLATIONS[case]
    files = {**CLEAN_TREE, rel: source}
    if case == "model.py -> lightning, transitively":
        files["detection/helper.py"] = "import lightning\n"
    problems = dependency_problems(_write_tree(tmp_path, files))
    assert any(message in p for p in problems), problems


GENERATED_SETS = {  # datamodule class -> (family, the options its generator is written with)
    "lit_papers.data.coco.ShapesDataModule": ("coco", ("num_train", "num_val", "image_size", "max_objects",
                                                       "generator_seed")),
    "lit_papers.data.coco_patches.ShapesPatchesDataModule": ("coco", ("num_train", "num_val", "image_size",
                                                                      "max_objects", "generator_seed")),
    "lit_papers.data.voc_shapes.VOCShapesDataModule": ("voc", ("num_train", "num_val", "image_size", "max_objects",
                                                              "border", "generator_seed")),
}


def test_configs_sharing_a_generated_set_ask_for_the_same_one():
    """Two configs whose generated data land in one folder (family/root/subdir) must ask for the same options:
    a set is written once and a second option set is refused at run time (GeneratedSetMismatch)."""
    import importlib
    import inspect

    import yaml

    folders: dict[tuple, dict[tuple, list[str]]] = {}
    for path in CONFIGS:
        data = (yaml.safe_load(path.read_text()) or {}).get("data") or {}
        entry = GENERATED_SETS.get(data.get("class_path", ""))
        if entry is None:
            continue
        family, keys = entry
        module, name = data["class_path"].rsplit(".", 1)
        defaults = {k: p.default for k, p in inspect.signature(getattr(importlib.import_module(module), name)).parameters.items()}
        args = {**defaults, **(data.get("init_args") or {})}
        folder = (family, args.get("root"), args.get("subdir"))
        folders.setdefault(folder, {}).setdefault(tuple(args[k] for k in keys), []).append(path.name)
    clashes = {f: v for f, v in folders.items() if len(v) > 1}
    assert clashes == {}, f"configs ask one generated folder for different sets: {clashes}"
    assert len(folders) >= 6  # the scan saw the shapes configs of every family
