"""SharpMask (Pinheiro et al. 2016): refinement module shapes per stage, frozen DeepMask unchanged by a SharpMask
step (weights and BatchNorm statistics), the DeepMask checkpoint hand-over by config, the "same proposals"
comparison set, and the tiny recipe end to end through the CLI."""

from __future__ import annotations

import pytest
import torch

from lit_papers.ops.checkpoint import CheckpointNotFound
from lit_papers.papers.deepmask.model import DeepMask, VGGTrunk
from lit_papers.papers.sharpmask.model import RefinementModule, SharpMask
from lit_papers.papers.sharpmask.module import SharpMaskLitModule, refinement_loss


def _deepmask(stage_convs=(1, 1, 1, 1), widths=(4, 6, 8, 8), patch_size=112) -> DeepMask:
    torch.manual_seed(0)
    trunk = VGGTrunk(stage_convs=stage_convs, widths=widths, batch_norm=True)
    return DeepMask(trunk=trunk, patch_size=patch_size, mask_channels=8, low_rank=6, mask_size=14,
                    score_hidden=(8, 8), dropout=0.5)


def test_refinement_module_shapes_per_stage():
    module = RefinementModule(skip_in=64, mask_in=16, skip_out=8, mask_out=4)
    out = module(torch.rand(2, 16, 14, 14), torch.rand(2, 64, 14, 14))
    assert out.shape == (2, 4, 28, 28)
    assert module.reduce[0].weight.shape == (8, 64, 3, 3)  # 3x3 conv reduces the skip features to k_s
    assert module.fuse[0].weight.shape == (4, 16 + 8, 3, 3)  # 3x3 conv on [mask, reduced skip]
    for stage_convs, widths, patch, expected in [
            ((1, 1, 1, 1), (4, 6, 8, 8), 112, [(8, 8, 28), (4, 8, 56), (2, 6, 112)]),  # stride 8: 3 stages
            ((1, 1, 1, 1, 1), (3, 4, 6, 8, 8), 224, [(8, 8, 28), (4, 8, 56), (2, 6, 112), (2, 4, 224)])]:  # 16: 4
        dm = _deepmask(stage_convs, widths, patch)
        n = len(expected)
        sm = SharpMask(deepmask=dm, mask_channels=[8, 8, 4, 2, 2][:n + 1], skip_channels=[4, 4, 4, 4][:n])
        seen: list = []

        def record(mod, inp, out, seen=seen):
            seen.append((out.shape[1], inp[1].shape[1], out.shape[-1]))

        hooks = [m.register_forward_hook(record) for m in sm.refine]
        logits, score = sm(torch.rand(2, 3, patch, patch))
        for h in hooks:
            h.remove()
        # per stage: (k_m out, skip channels in = the trunk's map at stride s / 2^k, output resolution 14 * 2^(k+1))
        assert seen == expected
        assert logits.shape == (2, patch, patch) and score.shape == (2,)
    with pytest.raises(ValueError, match="pooling stages"):
        SharpMask(deepmask=_deepmask(), mask_channels=[8, 4], skip_channels=[4])


def test_frozen_deepmask_is_unchanged_by_a_sharpmask_step():
    dm = _deepmask()
    sm = SharpMask(deepmask=dm, mask_channels=[8, 8, 4, 2], skip_channels=[4, 4, 4])
    module = SharpMaskLitModule(model=sm, optimizer=lambda p: torch.optim.SGD(p, lr=1.0))
    before = {k: v.clone() for k, v in dm.state_dict().items()}  # weights and BatchNorm running statistics
    refine_before = {k: v.clone() for k, v in sm.refine.state_dict().items()}
    module.train()
    assert not dm.training and sm.refine.training  # frozen DeepMask stays in eval mode
    optimizer = module.configure_optimizers()
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for n, p in sm.named_parameters() if not n.startswith("deepmask."))
    patches, masks = torch.rand(4, 3, 112, 112), (torch.rand(4, 112, 112) > 0.5).float()
    loss = module.training_step((patches, masks, torch.tensor([1.0, 1.0, 0.0, 1.0])), 0)
    loss.backward()
    assert all(p.grad is None for p in dm.parameters())
    optimizer.step()
    for k, v in dm.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, refine_before[k]) for k, v in sm.refine.state_dict().items())


def test_refinement_loss_uses_positive_patches_only():
    logits, masks = torch.randn(3, 4, 4), (torch.rand(3, 4, 4) > 0.5).float()
    labels = torch.tensor([1.0, 0.0, 1.0])
    by_hand = torch.nn.functional.binary_cross_entropy_with_logits(logits[[0, 2]], masks[[0, 2]])
    torch.testing.assert_close(refinement_loss(logits, masks, labels), by_hand)
    assert refinement_loss(logits, masks, torch.zeros(3)) == 0


def test_deepmask_checkpoint_by_config_and_the_same_proposals(tmp_path, monkeypatch):
    trained = _deepmask()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "deepmask.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}, path)  # a LitModule's
    sm = SharpMask(deepmask=_deepmask(), deepmask_checkpoint=str(path), mask_channels=[8, 8, 4, 2],
                   skip_channels=[4, 4, 4]).eval()
    for k, v in trained.state_dict().items():
        assert torch.equal(sm.deepmask.state_dict()[k], v)
    # a path relative to the runs root, as the configs give it, and a missing one named with the fix
    monkeypatch.setenv("LIT_PAPERS_RUNS", str(tmp_path))
    under_runs = SharpMask(deepmask=_deepmask(), deepmask_checkpoint="deepmask.ckpt", mask_channels=[8, 8, 4, 2],
                           skip_channels=[4, 4, 4])
    assert all(torch.equal(under_runs.deepmask.state_dict()[k], v) for k, v in trained.state_dict().items())
    with pytest.raises(CheckpointNotFound, match="configs/deepmask/shapes.yaml"):
        SharpMask(deepmask=_deepmask(), deepmask_checkpoint="deepmask/shapes/v9/last.ckpt",
                  mask_channels=[8, 8, 4, 2], skip_channels=[4, 4, 4])
    with pytest.raises(RuntimeError, match="does not hold the configured DeepMask"):
        SharpMask(deepmask=_deepmask(widths=(4, 6, 8, 16)), deepmask_checkpoint=str(path),
                  mask_channels=[8, 8, 4, 2], skip_channels=[4, 4, 4])
    image = torch.rand(3, 40, 56)
    kw = dict(scales=[0.5, 1.0], max_proposals=30, mask_threshold=0.3)
    with torch.no_grad():
        sets = sm.propose_sets(image, **kw)
        alone = trained.eval().propose(image, **kw)
    # the "deepmask" set is exactly DeepMask's own proposals: same windows, scores and masks
    assert torch.equal(sets["deepmask"]["masks"], alone["masks"])
    torch.testing.assert_close(sets["deepmask"]["scores"], alone["scores"])
    assert sets[""]["masks"].shape[1:] == (40, 56) and len(sets[""]["scores"]) > 0


def test_tiny_fit_through_the_cli(cli, tiny_fit):
    proc = tiny_fit("sharpmask", into=cli.runs)  # the session's shared fit (conftest.py)
    run = cli.runs / "sharpmask" / "tiny" / "v0"
    assert (run / "proposals_val.png").is_file()
    metrics = (run / "csv" / "metrics.csv").read_text()
    for key in ("val/segm_AR10", "val/deepmask_segm_AR10", "val/segm_AR50_ci95", "val/seconds_per_image"):
        assert key in metrics, key
    assert "deepmask_segm" in proc.stdout
