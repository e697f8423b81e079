"""Salimans, Goodfellow, Zaremba, Cheung, Radford, Chen. Improved Techniques for Training GANs. NIPS 2016.

The networks of the paper's CIFAR-10 semi-supervised experiment (sec. 5.2; the architecture of the authors'
released ``train_cifar_feature_matching.py``), widths set by the constructor, and the paper's techniques as
pure functions / modules:

* sec. 3.1 feature matching: :func:`feature_matching_loss` on :meth:`Discriminator.features`;
* sec. 3.2 minibatch discrimination: :class:`MinibatchDiscrimination` (``Discriminator(minibatch_kernels=B)``);
* sec. 3.3 historical averaging: :class:`HistoricalAverage`;
* sec. 3.4 one-sided label smoothing: ``real_target`` of :func:`unsupervised_loss` (0.9; fakes keep target 0);
* sec. 3.5 virtual batch normalisation: :class:`VirtualBatchNorm` (``Generator(norm="virtual")``);
* sec. 5 semi-supervised K+1 classes with l_{K+1} fixed at 0: D(x) = Z(x) / (Z(x) + 1), Z(x) = sum_k exp l_k(x),
  i.e. logit D(x) = log Z(x) = logsumexp(l) (:func:`discriminator_logit`); :func:`supervised_loss`,
  :func:`unsupervised_loss`. With K = 1 the same formulas are the plain GAN (logsumexp of one logit is the logit).

Images are (N, 3, 32, 32) in [-1, 1] (the released code's scaling); the generator ends in tanh.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

# ---------------------------------------------------------------------------------------------------------
# sec. 5: the K+1-class discriminator and its losses
# ---------------------------------------------------------------------------------------------------------


def discriminator_logit(logits: torch.Tensor) -> torch.Tensor:
    """(N, K) class logits -> (N,) log Z(x) = logsumexp_k l_k(x), the logit of D(x) = Z / (Z + 1)
    (sigmoid(log Z) = Z / (Z + 1); logsumexp keeps large logits finite)."""
    return torch.logsumexp(logits.float(), dim=-1)


def real_probability(logits: torch.Tensor) -> torch.Tensor:
    """(N, K) -> (N,) D(x) = Z(x) / (Z(x) + 1) = 1 - p(y = K+1 | x)."""
    return torch.sigmoid(discriminator_logit(logits))


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_supervised = -E log p(y | x, y < K+1): cross-entropy over the K real classes (the fake class drops out of
    the conditional softmax)."""
    return F.cross_entropy(logits.float(), labels)


def unsupervised_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor, *, real_target: float = 1.0
                      ) -> torch.Tensor:
    """L_unsupervised = -E_x [t log D(x) + (1 - t) log(1 - D(x))] - E_z log(1 - D(G(z))), ``t = real_target``
    (1 = the paper's eq. of sec. 5; 0.9 = one-sided label smoothing, sec. 3.4: only the real target is smoothed).
    -log D = softplus(-log Z), -log(1 - D) = softplus(log Z)."""
    real, fake = discriminator_logit(logits_real), discriminator_logit(logits_fake)
    loss_real = real_target * F.softplus(-real) + (1.0 - real_target) * F.softplus(real)
    return loss_real.mean() + F.softplus(fake).mean()


def generator_adversarial_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's non-saturating loss -E_z log D(G(z)) (used when feature matching is off)."""
    return F.softplus(-discriminator_logit(logits_fake)).mean()


def feature_matching_loss(features_real: torch.Tensor, features_fake: torch.Tensor, *,
                          distance: Literal["squared_l2", "mean_abs"] = "squared_l2") -> torch.Tensor:
    """sec. 3.1: || E_x f(x) - E_z f(G(z)) ||_2^2 over (N, F) features of an intermediate discriminator layer
    (``squared_l2``, the paper's formula), or mean_f |E f(x) - E f(G(z))| (``mean_abs``, the released code)."""
    diff = features_real.float().mean(0) - features_fake.float().mean(0)  # (F,)
    return diff.pow(2).sum() if distance == "squared_l2" else diff.abs().mean()


class HistoricalAverage:
    """sec. 3.3: the penalty || theta - (1/t) sum_{i=1..t} theta[i] ||^2 for a list of parameters, where theta[i]
    is the value at step i. :meth:`update` (call once per step, before the penalty) adds the current values to
    the running mean (kept detached: the average is a target, not a path for gradients); at t = 1 the penalty
    is 0."""

    def __init__(self, parameters: Iterable[torch.Tensor]) -> None:
        self.parameters = list(parameters)
        self.average = [torch.zeros_like(p, dtype=torch.float32) for p in self.parameters]
        self.count = 0

    @torch.no_grad()
    def update(self) -> None:
        self.count += 1
        for i, p in enumerate(self.parameters):
            if self.average[i].device != p.device:  # follow the parameters to their device
                self.average[i] = self.average[i].to(p.device)
            self.average[i].add_((p.detach().float() - self.average[i]) / self.count)

    def penalty(self) -> torch.Tensor:
        if not self.parameters:
            return torch.zeros(())
        return sum(((p.float() - avg.to(p.device)) ** 2).sum()
                   for p, avg in zip(self.parameters, self.average, strict=True))

    def state_dict(self) -> dict:
        return {"count": self.count, "average": [a.clone() for a in self.average]}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        for avg, saved in zip(self.average, state["average"], strict=True):
            avg.copy_(saved.to(avg.device))


# ---------------------------------------------------------------------------------------------------------
# sec. 3.2: minibatch discrimination
# ---------------------------------------------------------------------------------------------------------


class MinibatchDiscrimination(nn.Module):
    """f(x_i) in R^A -> [f(x_i), o(x_i)] in R^{A+B}: M_i = f(x_i) T reshaped to (B, C) (T in R^{A x B x C}),
    c_b(x_i, x_j) = exp(-||M_{i,b} - M_{j,b}||_1), o(x_i)_b = sum_{j=1..n} c_b(x_i, x_j) (the paper's sum, j = i
    included: each o_b is >= 1). Computed over the batch given, so real and generated batches go in separately."""

    def __init__(self, *, in_features: int, num_kernels: int, kernel_dim: int, init_std: float = 0.05) -> None:
        super().__init__()
        self.num_kernels, self.kernel_dim = num_kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, num_kernels * kernel_dim) * init_std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n = features.shape[0]
        m = (features @ self.T).view(n, self.num_kernels, self.kernel_dim)  # (N, B, C)
        l1 = (m[:, None] - m[None]).abs().sum(-1)  # (N, N, B): ||M_i,b - M_j,b||_1
        o = torch.exp(-l1).sum(1)  # (N, B)
        return torch.cat([features, o], dim=1)  # (N, A + B)


# ---------------------------------------------------------------------------------------------------------
# sec. 3.5: virtual batch normalisation
# ---------------------------------------------------------------------------------------------------------


def _per_example_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C[, H, W]) -> per-example, per-channel mean and mean of squares, shaped to broadcast against x."""
    if x.dim() == 2:
        return x, x * x
    dims = tuple(range(2, x.dim()))
    return x.mean(dims, keepdim=True), (x * x).mean(dims, keepdim=True)


class VirtualBatchNorm(nn.Module):
    """sec. 3.5: each example is normalised with statistics of a fixed reference batch *and itself*, never of the
    other examples in its batch. Input: (R + N, C[, H, W]) whose first R = ``reference_size`` rows are the
    reference batch's activations (the generator prepends its fixed reference noise). The reference rows are
    normalised by the reference statistics (mean over R and space); example i by
    mean_i = (R * mean_ref + mean(x_i)) / (R + 1), the same weighting for the mean of squares, var = E[x^2] - mean^2
    (the example counts like one more member of the reference batch). Learned per-channel gamma / beta. No running
    statistics: train and eval compute the same thing."""

    def __init__(self, num_features: int, *, reference_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        if reference_size < 1:
            raise ValueError(f"VirtualBatchNorm: reference_size must be >= 1, got {reference_size}")
        self.reference_size, self.eps = reference_size, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reference_size
        if x.shape[0] <= r:
            raise ValueError(f"VirtualBatchNorm: input has {x.shape[0]} rows but the first {r} are the reference "
                             "batch; prepend the reference batch to the examples")
        ref, rest = x[:r], x[r:]
        ref_mean_i, ref_sq_i = _per_example_moments(ref)
        ref_mean, ref_sq = ref_mean_i.mean(0, keepdim=True), ref_sq_i.mean(0, keepdim=True)  # (1, C[, 1, 1])
        own_mean, own_sq = _per_example_moments(rest)
        w = 1.0 / (r + 1)
        mean = (1 - w) * ref_mean + w * own_mean  # (N, C[, 1, 1])
        var = ((1 - w) * ref_sq + w * own_sq) - mean * mean
        out = torch.cat([(ref - ref_mean) * torch.rsqrt(ref_sq - ref_mean * ref_mean + self.eps),
                         (rest - mean) * torch.rsqrt(var + self.eps)])
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return out * self.weight.view(shape) + self.bias.view(shape)


# ---------------------------------------------------------------------------------------------------------
# The CIFAR-10 networks (sec. 5.2; released code train_cifar_feature_matching.py)
# ---------------------------------------------------------------------------------------------------------


class Generator(nn.Module):
    """z ~ U(0, 1)^latent_dim -> dense 4x4xW, norm, ReLU -> 5x5 deconv stride 2 to W/2 (8x8), norm, ReLU -> W/4 (16x16),
    norm, ReLU -> 3 channels (32x32), tanh (weight-normalised). W = ``base_channels`` (512 in the paper's code).
    ``norm``: ``batch`` (the code's BN) or ``virtual`` (VBN with a reference batch of ``reference_size`` noise
    vectors drawn once at construction and kept as a buffer, so a checkpoint keeps its reference batch)."""

    def __init__(self, *, latent_dim: int = 100, base_channels: int = 512, norm: Literal["batch", "virtual"] = "batch",
                 reference_size: int = 100, weight_norm_output: bool = True) -> None:
        super().__init__()
        if base_channels % 4:
            raise ValueError(f"Generator: base_channels ({base_channels}) must be divisible by 4")
        self.latent_dim, self.base_channels = latent_dim, base_channels
        c = [base_channels, base_channels // 2, base_channels // 4]
        virtual = norm == "virtual"
        self.reference_size = reference_size if virtual else 0

        def make_norm(n: int, dims: int) -> nn.Module:
            if virtual:
                return VirtualBatchNorm(n, reference_size=reference_size)
            return nn.BatchNorm1d(n) if dims == 1 else nn.BatchNorm2d(n)

        self.fc = nn.Linear(latent_dim, c[0] * 16)
        self.fc_norm = make_norm(c[0] * 16, 1)  # per unit, as the code's BN on the dense layer
        self.up1 = nn.ConvTranspose2d(c[0], c[1], 5, stride=2, padding=2, output_padding=1)  # 4 -> 8
        self.norm1 = make_norm(c[1], 2)
        self.up2 = nn.ConvTranspose2d(c[1], c[2], 5, stride=2, padding=2, output_padding=1)  # 8 -> 16
        self.norm2 = make_norm(c[2], 2)
        out = nn.ConvTranspose2d(c[2], 3, 5, stride=2, padding=2, output_padding=1)  # 16 -> 32
        self.out = _weight_norm(out) if weight_norm_output else out
        for m in (self.fc, self.up1, self.up2):  # the code's N(0, 0.05); BN / VBN follow each layer
            nn.init.normal_(m.weight, std=0.05)
            nn.init.zeros_(m.bias)
        if virtual:
            self.register_buffer("reference_z", torch.rand(reference_size, latent_dim))

    def sample_noise(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(n, latent_dim) uniform noise (the code's theano_rng.uniform)."""
        return torch.rand(n, self.latent_dim, generator=generator, device=device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        r = self.reference_size
        if r:
            z = torch.cat([self.reference_z.to(z.dtype), z])  # (R + N, latent): the reference batch first
        h = F.relu(self.fc_norm(self.fc(z)))  # (B, 16 W)
        h = h.view(h.shape[0], self.base_channels, 4, 4)  # (B, W, 4, 4)
        h = F.relu(self.norm1(self.up1(h)))  # (B, W/2, 8, 8)
        h = F.relu(self.norm2(self.up2(h)))  # (B, W/4, 16, 16)
        x = torch.tanh(self.out(h))  # (B, 3, 32, 32) in [-1, 1]
        return x[r:]


class Discriminator(nn.Module):
    """The code's 9-layer discriminator: dropout(0.2) -> 3x3 conv W1 x2 -> 3x3 conv W1 stride 2 -> dropout(0.5) ->
    3x3 conv W2 x2 -> 3x3 conv W2 stride 2 -> dropout(0.5) -> 3x3 conv W2 (no padding) -> 1x1 W2 -> 1x1 W2 ->
    global mean pool = features f(x) (the feature-matching layer) -> [minibatch discrimination] -> dense K.
    LeakyReLU(0.2), weight normalisation on every layer (``weight_norm``). ``widths`` = (W1, W2) = (96, 192)."""

    def __init__(self, *, num_classes: int = 10, widths: tuple[int, int] = (96, 192), input_dropout: float = 0.2,
                 dropout: float = 0.5, leak: float = 0.2, weight_norm: bool = True, minibatch_kernels: int = 0,
                 minibatch_kernel_dim: int = 5) -> None:
        super().__init__()
        w1, w2 = widths
        wn = _weight_norm if weight_norm else (lambda m: m)
        self.leak = leak

        def conv(cin: int, cout: int, k: int = 3, stride: int = 1, pad: int = 1) -> nn.Module:
            layer = nn.Conv2d(cin, cout, k, stride=stride, padding=pad)
            # He init for LeakyReLU instead of the code's N(0, 0.05) + data-dependent weight-norm init (not
            # implemented): without the latter, N(0, 0.05) shrinks the activations of 9 layers to ~0
            nn.init.kaiming_normal_(layer.weight, a=leak, nonlinearity="leaky_relu")
            nn.init.zeros_(layer.bias)
            return wn(layer)

        self.input_dropout = nn.Dropout(input_dropout)
        self.block1 = nn.ModuleList([conv(3, w1), conv(w1, w1), conv(w1, w1, stride=2)])  # 32 -> 16
        self.drop1 = nn.Dropout(dropout)
        self.block2 = nn.ModuleList([conv(w1, w2), conv(w2, w2), conv(w2, w2, stride=2)])  # 16 -> 8
        self.drop2 = nn.Dropout(dropout)
        self.block3 = nn.ModuleList([conv(w2, w2, pad=0), conv(w2, w2, k=1, pad=0), conv(w2, w2, k=1, pad=0)])  # 8 -> 6
        self.feature_dim = w2
        self.minibatch = (MinibatchDiscrimination(in_features=w2, num_kernels=minibatch_kernels,
                                                  kernel_dim=minibatch_kernel_dim)
                          if minibatch_kernels > 0 else nn.Identity())
        head = nn.Linear(w2 + max(minibatch_kernels, 0), num_classes)
        nn.init.normal_(head.weight, std=0.1 / (w2 + max(minibatch_kernels, 0)) ** 0.5)  # small initial logits
        nn.init.zeros_(head.bias)
        self.head = wn(head)
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 32, 32) in [-1, 1] -> (N, W2) globally pooled features (sec. 3.1's f(x))."""
        h = self.input_dropout(x)
        for blocks, drop in ((self.block1, self.drop1), (self.block2, self.drop2), (self.block3, None)):
            for layer in blocks:
                h = F.leaky_relu(layer(h), self.leak)
            if drop is not None:
                h = drop(h)
        return h.mean(dim=(2, 3))  # (N, W2)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(N, W2) features -> (N, K) logits l_1..l_K (l_{K+1} = 0 implicitly)."""
        return self.head(self.minibatch(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))
