"""2 processes (gloo): SegmentationMetrics sums the confusion matrices of the ranks before the ratios, so the
four metrics equal the single-process ones on the same images (not the mean of per-rank values); with
``per_image`` the images' matrices of all ranks are gathered too, so the bootstrap interval is the single-process one."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lit_papers.metrics.segmentation import METRIC_NAMES, SegmentationMetrics, bootstrap_ci95


def _data():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (6, 5, 7), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.2] = 255
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target.clamp(max=3),
                       torch.randint(0, 4, target.shape, generator=g))
    pred[:2] = 0  # rank 0's images are much worse than rank 1's: a mean of rank means would differ
    return pred, target


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    pred, target = _data()
    metric = SegmentationMetrics(num_classes=4, per_image=True)
    shard = slice(0, 2) if rank == 0 else slice(2, None)  # unequal shards, as EvalShardSampler may give
    metric.update(pred[shard], target[shard])
    scores = metric.compute()
    if rank == 0:
        half = bootstrap_ci95(scores["per_image"], resamples=30)
        json.dump({**{k: float(scores[k]) for k in METRIC_NAMES}, "images": len(scores["per_image"]),
                   **{f"{k}_ci95": v for k, v in half.items()}}, open(out, "w"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.ddp
def test_two_processes_equal_one(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "scores.json"
    mp.spawn(_worker, args=(2, port, str(out)), nprocs=2, join=True)
    pred, target = _data()
    single = SegmentationMetrics(num_classes=4, per_image=True)
    single.update(pred, target)
    expected = single.compute()
    got = json.loads(out.read_text())
    half = bootstrap_ci95(expected["per_image"], resamples=30)
    assert got["images"] == 6
    for k in METRIC_NAMES:
        assert got[k] == pytest.approx(float(expected[k]), abs=1e-12), k
        assert got[f"{k}_ci95"] == pytest.approx(half[k], abs=1e-12), k
    rank0 = SegmentationMetrics(num_classes=4)
    rank0.update(pred[:2], target[:2])
    assert abs(float(rank0.compute()["mean_iu"]) - got["mean_iu"]) > 0.05
