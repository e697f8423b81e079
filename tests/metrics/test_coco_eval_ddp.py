"""2 processes (gloo) give exactly the AP of 1: each rank evaluates its unpadded shard, results are gathered;
a padded shard (one image evaluated by both ranks, as a DistributedSampler pads) changes nothing."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lit_papers.data.coco import load_coco
from lit_papers.data.samplers import EvalShardSampler
from lit_papers.metrics.coco_eval import COCOEvaluator

IDS = [139, 802]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _update(ev, records, image_id, cat_ids):
    recs = [r for r in records if r["image_id"] == image_id]
    boxes = torch.tensor([r["bbox"] for r in recs], dtype=torch.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    ev.update(image_id, boxes, torch.tensor([r["score"] for r in recs]),
              torch.tensor([cat_ids.index(r["category_id"]) + 1 for r in recs], dtype=torch.int64))


def _worker(rank, world, port, coco_dir, images, padded, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    gt = load_coco(os.path.join(coco_dir, "annotations", "instances_val2017.json"))
    records = json.load(open(os.path.join(coco_dir, "results", "instances_val2014_fakebbox100_results.json")))
    cat_ids = sorted(gt.cats)
    ev = COCOEvaluator(gt, cat_ids, ("bbox",))
    sampler = EvalShardSampler(len(images), rank=rank, world_size=world)
    mine = [images[i] for i in sampler] + ([images[0]] if padded and rank == world - 1 else [])
    for image_id in mine:
        _update(ev, records, image_id, cat_ids)
    ev.gather()
    if rank == 0:
        json.dump(ev.compute()["bbox"], open(out, "w"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.parametrize("padded", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_two_processes_equal_one(shared_data, tmp_path, padded):
    coco_dir = str(shared_data / "coco")
    gt = load_coco(os.path.join(coco_dir, "annotations", "instances_val2017.json"))
    # all 79 val images: the fake detections exist for 139 and 802; the rest count their ground truth as misses
    images = sorted(gt.imgs)
    records = json.load(open(os.path.join(coco_dir, "results", "instances_val2014_fakebbox100_results.json")))
    single = COCOEvaluator(gt, sorted(gt.cats), ("bbox",))
    for image_id in images:
        _update(single, records, image_id, sorted(gt.cats))
    expected = single.compute()["bbox"]
    out = str(tmp_path / "stats.json")
    mp.spawn(_worker, args=(2, _free_port(), coco_dir, images, padded, out), nprocs=2, join=True)
    assert json.load(open(out)) == expected
    assert expected["AP"] > 0
