"""Santoro et al. 2016. Meta-Learning with Memory-Augmented Neural Networks. ICML.

Sec. 2 (task setup): an episode is a sequence (x_1, null), (x_2, y_1), ..., (x_T, y_{T-1}): the label of x_t is
shown with the next input, so the network must bind each label to the sample it saw one step earlier and
predict y_t from memory. Labels are shuffled per episode, so class identities cannot be learnt in the weights.
Sec. 3.1 (architecture): an LSTM controller emits keys k_t and write gates alpha_t; an external memory (128 x 40)
is read by content (cosine similarity, softmax over slots) with several read heads and written with Least
Recently Used Access (see :mod:`lit_papers.ops.lrua`). The output is a softmax over classes of a linear map of
the controller state and the read vectors. Sec. 4.1: "LSTM" baseline = the same controller without memory.

Both models map images (B, T, C, H, W) and labels (B, T) to logits (B, T, num_classes); step t sees x_t and the
one-hot y_{t-1} (zeros at t = 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lit_papers.ops.lrua import lrua_step


def shifted_one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """labels (B, T) -> (B, T, num_classes): the one-hot of y_{t-1} at step t, zeros at t = 0."""
    one_hot = F.one_hot(labels, num_classes).float()  # (B, T, C)
    return F.pad(one_hot, (0, 0, 1, 0))[:, :-1]  # shift right along T by one: (B, T, C)


class MemoryAugmentedNetwork(nn.Module):
    """LSTM controller + LRUA memory.

    Args: ``input_size`` flattened image size (20 x 20 = 400); ``num_classes`` labels per episode (5);
    ``hidden_size`` controller units (200); ``memory_slots`` x ``memory_width`` (128 x 40); ``read_heads`` (4);
    ``gamma`` usage decay (eq. 5).

    Two options that are not in the paper (both off = the paper): ``separate_values`` writes a second vector
    a_t = tanh(W_a h_t) instead of the key k_t (the NTM's add vector; with one vector, the read at step t finds
    the key it has just written); ``key_strength`` sharpens the read softmax by beta_t = 1 + softplus(w_b h_t)
    per head (the NTM's content addressing; with beta = 1 no slot can get more than e^2 times another's weight).

    ``per_head_write``: how eq. 7 reads with several heads (see :mod:`lit_papers.ops.lrua`). False (the equations
    as written): every head's write weights include all n least-used slots; True: head i writes to the i-th
    least-used slot, so each head's write weights sum to one.
    """

    def __init__(self, *, input_size: int = 400, num_classes: int = 5, hidden_size: int = 200,
                 memory_slots: int = 128, memory_width: int = 40, read_heads: int = 4, gamma: float = 0.95,
                 separate_values: bool = False, key_strength: bool = False, per_head_write: bool = False) -> None:
        super().__init__()
        self.num_classes, self.slots, self.width, self.heads, self.gamma = (
            num_classes, memory_slots, memory_width, read_heads, gamma)
        self.controller = nn.LSTMCell(input_size + num_classes + read_heads * memory_width, hidden_size)
        self.key = nn.Linear(hidden_size, read_heads * memory_width)  # k_t per head (tanh)
        self.gate = nn.Linear(hidden_size, read_heads)  # alpha_t per head (eq. 7)
        self.output = nn.Linear(hidden_size + read_heads * memory_width, num_classes)
        self.value = nn.Linear(hidden_size, read_heads * memory_width) if separate_values else None  # a_t per head
        self.strength = nn.Linear(hidden_size, read_heads) if key_strength else None  # beta_t per head
        self.per_head_write = per_head_write

    def initial_state(self, batch: int, device: torch.device) -> dict:
        first_slot = torch.zeros(batch, self.heads, self.slots, device=device)
        first_slot[..., 0] = 1.0
        return {
            "memory": torch.full((batch, self.slots, self.width), 1e-6, device=device),  # tiny: cosine is defined
            "usage": first_slot[:, 0].clone(),  # (B, S)
            "read_weights": first_slot,  # (B, H, S)
            "reads": torch.zeros(batch, self.heads * self.width, device=device),
        }

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """images (B, T, C, H, W), labels int64 (B, T) in 0..num_classes-1 -> logits (B, T, num_classes)."""
        b, t = labels.shape
        x = torch.cat([images.reshape(b, t, -1), shifted_one_hot(labels, self.num_classes)], dim=-1)  # (B, T, D+C)
        state = self.initial_state(b, images.device)
        h = images.new_zeros(b, self.controller.hidden_size)
        c = torch.zeros_like(h)
        memory, usage, w_read, reads = state["memory"], state["usage"], state["read_weights"], state["reads"]
        outputs = []
        for step in range(t):
            h, c = self.controller(torch.cat([x[:, step], reads], dim=-1), (h, c))
            keys = torch.tanh(self.key(h)).view(b, self.heads, self.width)  # (B, H, W)
            values = None if self.value is None else torch.tanh(self.value(h)).view(b, self.heads, self.width)
            strength = None if self.strength is None else 1 + F.softplus(self.strength(h))  # (B, H)
            r, memory, usage, w_read = lrua_step(memory, usage, w_read, keys, self.gate(h), self.gamma,
                                                 values=values, strength=strength, per_head=self.per_head_write)
            reads = r.reshape(b, self.heads * self.width)  # (B, H*W)
            outputs.append(self.output(torch.cat([h, reads], dim=-1)))
        return torch.stack(outputs, dim=1)  # (B, T, C)


class LSTMBaseline(nn.Module):
    """The paper's "LSTM" comparison: the controller alone, output = linear(h_t). Same inputs and outputs."""

    def __init__(self, *, input_size: int = 400, num_classes: int = 5, hidden_size: int = 200) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.lstm = nn.LSTM(input_size + num_classes, hidden_size, batch_first=True)
        self.output = nn.Linear(hidden_size, num_classes)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b, t = labels.shape
        x = torch.cat([images.reshape(b, t, -1), shifted_one_hot(labels, self.num_classes)], dim=-1)  # (B, T, D+C)
        h, _ = self.lstm(x)  # (B, T, hidden)
        return self.output(h)  # (B, T, C)
