"""Speed of the motion-retargeting pipeline on CPU: paired training items/s, evaluation items/s and one training
step (full model, 8 combinations) per batch size. Prints JSON. Run: python tests/benchmarks/motion_retarget_speed.py"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from lit_papers.data.mixamo import MixamoDataModule
from lit_papers.data.synthetic_mixamo import generate
from lit_papers.papers.motion_retarget.model import Decoder, MotionEncoder, RetargetNet, StaticEncoder
from lit_papers.papers.motion_retarget.module import MotionRetargetLitModule


def main() -> dict:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = generate(Path(tmp) / "mixamo_data", seed=0)
        gen_s = time.perf_counter() - t0
        dm = MixamoDataModule(data_dir=str(folder), views=True)
        dm.setup()
        t0 = time.perf_counter()
        items = [dm.train_set[(i, i)] for i in range(128)]
        train_items_s = 128 / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(64):
            dm.test_set[i]
        eval_items_s = 64 / (time.perf_counter() - t0)
    net = RetargetNet(motion_encoder=MotionEncoder(channels=[30, 64, 96, 128]),
                      body_encoder=StaticEncoder(channels=[28, 32, 48, 64], out_channels=16),
                      view_encoder=StaticEncoder(channels=[28, 32, 48, 64], out_channels=8, pool="avg"),
                      decoder=Decoder(channels=[152, 128, 64, 30]))
    module = MotionRetargetLitModule(model=net, optimizer=torch.optim.Adam, footvel_weight=0.1)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    steps = {}
    for batch in (16, 32, 64):
        x = torch.stack([items[i]["x"] for i in range(batch)])
        y = torch.stack([items[i]["y"] for i in range(batch)])
        times = []
        for _ in range(4):
            t0 = time.perf_counter()
            loss = sum(module.losses(x, y).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        steps[str(batch)] = round(min(times[1:]), 4)
    return {"generate_s": round(gen_s, 2), "train_items_per_s": round(train_items_s, 1),
            "eval_items_per_s": round(eval_items_s, 1), "train_step_s_by_batch": steps,
            "torch_threads": torch.get_num_threads()}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
