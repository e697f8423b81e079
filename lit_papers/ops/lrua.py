"""Least-Recently-Used Access (LRUA) memory of Santoro et al. 2016, "Meta-Learning with Memory-Augmented Neural
Networks", sec. 3.1 (eqs. 2-8), as plain tensor functions.

Shapes: memory ``M`` (B, S, W) with S slots of width W; H heads; keys (B, H, W); weights over slots (B, H, S);
usage (B, S).

    read:   w^r_t(i) = softmax_i K(k_t, M_t(i)),  K = cosine similarity            (eqs. 2-3)
            r_t = sum_i w^r_t(i) M_t(i)                                              (eq. 4)
    usage:  w^u_t = gamma w^u_{t-1} + w^r_t + w^w_t                                  (eq. 5)
    LRU:    w^lu_t(i) = 0 if w^u_t(i) > m(w^u_t, n) else 1, m = n-th smallest         (eq. 6)
    write:  w^w_t = sigmoid(alpha) w^r_{t-1} + (1 - sigmoid(alpha)) w^lu_{t-1}        (eq. 7)
            M_t(i) = M_{t-1}(i) + w^w_t(i) k_t                                        (eq. 8)
    "Prior to writing to memory, the least used memory location is computed from w^u_{t-1} and is set to zero."

With several heads, usage adds the weights of all heads and n = number of read heads (as in the paper).

Multi-head writes. The equations are written for one head: eq. 6 builds ONE vector w^lu with a 1 at each of the
n least-used slots ("n set to equal the number of reads to memory"), and eq. 7 adds (1 - sigmoid(alpha)) w^lu to
each head's write weights. Read literally (``per_head=False``, the default here), every head's write weights hold
all n least-used slots at full weight, so they sum to sigmoid(alpha) + n (1 - sigmoid(alpha)) and one write puts
a head's key into n slots. The common multi-head reading (``per_head=True``, :func:`least_used_per_head`): head i
writes to the i-th least-used slot, so each head's write weights sum to one (a convex mix of its previous read and
one fresh slot) and the n heads write to n different fresh slots. The paper's text does not settle it (it never
writes a head index into eqs. 5-8); both are kept as a config option of the model.
"""

from __future__ import annotations

import torch


def cosine_similarity(keys: torch.Tensor, memory: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """keys (B, H, W), memory (B, S, W) -> (B, H, S) cosine similarities (eq. 2)."""
    dot = keys @ memory.transpose(1, 2)  # (B, H, W) @ (B, W, S) -> (B, H, S)
    norms = keys.norm(dim=-1, keepdim=True) * memory.norm(dim=-1).unsqueeze(1)  # (B, H, 1) * (B, 1, S)
    return dot / norms.clamp_min(eps)


def content_address(keys: torch.Tensor, memory: torch.Tensor, strength: torch.Tensor | None = None) -> torch.Tensor:
    """Read weights: softmax over slots of the cosine similarity (eq. 3). -> (B, H, S), each row sums to 1.

    ``strength`` (B, H), optional: the NTM's key strength beta (Graves et al. 2014, eq. 5) multiplying the
    similarities before the softmax; the MANN paper's eq. 3 has none (beta = 1).
    """
    similarity = cosine_similarity(keys, memory)  # (B, H, S)
    if strength is not None:
        similarity = similarity * strength.unsqueeze(-1)
    return torch.softmax(similarity, dim=-1)


def read(weights: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """r = sum_i w(i) M(i) (eq. 4): weights (B, H, S), memory (B, S, W) -> (B, H, W)."""
    return weights @ memory


def least_used(usage: torch.Tensor, n: int) -> torch.Tensor:
    """w^lu (eq. 6): 1 at the ``n`` least-used slots, 0 elsewhere. usage (B, S) -> float (B, S).

    Ties are broken towards the lower slot index (stable sort). The selection is not differentiable (no gradient).
    """
    idx = torch.argsort(usage.detach(), dim=-1, stable=True)[..., :n]  # (B, n)
    return torch.zeros_like(usage).scatter_(-1, idx, 1.0)


def least_used_per_head(usage: torch.Tensor, n: int) -> torch.Tensor:
    """Per-head w^lu: head i gets a one-hot at the i-th least-used slot (i = 0..n-1). usage (B, S) -> float (B, n, S).

    Summed over heads it equals :func:`least_used` (same ordering and tie-break); no gradient.
    """
    idx = torch.argsort(usage.detach(), dim=-1, stable=True)[..., :n]  # (B, n): i-th least used per head
    return torch.zeros(*usage.shape[:-1], n, usage.shape[-1], dtype=usage.dtype, device=usage.device).scatter_(
        -1, idx.unsqueeze(-1), 1.0)  # (B, n, S)


def write_weights(gate_logit: torch.Tensor, prev_read: torch.Tensor, prev_least_used: torch.Tensor) -> torch.Tensor:
    """w^w = sigmoid(alpha) w^r_{t-1} + (1 - sigmoid(alpha)) w^lu_{t-1} (eq. 7).

    gate_logit (B, H), prev_read (B, H, S), prev_least_used (B, S) shared by all heads or (B, H, S) per head
    -> (B, H, S).
    """
    g = torch.sigmoid(gate_logit).unsqueeze(-1)  # (B, H, 1)
    lu = prev_least_used.unsqueeze(1) if prev_least_used.dim() == 2 else prev_least_used  # (B, 1 or H, S)
    return g * prev_read + (1 - g) * lu


def clear_least_used(memory: torch.Tensor, prev_usage: torch.Tensor) -> torch.Tensor:
    """Zero the single least-used slot (argmin of w^u_{t-1}) before writing. memory (B, S, W) -> (B, S, W)."""
    keep = 1.0 - least_used(prev_usage, 1)  # (B, S): 0 at the least-used slot
    return memory * keep.unsqueeze(-1)


def write(memory: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """M_t = M_{t-1} + sum_h w^w_h k_h^T (eq. 8): memory (B, S, W), weights (B, H, S), keys (B, H, W) -> (B, S, W)."""
    return memory + weights.transpose(1, 2) @ keys  # (B, S, H) @ (B, H, W)


def update_usage(usage: torch.Tensor, read_weights: torch.Tensor, write_weights_: torch.Tensor,
                 gamma: float) -> torch.Tensor:
    """w^u_t = gamma w^u_{t-1} + sum_h (w^r_h + w^w_h) (eq. 5): usage (B, S), weights (B, H, S) -> (B, S)."""
    return gamma * usage + read_weights.sum(1) + write_weights_.sum(1)


def lrua_step(memory: torch.Tensor, usage: torch.Tensor, prev_read: torch.Tensor, keys: torch.Tensor,
              gate_logit: torch.Tensor, gamma: float, *, values: torch.Tensor | None = None,
              strength: torch.Tensor | None = None,
              per_head: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LRUA write-then-read step. Returns (read vectors (B, H, W), memory, usage, read weights (B, H, S)).

    The write uses the previous step's read weights and least-used slots (eq. 7); the read uses the new key on
    the updated memory. The paper writes the key itself (eq. 8); ``values`` (B, H, W), optional, writes separate
    vectors instead (the NTM's add vectors). ``strength`` (B, H), optional: key strength of the read.
    ``per_head``: head i writes to the i-th least-used slot instead of all n (see the module docstring).
    """
    n = keys.shape[1]
    lu = least_used_per_head(usage, n) if per_head else least_used(usage, n)  # (B, H, S) or (B, S)
    w_write = write_weights(gate_logit, prev_read, lu)  # (B, H, S)
    memory = write(clear_least_used(memory, usage), w_write, keys if values is None else values)  # (B, S, W)
    w_read = content_address(keys, memory, strength)  # (B, H, S)
    usage = update_usage(usage, w_read, w_write, gamma)  # (B, S)
    return read(w_read, memory), memory, usage, w_read


__all__ = ["content_address", "cosine_similarity", "read", "least_used", "least_used_per_head", "write_weights",
           "clear_least_used", "write", "update_usage", "lrua_step"]
