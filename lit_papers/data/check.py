"""``lit-papers check-data --config <recipe>.yaml [--config ...] [--data...]``: check a dataset before training.

Builds the DataModule from the ``data:`` section of the config(s) and the ``--data...`` options exactly as
``lit-papers fit`` would (the same jsonargparse class resolution, later configs and options override earlier
ones; every other section, e.g. ``model:`` and ``trainer:``, is ignored), sets up every split, decodes every
image each split references (``--mode full``, the default; ``header`` for the fast check) with a progress bar,
and prints a summary: files checked per split and each bad file with its reason. Exit status 0 when everything
is readable, 1 when some file is bad, 2 when the dataset cannot be set up at all (missing folder, malformed
annotation; the message names the file and the config key that chose it).

DataModules without per-image files (CIFAR pickles, Omniglot zips, Mixamo arrays) are checked by their own
``setup``, which validates their files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from lit_papers.data.download import DatasetError
from lit_papers.data.images import VERIFY_MODES, verify_images


def _split_argv(argv: list[str]) -> tuple[list[str], list[str], str, int]:
    """(config paths, --data... options in order, mode, workers) from the command line."""
    parser = argparse.ArgumentParser(prog="lit-papers check-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", default=[], help="a recipe YAML (repeatable, as for fit)")
    parser.add_argument("--mode", choices=[m for m in VERIFY_MODES if m != "none"], default="full",
                        help="full: decode every image (default); header: size and end marker only")
    parser.add_argument("--workers", type=int, default=8, help="threads reading files")
    known, rest = parser.parse_known_args(argv)
    for item in rest:
        if item.startswith("-") and not item.startswith("--data"):
            parser.error(f"unknown option {item}; check-data takes --config, --mode, --workers and --data...")
    return known.config, rest, known.mode, known.workers


def config_data_sections(configs: list[str]) -> list[dict]:
    """The ``data:`` sections of the config files, in order (files without one are skipped)."""
    out = []
    for path in configs:
        section = (yaml.safe_load(Path(path).read_text()) or {}).get("data")
        if section is not None:
            out.append(section)
    return out


def switched_class_note(configs: list[str], resolved: dict) -> str | None:
    """A warning when the command line switched the DataModule class away from the one the config files name,
    listing the config's init_args the new class kept (issue 17, case 13: ``--data COCODataModule`` over the
    shapes recipe keeps ``subdir: shapes-tiny``). ``resolved`` is the parsed ``data`` value (class_path,
    init_args). None when the class was not switched or nothing was carried over.

    ``lit-papers fit`` can print it before instantiating (the CLI's ``before_instantiate_classes``).
    """
    sections = [s for s in config_data_sections(configs) if isinstance(s, dict) and s.get("class_path")]
    if not sections or not isinstance(resolved, dict):
        return None
    configured = sections[-1]["class_path"]
    chosen = resolved.get("class_path")
    if not chosen or chosen == configured or chosen.rsplit(".", 1)[-1] == configured.rsplit(".", 1)[-1]:
        return None
    config_args: dict = {}
    for section in sections:
        config_args.update(section.get("init_args") or {})
    now = resolved.get("init_args") or {}
    kept = {k: v for k, v in config_args.items() if k in now and now[k] == v}
    if not kept:
        return None
    listed = ", ".join(f"data.init_args.{k} = {v!r}" for k, v in sorted(kept.items()))
    return (f"--data switched {configured} -> {chosen}; these values of the config (written for "
            f"{configured.rsplit('.', 1)[-1]}) were kept: {listed}. Override any that do not fit the new class "
            "(e.g. --data.init_args.subdir null).")


def build_datamodule(configs: list[str], data_args: list[str]):
    """The DataModule as ``lit-papers fit --config ... --data...`` would instantiate it."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    parser = ArgumentParser(prog="lit-papers check-data", exit_on_error=False, default_env=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True, fail_untyped=False)
    args: list[str] = []
    for section in config_data_sections(configs):
        args += ["--data", yaml.safe_dump(section, default_flow_style=True, width=1 << 20).strip()]
    args += data_args
    if not args:
        raise DatasetError(f"no `data:` section in {configs or 'the command line'}; give the recipe with --config")
    cfg = parser.parse_args(args)
    note = switched_class_note(configs, cfg.data.as_dict() if hasattr(cfg.data, "as_dict") else dict(cfg.data))
    if note:
        print(f"[lit-papers] {note}", file=sys.stderr)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse >= 4.49
    return instantiate(cfg).data


def main(argv: list[str] | None = None) -> int:
    configs, data_args, mode, workers = _split_argv(list(sys.argv[1:] if argv is None else argv))
    try:
        dm = build_datamodule(configs, data_args)
    except Exception as err:  # a config error: jsonargparse names the key
        print(f"check-data: cannot build the DataModule: {err}", file=sys.stderr)
        return 2
    name = type(dm).__name__
    if hasattr(dm, "verify_images"):
        dm.verify_images = "none"  # the per-split check below replaces setup's, and reports every file
    try:
        dm.prepare_data()
        dm.setup(None)
    except DatasetError as err:
        print(f"check-data: {name} cannot be set up:\n{err}", file=sys.stderr)
        return 2
    refs_of = getattr(dm, "image_refs", None)
    if refs_of is None:
        print(f"check-data: {name} set up; it has no per-image files to check (its setup validated its files).")
        return 0
    splits = refs_of()
    checked, bad_all = 0, []
    seen: set[Path] = set()
    for split, refs in splits.items():
        fresh = [r for r in refs if Path(r.path) not in seen]  # val and test may be the same split
        if refs and not fresh:
            print(f"check-data: {split}: the same {len(refs)} files as an earlier split")
            continue
        refs = fresh
        seen.update(Path(r.path) for r in refs)
        bad = verify_images(refs, mode, progress=True, desc=f"{name} {split}", workers=workers)
        checked += len(refs)
        bad_all += bad
        print(f"check-data: {split}: {len(refs)} files checked ({mode}), {len(bad)} bad")
    print(f"check-data: {name}: {checked} files checked, {len(bad_all)} bad")
    for _, reason in bad_all:
        print(f"  BAD {reason}")
    return 1 if bad_all else 0


if __name__ == "__main__":
    raise SystemExit(main())
