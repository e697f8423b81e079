"""Shared 95 % intervals: the Student-t half-width against printed t-table values, the running mean against a
hand-computed case."""

import math

import pytest
import torch

from lit_papers.metrics.fewshot import Z95
from lit_papers.metrics.intervals import MeanCI95, t_half_width


def test_t_half_width_against_the_t_table():
    # [1, 2, 3]: mean 2, sample std 1; t(0.975, 2 dof) = 4.302653 (printed tables)
    assert t_half_width([1.0, 2.0, 3.0]) == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    # 12 values 0..11: sample std sqrt(13); t(0.975, 11 dof) = 2.200985, not the normal 1.96
    assert t_half_width([float(v) for v in range(12)]) == pytest.approx(2.200985 * math.sqrt(13 / 12), rel=1e-6)
    assert t_half_width([5.0]) is None and t_half_width([]) is None
    assert t_half_width([2.0, 2.0, 2.0]) == 0.0


def test_mean_ci95_metric_against_a_float64_hand_case():
    metric = MeanCI95()
    metric.update(torch.tensor([1.0, 2.0]))
    metric.update(torch.tensor([[3.0], [4.0]]))  # any shape: items are elements
    mean, half, n = metric.compute()
    # mean 2.5, sample variance ((1.5^2 + 0.5^2) * 2) / 3 = 5/3, half-width 1.96 * sqrt(5/3 / 4)
    assert float(mean) == 2.5 and float(n) == 4
    assert float(half) == pytest.approx(Z95 * (5.0 / 3.0 / 4.0) ** 0.5, rel=1e-12)
    metric.reset()
    metric.update(torch.tensor([7.0]))
    assert [float(v) for v in metric.compute()] == [7.0, 0.0, 1.0]  # one item: no spread


def _ddp_worker(rank, world, port, out):
    import json
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    metric = MeanCI95()
    metric.update(torch.tensor([1.0, 2.0, 3.0]) if rank == 0 else torch.tensor([10.0]))  # unequal shards
    mean, half, n = metric.compute()
    if rank == 0:
        json.dump([float(mean), float(half), float(n)], open(out, "w"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.ddp
def test_mean_ci95_two_processes_equal_one(tmp_path):
    """2 processes (gloo): the ranks' moments are summed, so mean and interval are those of all items in one
    process (a mean of the rank means would be 6.0, not 4.0)."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "mean.json"
    mp.spawn(_ddp_worker, args=(2, port, str(out)), nprocs=2, join=True)
    single = MeanCI95()
    single.update(torch.tensor([1.0, 2.0, 3.0, 10.0]))
    assert json.loads(out.read_text()) == pytest.approx([float(v) for v in single.compute()], abs=1e-12)
    assert json.loads(out.read_text())[0] == 4.0
