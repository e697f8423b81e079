"""LRUA memory ops (Santoro et al. 2016, eqs. 2-8) against hand-computed cases."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lit_papers.ops import lrua


def test_content_addressing_is_a_softmax_of_cosine_similarity():
    g = torch.Generator().manual_seed(0)
    keys, memory = torch.randn(2, 3, 5, generator=g), torch.randn(2, 7, 5, generator=g)
    w = lrua.content_address(keys, memory)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3))
    ref = F.cosine_similarity(keys.unsqueeze(2), memory.unsqueeze(1), dim=-1)  # (2, 3, 7)
    torch.testing.assert_close(lrua.cosine_similarity(keys, memory), ref)
    torch.testing.assert_close(w, torch.softmax(ref, -1))


def test_read_is_the_weighted_sum_of_rows():
    memory = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
    w = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])
    assert lrua.read(w, memory).tolist() == [[[0.5, 1.0], [3.0, 3.0]]]


def test_least_used_picks_the_smallest_usages():
    usage = torch.tensor([[0.9, 0.1, 0.5, 0.05], [0.0, 0.0, 1.0, 1.0]])
    assert lrua.least_used(usage, 1).tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]  # ties -> lower index
    assert lrua.least_used(usage, 2).tolist() == [[0, 1, 0, 1], [1, 1, 0, 0]]


def test_write_weights_interpolate_previous_read_and_least_used():
    prev_read = torch.tensor([[[1.0, 0.0, 0.0]]])
    lu = torch.tensor([[0.0, 0.0, 1.0]])
    w = lrua.write_weights(torch.tensor([[0.0]]), prev_read, lu)  # sigmoid(0) = 0.5
    assert w.tolist() == [[[0.5, 0.0, 0.5]]]


def test_clear_and_write():
    memory = torch.ones(1, 3, 2)
    cleared = lrua.clear_least_used(memory, torch.tensor([[0.3, 0.1, 0.2]]))
    assert cleared.tolist() == [[[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]]
    keys = torch.tensor([[[2.0, -1.0]]])
    written = lrua.write(cleared, torch.tensor([[[0.0, 1.0, 0.5]]]), keys)
    assert written.tolist() == [[[1.0, 1.0], [2.0, -1.0], [2.0, 0.5]]]


def test_usage_decays_and_adds_all_heads():
    usage = torch.tensor([[1.0, 0.0]])
    wr = torch.tensor([[[0.25, 0.75], [0.5, 0.5]]])
    ww = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    torch.testing.assert_close(lrua.update_usage(usage, wr, ww, 0.9), torch.tensor([[0.9 + 0.75 + 1.0, 1.25 + 1.0]]))


def test_step_writes_the_key_into_the_least_used_slot_and_reads_it_back():
    # gate -> -inf: write entirely to the least-used slot (slot 2); the key is then the best match for reading
    memory = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    usage = torch.tensor([[0.5, 0.4, 0.1]])
    prev_read = torch.tensor([[[1.0, 0.0, 0.0]]])
    key = torch.tensor([[[-1.0, 0.2]]])
    r, new_memory, new_usage, w = lrua.lrua_step(memory, usage, prev_read, key, torch.tensor([[-50.0]]), 0.95)
    torch.testing.assert_close(new_memory[0, 2], key[0, 0])  # cleared, then the key written
    torch.testing.assert_close(new_memory[0, :2], memory[0, :2])
    assert w[0, 0].argmax() == 2
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 1))


def test_gradients_flow_through_reads_to_keys_gates_and_memory():
    g = torch.Generator().manual_seed(1)
    memory = torch.randn(2, 6, 4, generator=g).requires_grad_()
    keys = torch.randn(2, 3, 4, generator=g).requires_grad_()
    gate = torch.randn(2, 3, generator=g).requires_grad_()
    prev = torch.softmax(torch.randn(2, 3, 6, generator=g), -1)
    r, *_ = lrua.lrua_step(memory, torch.rand(2, 6, generator=g), prev, keys, gate, 0.95)
    r.pow(2).sum().backward()
    for t in (memory, keys, gate):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_key_strength_scales_the_similarities_before_the_softmax():
    g = torch.Generator().manual_seed(2)
    keys, memory = torch.randn(2, 3, 5, generator=g), torch.randn(2, 7, 5, generator=g)
    cos = F.cosine_similarity(keys.unsqueeze(2), memory.unsqueeze(1), dim=-1)  # (2, 3, 7)
    beta = torch.tensor([[1.0, 4.0, 50.0], [2.0, 0.5, 1.0]])
    w = lrua.content_address(keys, memory, beta)
    torch.testing.assert_close(w, torch.softmax(cos * beta.unsqueeze(-1), -1))
    torch.testing.assert_close(lrua.content_address(keys, memory, torch.ones(2, 3)), lrua.content_address(keys, memory))
    assert (w[0, 2].max() > 0.99) and (w[0, 2].argmax() == cos[0, 2].argmax())  # large beta -> nearly one-hot


def test_step_with_separate_values_writes_the_value_and_reads_with_the_key():
    memory = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    usage = torch.tensor([[0.5, 0.4, 0.1]])
    prev_read = torch.tensor([[[1.0, 0.0, 0.0]]])
    key, value = torch.tensor([[[0.0, 1.0]]]), torch.tensor([[[3.0, -2.0]]])
    r, new_memory, _, w = lrua.lrua_step(memory, usage, prev_read, key, torch.tensor([[-50.0]]), 0.95, values=value,
                                         strength=torch.tensor([[100.0]]))
    torch.testing.assert_close(new_memory[0, 2], value[0, 0])  # the value, not the key, fills the cleared slot
    assert w[0, 0].argmax() == 1  # the key matches slot 1 = (0, 1), not the slot just written
    torch.testing.assert_close(r[0, 0], memory[0, 1], atol=1e-3, rtol=0)


def test_multi_head_write_shared_vs_per_head_by_hand():
    """usage [0.5, 0.1, 0.9, 0.2, 0.05]: least used slot 4, then slot 1. Two heads, sigmoid(0) = 0.5, head 0 last
    read slot 0, head 1 last read slot 2.
    Eqs. 6-7 as written: w^lu = e1 + e4 for both heads -> head 0: 0.5 e0 + 0.5 e1 + 0.5 e4 (sums to 1.5).
    Per head: head 0 -> 0.5 e0 + 0.5 e4, head 1 -> 0.5 e2 + 0.5 e1 (each sums to 1)."""
    from lit_papers.ops.lrua import least_used_per_head

    usage = torch.tensor([[0.5, 0.1, 0.9, 0.2, 0.05]])
    prev_read = torch.tensor([[[1.0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0]]])
    gate = torch.zeros(1, 2)
    least_used, write_weights = lrua.least_used, lrua.write_weights
    shared = write_weights(gate, prev_read, least_used(usage, 2))
    assert torch.equal(shared, torch.tensor([[[0.5, 0.5, 0, 0, 0.5], [0, 0.5, 0.5, 0, 0.5]]]))
    per_head_lu = least_used_per_head(usage, 2)
    assert torch.equal(per_head_lu, torch.tensor([[[0, 0, 0, 0, 1.0], [0, 1.0, 0, 0, 0]]]))
    assert torch.equal(per_head_lu.sum(1), least_used(usage, 2))
    per_head = write_weights(gate, prev_read, per_head_lu)
    assert torch.equal(per_head, torch.tensor([[[0.5, 0, 0, 0, 0.5], [0, 0.5, 0.5, 0, 0]]]))
    assert torch.allclose(per_head.sum(-1), torch.ones(1, 2))


def test_per_head_step_writes_each_key_to_its_own_fresh_slot():
    """Gate -inf (only the least-used term): with per_head each head's key lands in a different fresh slot."""
    lrua_step = lrua.lrua_step
    memory = torch.zeros(1, 4, 2)
    usage = torch.tensor([[0.9, 0.3, 0.1, 0.6]])  # least used: slot 2, then slot 1 (slot 2 is also cleared)
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    gate = torch.full((1, 2), -1e4)
    prev_read = torch.zeros(1, 2, 4)
    _, mem_shared, _, _ = lrua_step(memory, usage, prev_read, keys, gate, 0.95)
    _, mem_head, _, _ = lrua_step(memory, usage, prev_read, keys, gate, 0.95, per_head=True)
    assert torch.allclose(mem_head[0], torch.tensor([[0.0, 0], [0, 1], [1, 0], [0, 0]]))
    assert torch.allclose(mem_shared[0], torch.tensor([[0.0, 0], [1, 1], [1, 1], [0, 0]]))  # both keys in both slots
