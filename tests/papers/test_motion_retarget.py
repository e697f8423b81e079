"""Aberman et al. 2019 motion retargeting: network shapes, loss terms against hand computations, retrieval,
every config builds, and the tiny config end to end (fit, test, retarget command) through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lit_papers.papers.motion_retarget.model import (
    Decoder,
    MotionEncoder,
    RetargetNet,
    StaticEncoder,
    foot_velocity,
    triplet_loss,
)
from lit_papers.papers.motion_retarget.module import MotionRetargetLitModule, retrieval_top1
from lit_papers.papers.motion_retarget.retarget import _instantiate

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "motion_retarget").glob("*.yaml"))


def full_net() -> RetargetNet:
    return RetargetNet(motion_encoder=MotionEncoder(channels=[30, 64, 96, 128]),
                       body_encoder=StaticEncoder(channels=[28, 32, 48, 64], out_channels=16, pool="max"),
                       view_encoder=StaticEncoder(channels=[28, 32, 48, 64], out_channels=8, pool="avg"),
                       decoder=Decoder(channels=[152, 128, 64, 30]))


def test_motion_code_follows_length_static_codes_do_not():
    net = full_net().eval()
    for T in (16, 64, 120, 256):
        codes = net.encode(torch.randn(2, 30, T))
        assert codes["motion"].shape == (2, 128, T // 8)
        assert codes["body"].shape == (2, 16, 1) and codes["view"].shape == (2, 8, 1)
        assert net(torch.randn(2, 30, T)).shape == (2, 30, T)
    for T in (8, 60):
        with pytest.raises(ValueError, match="multiple of 8"):
            net.encode(torch.randn(1, 30, T))


def test_static_encoders_ignore_the_velocity_and_retarget_uses_target_codes():
    net = full_net().eval()
    x = torch.randn(1, 30, 64)
    y = x.clone()
    y[:, 28:] += 5.0  # only the root velocity differs
    a, b = net.encode(x), net.encode(y)
    torch.testing.assert_close(a["body"], b["body"])
    torch.testing.assert_close(a["view"], b["view"])
    assert not torch.allclose(a["motion"], b["motion"])
    target = torch.randn(1, 30, 32)  # any length: only its static codes are used
    out = net.retarget(x, target)
    t = net.encode(target)
    torch.testing.assert_close(out, net.decode(a["motion"], t["body"], t["view"]))
    torch.testing.assert_close(net.retarget(x, target, keep_view=True), net.decode(a["motion"], t["body"], a["view"]))


def test_triplet_loss_hand_computed():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    n = torch.tensor([[3.0, 0.0], [1.5, 0.0]])
    # sample 0: max(0, 1 - 3 + 1) = 0; sample 1: max(0, 2 - 1.5 + 1) = 1.5; mean 0.75
    assert float(triplet_loss(a, p, n, margin=1.0)) == pytest.approx(0.75, abs=1e-5)
    # codes of any shape are flattened per sample: (B, C, T)
    assert float(triplet_loss(a[:, :, None], p[:, :, None], n[:, :, None])) == pytest.approx(0.75, abs=1e-5)


def test_foot_velocity_hand_computed():
    x = torch.zeros(1, 30, 3)
    x[0, 20] = torch.tensor([0.0, 1.0, 3.0])  # right ankle x
    x[0, 27] = torch.tensor([2.0, 2.0, 2.0])  # left ankle y
    x[0, 28] = torch.tensor([9.0, 0.5, 0.5])  # root velocity x (frame 0 ignored)
    x[0, 29] = torch.tensor([9.0, -1.0, 1.0])
    v = foot_velocity(x)
    expect = torch.tensor([[[1.5, 2.5], [-1.0, 1.0], [0.5, 0.5], [-1.0, 1.0]]])  # (rx, ry, lx, ly)
    torch.testing.assert_close(v, expect)


class StubNet(torch.nn.Module):
    """Codes are the first frames of channels 0/1/2, decode returns (m + 10 b + 100 v) everywhere."""

    factors = ("motion", "body", "view")

    def encode(self, x, which=None):
        codes = {"motion": x[:, 0:1, 0:1], "body": x[:, 1:2, 0:1], "view": x[:, 2:3, 0:1]}
        return {k: v for k, v in codes.items() if which is None or k in which}

    def decode(self, motion, body, view=None):
        return (motion + 10 * body + 100 * view).expand(-1, 30, 4)


def test_loss_terms_hand_computed():
    K = 8
    x = torch.zeros(1, K, 30, 4)
    for k in range(K):  # combination k = (a, b, c): motion code a+1, body code 2*(b+1), view code 3*(c+1)
        a, b, c = (k >> 2) & 1, (k >> 1) & 1, k & 1
        x[0, k, 0], x[0, k, 1], x[0, k, 2] = a + 1, 2 * (b + 1), 3 * (c + 1)
    y = torch.zeros_like(x)
    module = MotionRetargetLitModule(model=StubNet(), optimizer=torch.optim.SGD, cross_weight=0.5,
                                     triplet_weight=2.0, triplet_margin=1.0, footvel_weight=0.0)
    terms = module.losses(x, y)
    # decoded value for combination (a, b, c) is (a+1) + 20 (b+1) + 300 (c+1); the target is 0
    def value(a, b, c):
        return (a + 1) + 20 * (b + 1) + 300 * (c + 1)
    rec = value(0, 0, 0) ** 2 + value(1, 1, 1) ** 2
    cross = sum(value(a, b, c) ** 2 for a in (0, 1) for b in (0, 1) for c in (0, 1) if len({a, b, c}) > 1)
    assert float(terms["rec"]) == pytest.approx(rec)
    assert float(terms["cross"]) == pytest.approx(0.5 * cross)
    # triplets: anchor shares one factor with sample i, so its code equals sample i's code: d(a, p) = 0,
    # d(a, n) = the code gap (1 for motion, 2 for body, 3 for view) -> max(0, 0 - gap + 1) = 0 except motion (0)
    assert float(terms["triplet_motion"]) == pytest.approx(0.0, abs=1e-4)
    y2 = y.clone()
    module2 = MotionRetargetLitModule(model=StubNet(), optimizer=torch.optim.SGD, triplet_weight=2.0,
                                      triplet_margin=5.0)
    t2 = module2.losses(x, y2)
    for factor, gap in (("motion", 1.0), ("body", 2.0), ("view", 3.0)):
        # two anchors, each max(0, 1e-6-ish - gap + 5), weight 2
        assert float(t2[f"triplet_{factor}"]) == pytest.approx(2 * 2 * (5 - gap), abs=1e-3)
    ae = MotionRetargetLitModule(model=StubNet(), optimizer=torch.optim.SGD, cross_weight=0.0, triplet_weight=0.0)
    assert set(ae.losses(x, y)) == {"rec"}


def test_footvel_term_hand_computed():
    x = torch.zeros(1, 8, 30, 4)
    y = torch.zeros_like(x)
    y[0, 0, 20] = torch.tensor([0.0, 1.0, 2.0, 3.0])  # target right ankle moves 1 per frame in combination 0
    module = MotionRetargetLitModule(model=StubNet(), optimizer=torch.optim.SGD, cross_weight=0.0,
                                     triplet_weight=0.0, footvel_weight=0.1)
    # prediction is 0 everywhere: squared error 1 on 3 of the 4 x 3 velocity entries -> MSE 3/12
    assert float(module.losses(x, y)["footvel"]) == pytest.approx(0.1 * 3 / 12)


def test_retrieval_top1_hand_computed():
    codes = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.1, 0.0], [5.2, 0.0], [0.0, 0.0]])
    motion = torch.tensor([0, 1, 0, 1, 0])
    animation = torch.tensor([0, 1, 0, 0, 0])
    char = torch.tensor([0, 0, 1, 1, 0])  # the last row duplicates (motion 0, char 0) and is merged
    top1, top1_anim = retrieval_top1(codes, motion, animation, char)
    assert top1 == 1.0
    assert top1_anim == pytest.approx(0.5)  # (motion 1, char 0) finds (motion 1, char 1) of animation 0
    assert retrieval_top1(codes, motion, animation, char, with_count=True) == (top1, top1_anim, 4)  # 4 queries


def test_every_parameter_gets_a_gradient():
    net = full_net()
    module = MotionRetargetLitModule(model=net, optimizer=torch.optim.SGD, footvel_weight=0.1)
    x = torch.randn(2, 8, 30, 32)
    loss = sum(module.losses(x, x).values())
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_builds(path):
    cfg = yaml.safe_load(path.read_text())
    net = _instantiate(RetargetNet, cfg["model"]["init_args"]["model"]["init_args"])
    views = cfg["data"]["init_args"]["views"]
    assert (net.view_encoder is not None) == views
    assert net(torch.zeros(1, 30, 64)).shape == (1, 30, 64)


def test_tiny_fit_test_and_retarget(cli, shared_data, tmp_path, monkeypatch):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cli("fit", "--config", "configs/motion_retarget/tiny.yaml", "--wandb", "false", env=env)
    run = next((cli.runs / "motion_retarget" / "tiny").glob("v*"))
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    proc = cli("test", "--config", "configs/motion_retarget/tiny.yaml", "--wandb", "false", "--ckpt_path", str(ckpt),
               "--run.version", run.name, env=env)
    assert "test/retrieval_top1" in proc.stdout + proc.stderr
    card = json.loads((run / "card_result.json").read_text()) if (run / "card_result.json").exists() else None
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    logged = {k: float(v) for r in rows for k, v in r.items() if k.startswith("test/") and v}
    # every per-item mean carries its interval and item count; the retrieval its query count (a Wilson interval)
    assert logged["test/mse_norm_n"] >= 2 and logged["test/mse_norm_ci95"] > 0
    assert logged["test/mse_norm_copy_n"] == logged["test/mse_norm_n"]
    assert logged["test/retrieval_top1_n"] >= 2
    assert card is None or all(r.get("low") is not None for r in card if r.get("ours") is not None)
    # `lit-papers retarget` through the console entry point, then in-process for the other cases
    out = tmp_path / "retarget"
    base = ["--run", str(run)]
    cli("retarget", *base, "--source", str(shared_data / "mixamo" / "examples" / "tall_man"),
        "--target", "test/Giant/walk_t00", "--target-view", "30", "--out", str(out), env=env)
    from lit_papers.papers.motion_retarget.retarget import main as retarget

    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])  # where the run's synthetic data lies
    result = np.load(out / "retargeted.npy")
    assert result.shape == (15, 2, 120) and np.isfinite(result).all()
    gif = Image.open(out / "retarget.gif")
    assert gif.n_frames == 120 and gif.size == (3 * 256, 256)
    out2 = tmp_path / "retarget2"
    assert retarget([*base, "--source", "test/Giant/jump_t00", "--target", "test/Tiny/walk_t00",
                     "--out", str(out2)]) == 0
    assert np.load(out2 / "ground_truth.npy").shape == (15, 2, 120)
    assert Image.open(out2 / "retarget.gif").size == (4 * 256, 256)
    meta = json.loads((out2 / "retarget.json").read_text())
    assert meta["source"]["character"] == "Giant" and meta["target"]["character"] == "Tiny"
    with pytest.raises(SystemExit, match="at least 16"):
        retarget([*base, "--source", str(shared_data / "mixamo" / "examples" / "tall_man"),
                  "--target", "test/Tiny/walk_t00", "--max-length", "12", "--out", str(tmp_path / "bad")])
