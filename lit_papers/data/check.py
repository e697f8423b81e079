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


def _split_argv(argv: list[str]) -> tuple[list[str], list[str], str]:
    """(config paths, --data... options in order, mode) from the command line."""
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


def build_datamodule(configs: list[str], data_args: list[str]):
    """The DataModule as ``lit-papers fit --config ... --data...`` would instantiate it."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    parser = ArgumentParser(prog="lit-papers check-data", exit_on_error=False, default_env=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True, fail_untyped=False)
    args: list[str] = []
    for path in configs:
        text = Path(path).read_text()
        section = (yaml.safe_load(text) or {}).get("data")
        if section is not None:
            args += ["--data", yaml.safe_dump(section, default_flow_style=True, width=1 << 20).strip()]
    args += data_args
    if not args:
        raise DatasetError(f"no `data:` section in {configs or 'the command line'}; give the recipe with --config")
    cfg = parser.parse_args(args)
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
