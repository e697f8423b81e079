"""Prototypical Networks: eq. 1-2 with a hand-checkable encoder, conv-4 shapes, and the tiny recipe end to end."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from lit_papers.backbones.conv4 import Conv4
from lit_papers.papers.protonet.model import PrototypicalNetwork


class Flatten(nn.Module):
    def forward(self, x):
        return OrderedDict(out=x.flatten(1))


def test_logits_are_negative_squared_distances_to_mean_support_embeddings():
    model = PrototypicalNetwork(encoder=Flatten())
    support = torch.tensor([[0.0, 0.0], [0.0, 4.0], [2.0, 0.0]]).view(1, 3, 1, 1, 2)
    labels = torch.tensor([[0, 1, 0]])
    query = torch.tensor([[1.0, 1.0], [3.0, 4.0]]).view(1, 2, 1, 1, 2)
    logits = model(support, labels, query, way=2)
    assert logits.tolist() == [[[-1.0, -10.0], [-20.0, -9.0]]]


def test_conv4_gives_64d_embeddings_on_28x28():
    enc = Conv4()
    maps = enc(torch.zeros(2, 1, 28, 28))
    assert [tuple(m.shape) for m in maps.values()] == [(2, 64, 14, 14), (2, 64, 7, 7), (2, 64, 3, 3), (2, 64, 1, 1)]
    assert enc.out_channels == [64] * 4 and enc.strides == [2, 4, 8, 16]
    assert PrototypicalNetwork(encoder=enc).embed(torch.zeros(1, 3, 1, 28, 28)).shape == (1, 3, 64)
    # 4 x (conv 3x3 + BN): (1*64*9 + 64) + 3 * (64*64*9 + 64) + 4 * (64 + 64) = 640 + 110,784 + 512
    assert sum(p.numel() for p in enc.parameters()) == 111_936


def test_tiny_fit_and_test_on_the_real_data(cli, tiny_fit):
    tiny_fit("protonet", into=cli.runs)  # the session's shared fit (conftest.py)
    run = cli.runs / "protonet" / "tiny" / "v0"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    proc = cli("test", "--config", "configs/protonet/tiny.yaml", "--wandb", "false", "--ckpt_path", str(ckpt))
    assert "test/official_20way_1shot_acc" in proc.stdout and "test/5way_5shot_acc_ci95" in proc.stdout
    metrics = (cli.runs / "protonet" / "tiny" / "v1" / "csv" / "metrics.csv").read_text()
    assert "test/official_20way_1shot_acc" in metrics and "test/5way_5shot_acc_ci95" in metrics
    import csv

    row = [r for r in csv.DictReader(metrics.splitlines()) if r.get("test/official_20way_1shot_acc")][-1]
    assert float(row["test/official_20way_1shot_acc_n"]) == 400  # 20 runs x 20 queries: binomial over queries
    p, ci = float(row["test/official_20way_1shot_acc"]), float(row["test/official_20way_1shot_acc_ci95"])
    assert ci == pytest.approx(1.959964 * (p * (1 - p) / 400) ** 0.5, rel=1e-4)
    assert float(row["test/5way_5shot_acc_n"]) > 0  # episodes


def test_cached_evaluation_equals_direct_evaluation(shared_data):
    from lit_papers.data.episodes import EpisodeTask
    from lit_papers.data.omniglot import OmniglotDataModule
    from lit_papers.papers.protonet.module import ProtoNetLitModule

    torch.manual_seed(0)
    module = ProtoNetLitModule(model=PrototypicalNetwork(encoder=Conv4(width=8)), optimizer=torch.optim.Adam).eval()
    dm = OmniglotDataModule(root=str(shared_data), test_size=8, official_runs=False,
                            test_tasks=[EpisodeTask(5, 1, 5, 3)])
    dm.setup("test")
    dataset = dm.test_dataloader()[0].dataset
    module._embeddings = {}
    with torch.no_grad():
        for i in range(3):
            batch = dataset[i]
            direct = module.episode_logits(batch)
            way = batch["classes"].shape[1]
            cached = module.model.classify(module._cached_embed(batch["support"], batch["support_keys"]),
                                           batch["support_labels"],
                                           module._cached_embed(batch["query"], batch["query_keys"]), way)
            torch.testing.assert_close(cached, direct, rtol=1e-4, atol=1e-4)
    assert 0 < len(module._embeddings) <= 3 * 5 * 6


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_test_metrics_equal_single_process(cli):
    import csv

    def last(run, key):
        with open(run / "csv" / "metrics.csv") as fh:
            return float([row[key] for row in csv.DictReader(fh) if row.get(key)][-1])

    cli("fit", "--config", "configs/protonet/tiny.yaml", "--wandb", "false")
    ckpt = str(cli.runs / "protonet" / "tiny" / "v0" / "checkpoints" / "last.ckpt")
    tasks = ["--data.init_args.test_tasks", "[{way: 5, shot: 1, query: 5, episodes: 7}]"]  # odd: 4/3 per rank
    cli("test", "--config", "configs/protonet/tiny.yaml", "--wandb", "false", "--ckpt_path", ckpt, *tasks,
        "--trainer.strategy", "ddp", "--trainer.devices", "2", timeout=900)
    cli("test", "--config", "configs/protonet/tiny.yaml", "--wandb", "false", "--ckpt_path", ckpt, *tasks)
    two, one = cli.runs / "protonet" / "tiny" / "v1", cli.runs / "protonet" / "tiny" / "v2"
    for key in ("test/official_20way_1shot_acc", "test/5way_1shot_acc", "test/5way_1shot_acc_ci95", "test/loss"):
        assert last(two, key) == pytest.approx(last(one, key), rel=1e-5, abs=1e-7), key


def test_test_time_augment_is_the_mean_embedding_over_fixed_warps(shared_data):
    from lit_papers.data.episodes import EpisodeTask
    from lit_papers.data.omniglot import OmniglotDataModule
    from lit_papers.ops.affine import affine_warp, random_affine_params
    from lit_papers.papers.protonet.module import ProtoNetLitModule

    torch.manual_seed(0)
    net = PrototypicalNetwork(encoder=Conv4(width=8)).eval()
    plain = ProtoNetLitModule(model=net, optimizer=torch.optim.Adam).eval()
    still = ProtoNetLitModule(model=net, optimizer=torch.optim.Adam, test_time_augment=(3, 0.0, 0.0)).eval()
    tta = ProtoNetLitModule(model=net, optimizer=torch.optim.Adam, test_time_augment=(4, 15.0, 1.5)).eval()
    images = torch.rand(2, 3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(still.eval_embed(images), plain.eval_embed(images))  # identity warps: no change
        angles, shifts = random_affine_params(4, 15.0, 1.5, generator=torch.Generator().manual_seed(0))
        flat = images.flatten(0, 1)
        slow = [net.embed(images)] + [net.embed(affine_warp(flat, a.repeat(6), s.repeat(6, 1)).view_as(images))
                                      for a, s in zip(angles, shifts)]  # one copy of each transform per image
        torch.testing.assert_close(tta.eval_embed(images), torch.stack(slow).mean(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(tta.eval_embed(images), tta.eval_embed(images))  # deterministic
        assert not torch.allclose(tta.eval_embed(images), plain.eval_embed(images), atol=1e-4)

        # both evaluation paths (cached per drawing, and per episode as for the official runs) agree under TTA
        dm = OmniglotDataModule(root=str(shared_data), test_size=8, official_runs=False,
                                test_tasks=[EpisodeTask(5, 1, 5, 2)])
        dm.setup("test")
        batch = dm.test_dataloader()[0].dataset[0]
        tta._embeddings = {}
        way = batch["classes"].shape[1]
        cached = net.classify(tta._cached_embed(batch["support"], batch["support_keys"]), batch["support_labels"],
                              tta._cached_embed(batch["query"], batch["query_keys"]), way)
        direct = net.classify(tta.eval_embed(batch["support"]), batch["support_labels"], tta.eval_embed(batch["query"]),
                              way)
        torch.testing.assert_close(cached, direct, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="test_time_augment"):
        ProtoNetLitModule(model=net, optimizer=torch.optim.Adam, test_time_augment=(0, 10.0, 1.0))


def test_config_settings_win_over_checkpoint_hyperparameters_at_test_time(cli, tiny_fit):
    """``test --config tta.yaml --ckpt_path <plain run>`` must evaluate with TTA (Lightning's default would take the
    checkpoint's saved test_time_augment=None and silently drop it)."""
    import csv

    import yaml

    def last(run, key):
        with open(run / "csv" / "metrics.csv") as fh:
            return float([row[key] for row in csv.DictReader(fh) if row.get(key)][-1])

    tiny_fit("protonet", into=cli.runs)  # the session's shared fit (conftest.py)
    ckpt = str(cli.runs / "protonet" / "tiny" / "v0" / "checkpoints" / "last.ckpt")
    plain = cli("test", "--config", "configs/protonet/tiny.yaml", "--wandb", "false", "--ckpt_path", ckpt)
    tta = cli("test", "--config", "configs/protonet/tiny.yaml", "--wandb", "false", "--ckpt_path", ckpt,
              "--model.init_args.test_time_augment", "[2, 10, 1]")
    assert "test_time_augment" not in plain.stderr
    assert "model.init_args.test_time_augment: using the config's [2, 10.0, 1.0]" in tta.stderr
    one, two = cli.runs / "protonet" / "tiny" / "v1", cli.runs / "protonet" / "tiny" / "v2"
    assert yaml.safe_load((two / "config.yaml").read_text())["model"]["init_args"]["test_time_augment"] == [2, 10, 1]
    assert last(two, "test/loss") != pytest.approx(last(one, "test/loss"), rel=1e-6)  # TTA really was applied


def test_tiny_alphabets_config_trains_and_every_parameter_gets_a_gradient(cli, tmp_path):
    """The tiny preset of a new variant (the generic test in tests/test_configs.py only picks up tiny.yaml)."""
    import json

    out = tmp_path / "grads.json"
    cli("fit", "--config", "configs/protonet/tiny_alphabets.yaml", "--wandb", "false", "--trainer.fast_dev_run", "true",
        "--trainer.callbacks+=tests.helpers.probes.CheckAllGradients", f"--trainer.callbacks.out={out}")
    grads = json.loads(out.read_text())
    assert grads["total"] > 0 and grads["missing"] == [], grads["missing"][:10]


def test_channels_last_is_faster_memory_layout_with_the_same_numbers():
    """channels_last only changes the memory layout: the convolutions run channels-last, and the loss and every
    gradient equal the default layout's to float rounding."""
    import copy

    from lit_papers.backbones.conv4 import Conv4
    from lit_papers.papers.protonet.model import PrototypicalNetwork
    from lit_papers.papers.protonet.module import ProtoNetLitModule

    torch.manual_seed(0)
    net = PrototypicalNetwork(encoder=Conv4())
    plain = ProtoNetLitModule(model=net, optimizer=torch.optim.Adam)
    fast = ProtoNetLitModule(model=copy.deepcopy(net), optimizer=torch.optim.Adam, channels_last=True)
    assert fast.model.encoder.blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(12, 1, 28, 28)
    assert fast.model.encoder(x)["block1"].is_contiguous(memory_format=torch.channels_last)
    assert not plain.model.encoder(x)["block1"].is_contiguous(memory_format=torch.channels_last)
    batch = {"support": torch.rand(1, 10, 1, 28, 28), "support_labels": torch.arange(5).repeat(2)[None],
             "query": torch.rand(1, 15, 1, 28, 28), "query_labels": torch.arange(5).repeat(3)[None],
             "classes": torch.arange(5)[None]}
    losses = []
    for module in (plain, fast):
        module.log = lambda *a, **k: None  # no trainer attached
        losses.append(module.training_step(batch, 0).detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    # Gradients in float64: in float32 the two layouts round differently (channels_last ~10x more on one thread),
    # and a max-pool window whose two largest inputs are within rounding then routes its gradient to another
    # element: measured over 16 seeds on 1 thread, a jump of up to 2e-2 (default) and 8e-2 (channels_last) of the
    # gradient's scale on some seeds, ~5e-5 on the others. In float64 such near-ties are ~eps64/eps32 = 2e-9 times as likely,
    # so the two layouts must agree to float64 rounding: the layout changes nothing but the memory order.
    batch64 = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    for module in (plain, fast):
        module.double()
        module.zero_grad()
        module.training_step(batch64, 0).backward()
    assert fast.model.encoder.blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    for (name, a), b in zip(plain.model.named_parameters(), fast.model.parameters()):
        scale = max(a.grad.abs().max().item(), 1.0)
        torch.testing.assert_close(a.grad, b.grad.contiguous(), rtol=0, atol=1e-10 * scale, msg=name)


def test_val_curve_reads_validation_rows_and_picks_the_lowest_loss(tmp_path):
    from lit_papers.papers.protonet.val_curve import choose, read_curve, table

    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss,val/5way_1shot_acc,val/5way_1shot_acc_ci95,val/5way_1shot_loss,val/loss,"
                    "test/5way_1shot_acc\n"
                    "0,24,1.5,,,,,\n"
                    "4,499,,0.97,0.007,0.08,0.16,\n"
                    "9,999,,0.98,0.006,0.05,0.12,\n"
                    "14,1499,,0.985,0.005,0.06,0.11,\n"
                    "14,1499,,,,,,0.99\n")  # a test row: never read
    curve = read_curve(path)
    assert [p["episodes"] for p in curve] == [500, 1000, 1500]
    assert all(not any(k.startswith("test/") for k in p) for p in curve)
    assert choose(curve, "val/5way_1shot_loss")["episodes"] == 1000  # lowest 5-way loss, not lowest val/loss
    assert choose(curve, "val/loss")["episodes"] == 1500
    assert "| 1000 | 98.00 ± 0.60 | 0.1200 |" in table(curve)
