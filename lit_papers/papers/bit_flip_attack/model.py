"""Rakin, He, Fan. Bit-Flip Attack: Crushing Neural Network with Progressive Bit Search. ICCV 2019.

The attacked network is quantised (sec. 3.1): every weight layer l (conv and fully connected) keeps N-bit signed
integers q_l in two's complement and one step size  Delta_l = max|W_l| / (2^(N-1) - 1),  W_l ~= Delta_l * q_l
(:func:`quantize_symmetric`, :func:`dequantize`; N = 8). A bit b_i of q (i = 0 least significant ... N-1 sign)
carries the value 2^i, the sign bit -2^(N-1) (:func:`bit_values`, eq. 2), so dL/db_i = dL/dq * value_i with
dL/dq = dL/dW * Delta.

Progressive bit search (sec. 3.2-3.3, :class:`BitFlipAttack`), one iteration:

1. in-layer search: on one batch of attack images, the top n_b bits of every layer by |dL/db| among those whose
   flip raises the loss to first order (b = 0 with dL/db > 0, or b = 1 with dL/db < 0: the paper's sign rule
   b' = b XOR ((sign(dL/db) + 1) / 2 XOR b)). The paper ranks all bits by |dL/db| first and then drops the ones
   the sign rule would not flip, so a layer can end up with no flip; we rank only the flippable ones (the same
   bits whenever the paper's top n_b are flippable);
2. cross-layer search: apply each layer's flips alone, measure the attack loss, undo; keep the layer whose
   flips raise the loss most (:meth:`BitFlipAttack.step`).

Iterations repeat until the test accuracy falls to the target. Random bit flips (:func:`random_flip`) are the
paper's baseline. Everything here is pure torch on a plain ``nn.Module`` classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def quantize_symmetric(weight: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-layer quantisation: (q int8 of the same shape, values in [-(2^(N-1)-1), 2^(N-1)-1], step
    Delta: a 0-d float tensor) with ``weight ~= q * Delta`` (error <= Delta / 2 per weight)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8 (int8 storage), got {bits}")
    levels = 2 ** (bits - 1) - 1
    step = weight.detach().abs().max() / levels
    step = torch.where(step > 0, step, torch.ones_like(step))
    q = torch.round(weight.detach() / step).clamp(-levels, levels).to(torch.int8)
    return q, step


def dequantize(q: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    return q.to(step.dtype) * step


def bit_values(bits: int = 8, device=None) -> torch.Tensor:
    """Value of each bit of an N-bit two's complement integer: (1, 2, ..., 2^(N-2), -2^(N-1)), shape (N,)."""
    values = 2.0 ** torch.arange(bits, device=device)
    values[-1] = -values[-1]
    return values


def to_bits(q: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Two's complement bits of ``q`` (...,) -> (..., N) in {0, 1}, bit 0 least significant."""
    unsigned = q.to(torch.int16) & (2**bits - 1)  # (...,) in [0, 2^N)
    return (unsigned.unsqueeze(-1) >> torch.arange(bits, device=q.device)) & 1


def flip_bits(q: torch.Tensor, index: torch.Tensor, bit: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """A copy of ``q`` with bit ``bit[j]`` of the flat element ``index[j]`` flipped, in N-bit two's complement."""
    flat = q.flatten().to(torch.int16).clone()
    unsigned = flat[index] & (2**bits - 1)
    unsigned = unsigned ^ (1 << bit.to(torch.int16))
    flat[index] = torch.where(unsigned >= 2 ** (bits - 1), unsigned - 2**bits, unsigned)  # back to signed
    return flat.to(torch.int8).view_as(q)


class QuantizedWeights:
    """The N-bit integers of every conv/linear weight of ``network``; :meth:`write` puts ``q * Delta`` into the
    float weights the network computes with. Biases and BatchNorm stay float (the paper quantises weights)."""

    def __init__(self, network: nn.Module, bits: int = 8) -> None:
        self.bits = bits
        self.layers = [(name, m) for name, m in network.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        self.float_weights = {name: m.weight.detach().clone() for name, m in self.layers}
        self.q, self.step = {}, {}
        for name, m in self.layers:
            self.q[name], self.step[name] = quantize_symmetric(m.weight, bits)
        self.write()

    def write(self, name: str | None = None) -> None:
        for layer_name, m in self.layers:
            if name is None or layer_name == name:
                with torch.no_grad():
                    m.weight.copy_(dequantize(self.q[layer_name], self.step[layer_name]))

    def restore_float(self) -> None:
        """Put the original float weights back."""
        for name, m in self.layers:
            with torch.no_grad():
                m.weight.copy_(self.float_weights[name])

    def num_bits(self) -> int:
        return sum(q.numel() for q in self.q.values()) * self.bits


@dataclass
class Flip:
    layer: str
    index: list[int]
    bit: list[int]
    loss: float


class BitFlipAttack:
    """Progressive bit search on ``network`` (weights already quantised in ``weights``) with one attack batch
    ``(x, y)``; ``top_k`` = n_b, the bits flipped per layer per iteration."""

    def __init__(self, network: nn.Module, weights: QuantizedWeights, x: torch.Tensor, y: torch.Tensor,
                 top_k: int = 1) -> None:
        self.network, self.weights, self.x, self.y, self.top_k = network, weights, x, y, top_k
        self.values = bit_values(weights.bits, device=x.device)

    def loss(self) -> torch.Tensor:
        return F.cross_entropy(self.network(self.x), self.y)

    def candidates(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """In-layer search: per layer, (flat indices, bit positions) of the top-k bits by |dL/db| whose flip
        raises the loss to first order (possibly empty)."""
        self.network.zero_grad(set_to_none=True)
        self.loss().backward()
        out = {}
        for name, m in self.weights.layers:
            q = self.weights.q[name].flatten()
            grad_q = m.weight.grad.flatten() * self.weights.step[name]  # dL/dq, (P,)
            grad_b = grad_q.unsqueeze(1) * self.values  # dL/db, (P, N)
            # first-order loss change of flipping each bit: dL/db * (b' - b), b' - b = 1 - 2b; > 0 exactly where
            # the paper's sign rule would flip the bit, and then equal to |dL/db|
            gain = grad_b * (1 - 2 * to_bits(q, self.weights.bits)).to(grad_b.dtype)  # (P, N)
            top = gain.flatten().topk(min(self.top_k, gain.numel()))
            keep = top.values > 0
            index, bit = top.indices[keep] // self.weights.bits, top.indices[keep] % self.weights.bits
            out[name] = (index, bit)
        self.network.zero_grad(set_to_none=True)
        return out

    @torch.no_grad()
    def try_layer(self, name: str, index: torch.Tensor, bit: torch.Tensor) -> float:
        """Cross-layer search, one arm: the attack loss with only this layer's flips applied (then undone)."""
        saved = self.weights.q[name]
        self.weights.q[name] = flip_bits(saved, index, bit, self.weights.bits)
        self.weights.write(name)
        loss = float(self.loss())
        self.weights.q[name] = saved
        self.weights.write(name)
        return loss

    def step(self) -> Flip | None:
        """One iteration: the layer whose flips raise the attack loss most, applied (None: no bit can raise it)."""
        best = None
        for name, (index, bit) in self.candidates().items():
            if len(index) == 0:
                continue
            loss = self.try_layer(name, index, bit)
            if best is None or loss > best.loss:
                best = Flip(name, index.tolist(), bit.tolist(), loss)
        if best is not None:
            q = self.weights.q[best.layer]
            self.weights.q[best.layer] = flip_bits(q, torch.tensor(best.index, device=q.device),
                                                   torch.tensor(best.bit, device=q.device), self.weights.bits)
            self.weights.write(best.layer)
        return best


def random_flip(weights: QuantizedWeights, generator: torch.Generator) -> Flip:
    """Flip one bit chosen uniformly among all bits of all quantised weights (the paper's random baseline)."""
    sizes = torch.tensor([weights.q[name].numel() for name, _ in weights.layers], dtype=torch.float64)
    layer = int(torch.multinomial(sizes, 1, generator=generator))
    name = weights.layers[layer][0]
    q = weights.q[name]
    index = torch.randint(0, q.numel(), (1,), generator=generator)
    bit = torch.randint(0, weights.bits, (1,), generator=generator)
    weights.q[name] = flip_bits(q, index.to(q.device), bit.to(q.device), weights.bits)
    weights.write(name)
    return Flip(name, index.tolist(), bit.tolist(), float("nan"))


@torch.no_grad()
def accuracy(network: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((network(x[i:i + batch_size]).argmax(dim=1) == y[i:i + batch_size]).sum())
    return correct / len(x)
