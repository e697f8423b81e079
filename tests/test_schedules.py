from __future__ import annotations

import pytest
import torch

from lit_papers.schedules import WarmupMultiStepLR


def _lrs(steps, **kwargs):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = WarmupMultiStepLR(opt, **kwargs)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_resnet110_schedule_by_iteration():
    # He et al. 2016: 0.01 for ~400 iterations (ResNet-110 warm-up), 0.1, /10 at 32k and 48k
    f = WarmupMultiStepLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
                          milestones=[32000, 48000], warmup_steps=400, warmup_factor=0.1).factor
    assert [f(0), f(399), f(400), f(31999), f(32000), f(47999), f(48000), f(63999)] == pytest.approx(
        [0.1, 0.1, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_stepping_an_optimizer_follows_the_factor():
    lrs = _lrs(8, milestones=[4, 6], warmup_steps=2, warmup_factor=0.1)
    assert lrs == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_linear_warmup_and_validation():
    lrs = _lrs(5, milestones=[100], warmup_steps=4, warmup_factor=0.0, warmup="linear")
    assert lrs == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    with pytest.raises(ValueError):
        _lrs(1, milestones=[5, 3])


def test_optimizer_config_steps_per_interval():
    from lit_papers.schedules import optimizer_config

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert optimizer_config(opt) is opt
    cfg = optimizer_config(opt, lambda o: torch.optim.lr_scheduler.StepLR(o, 2), interval="epoch")
    assert cfg["optimizer"] is opt and cfg["lr_scheduler"]["interval"] == "epoch"
    assert cfg["lr_scheduler"]["scheduler"].optimizer is opt
