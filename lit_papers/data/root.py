"""Where datasets live: one root (``LIT_PAPERS_DATA``) with one folder per dataset family.

Layout (the same as the test fixtures in ``../shared/data``)::

    $LIT_PAPERS_DATA/
      cifar/      cifar-10-batches-py/, cifar-100-python/
      omniglot/   images_background*.zip, images_evaluation.zip, all_runs.zip
      coco/       annotations/, train2017/, val2017/
      voc/        VOCdevkit/VOC2007, VOCdevkit/VOC2012
      mixamo/     mixamo_data/

Default root: ``$XDG_CACHE_HOME/lit_papers/data`` (``~/.cache/lit_papers/data``).

Generated data (the shapes set, synthetic Mixamo, ...) never goes under the data root, which may be a shared,
read-only copy of the real datasets: it is written under :func:`generated_dir`, i.e.
``$LIT_PAPERS_CACHE/generated/<family>`` (default ``$XDG_CACHE_HOME/lit_papers`` = ``~/.cache/lit_papers``),
unless a datamodule is given an explicit ``root=``.
``LIT_PAPERS_MIRROR`` names a folder or a base URL that holds the official archives for offline clusters
(``<mirror>/<family>/<archive>`` or ``<mirror>/<archive>``).
"""

from __future__ import annotations

import os
from pathlib import Path

FAMILIES = ("cifar", "omniglot", "coco", "voc", "mixamo")


def data_root() -> Path:
    """The dataset root: ``$LIT_PAPERS_DATA`` or the user's cache folder."""
    env = os.environ.get("LIT_PAPERS_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "lit_papers" / "data"


def cache_root() -> Path:
    """The user cache of lit_papers: ``$LIT_PAPERS_CACHE`` or ``$XDG_CACHE_HOME/lit_papers`` (``~/.cache/lit_papers``)."""
    env = os.environ.get("LIT_PAPERS_CACHE")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "lit_papers"


def generated_dir(family: str, root: str | os.PathLike | None = None) -> Path:
    """Where generated data of one family is written: ``<root>/<family>`` when the caller names a ``root``
    explicitly, else ``$LIT_PAPERS_CACHE/generated/<family>`` -- never the (possibly shared) ``$LIT_PAPERS_DATA``."""
    if root is not None:
        return family_dir(family, root)
    if family not in FAMILIES:
        raise ValueError(f"unknown dataset family {family!r}; expected one of {FAMILIES}")
    return cache_root() / "generated" / family


def generated_source(root: str | os.PathLike | None, subdir: str) -> str:
    """The config keys that chose a generated set's folder, for the setup line and missing-data errors."""
    where = f"data.init_args.root = {root!r}" if root is not None else "generated under $LIT_PAPERS_CACHE"
    return f"{where}, data.init_args.subdir = {subdir!r}"


def family_dir(family: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of one dataset family; ``root`` overrides the environment (a datamodule's ``root=``)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown dataset family {family!r}; expected one of {FAMILIES}")
    return (Path(root).expanduser() if root is not None else data_root()) / family


def mirror() -> str | None:
    """``$LIT_PAPERS_MIRROR`` (folder or URL) or None."""
    value = os.environ.get("LIT_PAPERS_MIRROR", "").strip()
    return value or None
