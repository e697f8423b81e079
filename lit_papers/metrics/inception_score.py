"""Inception score (Salimans et al. 2016, sec. 4): IS = exp(E_x KL(p(y|x) || p(y))), p(y) = E_x p(y|x), over any
classifier: a pluggable ``nn.Module`` returning (N, K) logits.

The paper's number (8.09 on CIFAR-10, Table 3) uses the ImageNet Inception network over 50,000 samples in 10
splits (mean +- std over splits). Scores from another classifier (e.g. our CIFAR ResNet) are on another scale and
are **not comparable** with it; the function names and logged keys here say "classifier", not "inception".

Bounds: 1 <= IS <= K; 1 when every p(y|x) is the same distribution, K when each p(y|x) is one-hot and the
classes are used equally.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from lit_papers.ops.checkpoint import find_checkpoint, load_weights


def score_from_probs(probs: torch.Tensor, *, splits: int = 1) -> tuple[float, float]:
    """(N, K) class probabilities -> (mean, std) of exp(mean_i KL(p(y|x_i) || p(y))) over ``splits`` equal parts
    (std = 0.0 for one split). Computed in float64 with 0 log 0 = 0. ``splits`` must divide into parts of >= 1."""
    if probs.dim() != 2 or probs.shape[0] < 1:
        raise ValueError(f"score_from_probs: expected (N, K) probabilities with N >= 1, got {tuple(probs.shape)}")
    if not 1 <= splits <= probs.shape[0]:
        raise ValueError(f"score_from_probs: splits={splits} with {probs.shape[0]} samples (need 1 <= splits <= N)")
    p = probs.detach().double().cpu()
    if not torch.isfinite(p).all() or (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype),
                                                                          atol=1e-4):
        raise ValueError("score_from_probs: rows must be finite probability vectors summing to 1 (pass softmax(logits), "
                         "or use score_from_logits)")
    scores = []
    for part in torch.tensor_split(p, splits):
        marginal = part.mean(0, keepdim=True)  # (1, K) p(y)
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(1)  # (n,) KL(p(y|x) || p(y))
        scores.append(math.exp(float(kl.mean())))
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return mean, std


def bootstrap_score_ci95(probs: torch.Tensor, *, splits: int = 1, resamples: int = 200, seed: int = 0) -> float:
    """95 % half-width (1.96 x the bootstrap standard deviation) of :func:`score_from_probs`'s mean: each resample
    draws the N samples with replacement and scores them with the same ``splits``. The score is a non-linear
    function of the whole sample (p(y) is its mean), so its spread needs the resampling, not a per-sample one."""
    p = probs.detach().double().cpu()
    if len(p) < 2 or resamples <= 0:
        return 0.0
    gen = torch.Generator().manual_seed(seed)
    values = [score_from_probs(p[torch.randint(0, len(p), (len(p),), generator=gen)], splits=splits)[0]
              for _ in range(resamples)]
    return float(1.96 * torch.tensor(values, dtype=torch.float64).std(correction=1))


def score_from_logits(logits: torch.Tensor, *, splits: int = 1) -> tuple[float, float]:
    """(N, K) logits -> :func:`score_from_probs` of their softmax (in float64)."""
    return score_from_probs(torch.softmax(logits.detach().double(), dim=1), splits=splits)


class NormalizedClassifier(nn.Module):
    """Wraps a classifier trained on normalised images so that it takes images in [0, 1]:
    logits = classifier((x - mean) / std), with ``mean`` (3,), (3, H, W) or (H, W, 3) and ``std`` (3,)."""

    def __init__(self, classifier: nn.Module, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.classifier = classifier

        def chw(t: torch.Tensor | None, default: float) -> torch.Tensor:
            if t is None:
                return torch.full((3, 1, 1), default)
            t = torch.as_tensor(t, dtype=torch.float32)
            if t.dim() == 1:
                return t.view(-1, 1, 1)  # (3, 1, 1)
            return t.permute(2, 0, 1) if t.shape[-1] == 3 and t.shape[0] != 3 else t  # (H, W, 3) -> (3, H, W)

        self.register_buffer("mean", chw(mean, 0.0), persistent=False)
        self.register_buffer("std", chw(std, 1.0), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier((images - self.mean) / self.std)


def load_classifier_checkpoint(classifier: nn.Module, checkpoint: str | os.PathLike, *, prefix: str = "model.",
                               ) -> NormalizedClassifier:
    """Load a Lightning checkpoint's ``state_dict`` entries under ``prefix`` into ``classifier`` (strict) and wrap it
    with the normalisation statistics the checkpoint's datamodule saved (a ``normalization`` entry with ``mean`` and
    ``std``, as CIFARDataModule writes; identity when there is none). The result is frozen, in eval mode."""
    path = find_checkpoint(checkpoint, what="classifier", fix=(
        "the checkpoint does not exist: set the path of a trained CIFAR classifier's .ckpt (as given, or under "
        "$LIT_PAPERS_RUNS), or leave the classifier out"))
    ckpt = load_weights(classifier, path, prefix=prefix, plain_ok=True,
                        fix="configure the classifier the checkpoint was trained as")
    stats = next((v["normalization"] for v in ckpt.values() if isinstance(v, dict)
                  and isinstance(v.get("normalization"), dict) and "mean" in v["normalization"]), None)
    wrapped = NormalizedClassifier(classifier, *(None, None) if stats is None else (stats["mean"], stats["std"]))
    wrapped.eval()
    for p in wrapped.parameters():
        p.requires_grad_(False)
    return wrapped


@torch.no_grad()
def classifier_score(classifier: nn.Module, images: torch.Tensor, *, batch_size: int = 500, splits: int = 1
                     ) -> tuple[float, float]:
    """Score of (N, 3, H, W) images in [0, 1] under ``classifier`` (logits out), batched, in the classifier's
    current mode (put it in eval mode first)."""
    device = next((p.device for p in classifier.parameters()), images.device)
    logits = torch.cat([classifier(images[i:i + batch_size].to(device)).float().cpu()
                        for i in range(0, len(images), batch_size)])
    return score_from_logits(logits, splits=splits)
