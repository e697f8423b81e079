"""The attacked classifier: images in [0, 1] -> logits.

Attacks work in image space: x in [0, 1]^(3 x H x W), perturbations and box constraints there, distortions
measured there. A trained CIFAR network instead expects normalised inputs ((x - mean) / std with the statistics of
its training split, which :class:`lit_papers.data.cifar.CIFARDataModule` stores in every checkpoint). A
:class:`Victim` owns both: the network (built from the config, ``class_path`` + ``init_args``, so papers never
import each other) and the normalisation as buffers, and applies the normalisation inside ``forward``.

Checkpoint contract (a LightningModule checkpoint, e.g. of ``resnet_cifar``'s runs (``lit_papers.classification.ClassifierLitModule``)):
``state_dict`` keys ``<prefix><network key>`` (``prefix`` = the LightningModule attribute holding the network,
``model.`` there), and somewhere at the top level a datamodule state with a ``normalization`` entry
``{"kind", "mean": (H, W, 3) or (3,), "std": (3,)}`` in [0, 1] units (HWC, as the datamodule stores them).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from lit_papers.ops.checkpoint import CheckpointNotFound, find_checkpoint


class VictimError(RuntimeError):
    """A victim checkpoint that cannot be used; the message names the file and the fix."""


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The victim's checkpoint: ``path``, or ``path`` under ``$LIT_PAPERS_RUNS`` (:func:`find_checkpoint`)."""
    try:
        return find_checkpoint(path, what="victim", fix=(
            "train the victim with its config (e.g. lit-papers fit --config "
            "configs/resnet_cifar/victim_resnet20_jpeg_small.yaml) or set "
            "model.init_args.victim.init_args.checkpoint"))
    except CheckpointNotFound as exc:
        raise VictimError(str(exc)) from None


def find_normalization(checkpoint: dict) -> dict | None:
    """The ``{"kind", "mean", "std"}`` a datamodule saved into ``checkpoint`` (None when there is none)."""
    for value in checkpoint.values():
        if isinstance(value, dict) and isinstance(value.get("normalization"), dict):
            saved = value["normalization"]
            if "mean" in saved and "std" in saved:
                return saved
    return None


def as_chw(stat: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """A mean/std stored HWC ``(H, W, 3)`` or per channel ``(3,)`` -> a broadcastable ``(1, 3, H, W)`` or
    ``(1, 3, 1, 1)`` float32 tensor."""
    stat = torch.as_tensor(stat, dtype=torch.float64)
    if stat.ndim == 3:
        return stat.permute(2, 0, 1).unsqueeze(0).float()  # (H, W, 3) -> (1, 3, H, W)
    if stat.ndim == 1:
        return stat.view(1, -1, 1, 1).float()  # (3,) -> (1, 3, 1, 1)
    raise VictimError(f"normalisation statistic of shape {tuple(stat.shape)}: expected (H, W, C) or (C,)")


class Victim(nn.Module):
    """``network`` behind its input normalisation: ``forward(x)`` with ``x`` (B, 3, H, W) in [0, 1] -> logits (B, K).

    Args:
        network: the classifier on normalised images (from the config: ``class_path`` + ``init_args``; e.g.
            ``lit_papers.papers.resnet_cifar.model.ResNetCifar``).
        checkpoint: a trained LightningModule checkpoint of that network (see the module docstring), a path or
            a path under ``$LIT_PAPERS_RUNS``; None: the network is trained in place (the tiny configs) and
            the normalisation is set from the datamodule (:meth:`set_normalization`).
        prefix: the key prefix of the network's weights in the checkpoint's ``state_dict``.
        feature_layer: the module whose *input* is the last hidden layer (:meth:`features`; ``fc`` in the CIFAR
            ResNets: the 64-d globally pooled features).
        image_size: (H, W) of the images (for the default, identity normalisation).
    """

    def __init__(self, *, network: nn.Module, checkpoint: str | None = None, prefix: str = "model.",
                 feature_layer: str = "fc", image_size: tuple[int, int] = (32, 32)) -> None:
        super().__init__()
        self.network = network
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.feature_layer = feature_layer
        self.image_size = tuple(image_size)
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("std", torch.ones(1, 3, 1, 1))
        self.loaded_from: str | None = None
        self.normalization_kind: str | None = None

    # -- normalisation -----------------------------------------------------------------------------------------
    def set_normalization(self, mean, std, kind: str | None = None) -> None:
        """Use ``mean``/``std`` (HWC ``(H, W, 3)`` or ``(3,)``, [0, 1] units) in front of the network."""
        self.mean = as_chw(mean, self.image_size).to(self.std.device)
        self.std = as_chw(std, self.image_size).to(self.std.device)
        self.normalization_kind = kind

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalize(x))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(last hidden layer (B, D), logits (B, K)) of images ``x`` in [0, 1]: the input of ``feature_layer``."""
        layer = dict(self.network.named_modules()).get(self.feature_layer)
        if layer is None:
            raise VictimError(f"the victim network {type(self.network).__name__} has no module {self.feature_layer!r}; "
                              "set victim.init_args.feature_layer to the module whose input is the last hidden layer")
        seen = []
        handle = layer.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
        try:
            logits = self(x)
        finally:
            handle.remove()
        return seen[-1].flatten(1), logits

    # -- loading --------------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load weights and normalisation from ``checkpoint`` (nothing when it is None)."""
        if self.checkpoint is None:
            return
        path = resolve_checkpoint(self.checkpoint)
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated file, pickle that would run code, ...
            raise VictimError(f"victim checkpoint {path}: cannot be read ({type(error).__name__}: {error}); "
                              "re-train or re-download it") from error
        state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
        if state is None:
            raise VictimError(f"victim checkpoint {path} has no 'state_dict': expected a LightningModule checkpoint")
        weights = {k[len(self.prefix):]: v for k, v in state.items() if k.startswith(self.prefix)}
        if not weights:
            raise VictimError(f"victim checkpoint {path}: no state_dict key starts with prefix {self.prefix!r} "
                              f"(first keys: {list(state)[:3]}); set victim.init_args.prefix")
        missing, unexpected = self.network.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise VictimError(f"victim checkpoint {path} does not fit {type(self.network).__name__}: missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}; the config's victim network must be the "
                              "architecture that was trained (depth, width, dropout layers)")
        saved = find_normalization(ckpt)
        if saved is None:
            raise VictimError(f"victim checkpoint {path} holds no input normalisation (a datamodule state with "
                              "'normalization'); it was not trained by lit_papers' CIFARDataModule")
        self.set_normalization(saved["mean"], saved["std"], saved.get("kind"))
        self.loaded_from = str(path)
