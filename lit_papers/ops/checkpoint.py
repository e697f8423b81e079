"""Reading checkpoints safely, and loading a network's weights from a Lightning checkpoint.

Every loader in the project goes through :func:`read_checkpoint`: ``torch.load(weights_only=True)`` (tensors,
containers and plain values only, so a crafted file cannot run code while it is read), a zip check first (a
truncated copy or a killed write is named as such), and every failure a :class:`CheckpointError` naming the file.
:func:`load_weights` puts the ``state_dict`` entries under a prefix (``model.`` for a LitModule's injected
network) into a module, strictly, and names the file and the fix on a mismatch.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used: missing, truncated, not a checkpoint, holding more than tensors and
    plain data (a pickle that would run code), or not the weights of the configured network. Names the file."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """A checkpoint given by config that is neither a file nor a file under the runs root."""


def find_checkpoint(path: str | os.PathLike, *, what: str, fix: str) -> Path:
    """A checkpoint given by config: ``path`` as given if it is a file, else relative to the runs root
    ``$LIT_PAPERS_RUNS`` (default ``runs``), where ``lit-papers fit`` puts
    ``<experiment>/<variant>/<version>/checkpoints/last.ckpt`` (so configs name another paper's trained model
    without an absolute path). Raises :class:`CheckpointNotFound` naming ``what``, the paths tried and ``fix``."""
    given = Path(path)
    if given.is_file():
        return given
    under_runs = Path(os.environ.get("LIT_PAPERS_RUNS", "runs")) / given
    if not given.is_absolute() and under_runs.is_file():
        return under_runs
    tried = [str(given)] + ([] if given.is_absolute() else [str(under_runs)])
    raise CheckpointNotFound(f"{what} checkpoint {str(path)!r} not found (tried {', '.join(tried)}); {fix}")


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = True) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``. ``mmap=True`` maps the tensors instead of reading
    them (cheap enough to check a multi-GB file before resuming from it). Raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive whose directory is at the end
        raise CheckpointError(f"{path}: truncated or not a checkpoint ({path.stat().st_size} bytes, not the zip "
                              "archive torch.save writes; a write that was killed, a partial copy, or another file)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: the file would run code when unpickled
        lines = [line for line in str(exc).splitlines() if "GLOBAL" in line or "global" in line]
        raise CheckpointError(f"{path}: refused, it holds Python objects beyond tensors and plain data that would "
                              f"run code when unpickled ({(lines or ['weights_only load failed'])[0].strip()}); "
                              "load only checkpoints written by lit-papers") from exc
    except Exception as exc:  # a damaged member, ...
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (a {type(checkpoint).__name__}, expected a dict)")
    return checkpoint


def weights_under(checkpoint: dict[str, Any], prefix: str, *, path: str | os.PathLike,
                  plain_ok: bool = False) -> dict[str, torch.Tensor]:
    """The ``state_dict`` entries whose names start with ``prefix``, the prefix removed. ``plain_ok``: a file that
    is itself a plain state dict (no ``state_dict`` key, no name under the prefix) is taken as it is."""
    state = checkpoint.get("state_dict")
    if state is None:
        if not plain_ok:
            raise CheckpointError(f"{path}: no 'state_dict' (expected a LightningModule checkpoint)")
        state = checkpoint
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if picked:
        return picked
    if plain_ok and "state_dict" not in checkpoint:
        return state
    raise CheckpointError(f"{path}: no state_dict entries start with {prefix!r} (found e.g. {list(state)[:3]}); "
                          "set the prefix the network was saved under")


def load_weights(module: nn.Module, path: str | os.PathLike, *, prefix: str = "model.", plain_ok: bool = False,
                 fix: str = "configure the network exactly as it was trained") -> dict[str, Any]:
    """Load ``path``'s weights under ``prefix`` into ``module`` (strict); -> the whole checkpoint (for other
    entries, e.g. a datamodule's normalisation). A missing or unexpected tensor is a :class:`CheckpointError`
    "``path`` does not hold the configured ``<class>`` (...); ``fix``"."""
    checkpoint = read_checkpoint(path, mmap=False)
    weights = weights_under(checkpoint, prefix, path=path, plain_ok=plain_ok)
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not hold the configured {type(module).__name__} ({err}); {fix}") from err
    return checkpoint
