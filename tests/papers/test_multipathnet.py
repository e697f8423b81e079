"""MultiPathNet (Zagoruyko et al. 2016): foveal crops by hand, the integral loss by hand (labels per threshold by
hand), skip-connection RoI features against torchvision's roi_align / roi_pool on the same maps, the DeepMask
hand-over by config (checkpoint under $LIT_PAPERS_RUNS, disk cache), the ablation configs differing only in the
three switches, the tiny recipe through the CLI, and the real COCO sample end to end."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml

from lit_papers.backbones.timm_backbone import TimmBackbone
from lit_papers.papers.deepmask.model import DeepMask, VGGTrunk
from lit_papers.papers.multipathnet.model import (
    FovealSkipPooler,
    GridProposals,
    IntegralLoss,
    IntegralPredictor,
    MaskProposals,
    MultiPathNet,
    RegionPath,
    foveal_regions,
)
from tests.conftest import REPO

# -- 1. foveal regions ----------------------------------------------------------------------------------------------

def test_foveal_crops_by_hand():
    box = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), w 20, h 40
    expected = {1.0: [10, 20, 30, 60], 1.5: [5, 10, 35, 70], 2.0: [0, 0, 40, 80], 4.0: [-20, -40, 60, 120]}
    for scale, want in expected.items():
        assert foveal_regions(box, scale).tolist() == [[float(v) for v in want]]
    # clipped to an image of H 100, W 50: x in [0, 50], y in [0, 100]
    assert foveal_regions(box, 4.0, (100, 50)).tolist() == [[0.0, 0.0, 50.0, 100.0]]
    assert foveal_regions(box, 2.0, (100, 50)).tolist() == [[0.0, 0.0, 40.0, 80.0]]
    # the pooler's RoIs: batch index first, one set per region, clipping only when asked
    pooler = FovealSkipPooler(featmap_names=["c4"], strides=[16], channels=[8], region_scales=[1.0, 4.0],
                              region_strides=[[16], [16]], clip_regions=True)
    rois = pooler.regions([torch.zeros(0, 4), box], [(64, 64), (100, 50)])
    assert [r.tolist() for r in rois] == [[[1.0, 10, 20, 30, 60]], [[1.0, 0, 0, 50, 100]]]


# -- 2. skip connections ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["align", "pool"])
def test_skip_connection_features_match_torchvision_on_the_same_maps(kind):
    torch.manual_seed(0)
    backbone = TimmBackbone(name="resnet10t", strides=(4, 8, 16))
    assert backbone.strides == [4, 8, 16]
    maps = backbone(torch.rand(2, 3, 64, 96))
    for (name, fmap), stride, c in zip(maps.items(), (4, 8, 16), backbone.out_channels):
        assert fmap.shape == (2, c, 64 // stride, 96 // stride), name
    pooler = FovealSkipPooler(featmap_names=backbone.names, strides=backbone.strides,
                              channels=backbone.out_channels, region_scales=[1.0, 1.5, 2.0, 4.0],
                              region_strides=[[16, 8, 4], [16, 8], [16, 8], [16]], kind=kind, output_size=5)
    proposals = [torch.tensor([[4.0, 6.0, 40.0, 30.0], [50.0, 10.0, 90.0, 60.0]]), torch.tensor([[0.0, 0, 20, 20]])]
    sizes = [(64, 96), (64, 96)]
    out = pooler(maps, proposals, sizes)
    assert [o.shape for o in out] == [(3, backbone.out_channels[-1], 5, 5)] * 4
    oracle = torchvision.ops.roi_align if kind == "align" else torchvision.ops.roi_pool
    kwargs = {"sampling_ratio": 2, "aligned": True} if kind == "align" else {}
    for path, rois, strides in zip(pooler.paths, pooler.regions(proposals, sizes), ([16, 8, 4], [16, 8], [16, 8], [16])):
        assert path.strides == strides
        raw = path.pool(maps, rois)
        expect_raw = [oracle(maps[f"c{s.bit_length() - 1}"], rois, 5, spatial_scale=1.0 / s, **kwargs) for s in strides]
        for got, want, s in zip(raw, expect_raw, strides):
            assert got.shape == (3, maps[f"c{s.bit_length() - 1}"].shape[1], 5, 5)
            torch.testing.assert_close(got, want)
        if len(strides) == 1:  # conv5 only: Fast R-CNN's features, untouched
            torch.testing.assert_close(path(maps, rois), expect_raw[0])
            continue
        # by hand: each RoI's (C, S, S) block divided by its L2 norm, concatenated, x1000, then the 1x1 conv
        unit = [w / w.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None] for w in expect_raw]
        x = torch.cat(unit, dim=1) * 1000.0
        weight = path.mix.weight[:, :, 0, 0]  # (C_out, sum C)
        want = torch.einsum("oc,rchw->rohw", weight, x) + path.mix.bias[None, :, None, None]
        torch.testing.assert_close(path(maps, rois), want, rtol=1e-4, atol=1e-3)


def test_a_region_asking_for_a_missing_stride_is_an_error():
    with pytest.raises(ValueError, match="strides \\[16, 8, 4\\].*returns strides \\[8, 16\\]"):
        FovealSkipPooler(featmap_names=["c3", "c4"], strides=[8, 16], channels=[4, 8], region_scales=[1.0],
                         region_strides=[[16, 8, 4]])
    with pytest.raises(ValueError, match="single-map region"):
        RegionPath(featmap_names=["c3"], strides=[8], channels=[4], out_channels=8)


# -- 3. integral loss ------------------------------------------------------------------------------------------------

def _smooth_l1(x: float, beta: float = 1.0 / 9) -> float:
    return 0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta


def test_integral_loss_is_the_mean_of_the_per_threshold_losses_by_hand():
    torch.manual_seed(0)
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # IoU with the ground truth = the height / 10: 0.52, 0.63, 0.80; the last box does not overlap
    boxes = torch.tensor([[0.0, 0, 10, 5.2], [0.0, 0, 10, 6.3], [0.0, 0, 10, 8.0], [20.0, 20, 30, 30]])
    thresholds = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75]
    by_hand = [[2, 0, 0, 0, 0, 0],   # IoU .52: foreground at 0.50 only
               [2, 2, 2, 0, 0, 0],   # IoU .63: at 0.50, 0.55, 0.60
               [2, 2, 2, 2, 2, 2],   # IoU .80: at every threshold
               [0, 0, 0, 0, 0, 0]]   # background
    k = 2
    logits = torch.randn(4, 6, k + 1, dtype=torch.float64)
    deltas = torch.randn(4, 4 * (k + 1), dtype=torch.float64)
    targets_t = torch.randn(4, 4, dtype=torch.float64)
    loss = IntegralLoss(thresholds=thresholds)(logits, deltas, [torch.tensor([2, 2, 2, 0])], [targets_t], [boxes],
                                               [torch.zeros(4, dtype=torch.long)], [{"boxes": gt}])
    cls_terms, box_terms = [], []
    for u in range(6):
        ce = box = 0.0
        for r in range(4):
            row = logits[r, u].tolist()
            lse = math.log(sum(math.exp(v) for v in row))
            ce += lse - row[by_hand[r][u]]
            c = by_hand[r][u]
            if c > 0:
                box += sum(_smooth_l1(deltas[r, 4 * c + j].item() - targets_t[r, j].item()) for j in range(4))
        cls_terms.append(ce / 4)
        box_terms.append(box / 4)  # Fast R-CNN: summed over foreground, divided by all sampled RoIs
    assert loss["loss_classifier"].item() == pytest.approx(sum(cls_terms) / 6, rel=1e-9)
    assert loss["loss_box_reg"].item() == pytest.approx(sum(box_terms) / 6, rel=1e-9)
    # one threshold is exactly Fast R-CNN's loss
    one = IntegralLoss(thresholds=[0.5])(logits[:, :1], deltas, [torch.tensor([2, 2, 2, 0])], [targets_t], [boxes],
                                         [torch.zeros(4, dtype=torch.long)], [{"boxes": gt}])
    assert one["loss_classifier"].item() == pytest.approx(cls_terms[0], rel=1e-9)
    assert one["loss_box_reg"].item() == pytest.approx(box_terms[0], rel=1e-9)


def test_integral_predictor_averages_the_classifiers_softmax_at_inference():
    torch.manual_seed(0)
    head = IntegralPredictor(in_features=5, num_classes=3, num_thresholds=6)
    x = torch.randn(7, 5)
    logits, deltas = head(x)
    assert logits.shape == (7, 6, 4) and deltas.shape == (7, 16)
    head.eval()
    combined, _ = head(x)
    by_hand = sum(F.softmax(c(x), dim=1) for c in head.cls) / 6
    torch.testing.assert_close(combined.softmax(dim=1), by_hand)


# -- proposals -------------------------------------------------------------------------------------------------------

def _tiny_deepmask(seed: int) -> DeepMask:
    torch.manual_seed(seed)
    return DeepMask(patch_size=56, mask_channels=8, low_rank=8, mask_size=14, score_hidden=(8, 8),
                    trunk=VGGTrunk(stage_convs=(1, 1, 1), widths=(4, 8, 8), batch_norm=True))


def test_mask_proposals_take_the_deepmask_checkpoint_by_config_and_cache_on_disk(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    ckpt = runs / "deepmask" / "tiny" / "v0" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    trained = _tiny_deepmask(1)
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}, "global_step": 3}, ckpt)
    monkeypatch.setenv("LIT_PAPERS_RUNS", str(runs))
    options = {"scales": [0.5, 1.0], "max_proposals": 20, "cache_dir": "cache"}
    source = MaskProposals(model=_tiny_deepmask(2), checkpoint="deepmask/tiny/v0/checkpoints/last.ckpt", **options)
    assert source.loaded_from == str(ckpt)
    for key, value in trained.state_dict().items():
        assert torch.equal(source.model.state_dict()[key], value), key
    assert not any(p.requires_grad for p in source.parameters())
    source.train()
    assert not source.model.training  # frozen: always in eval mode
    image = torch.rand(3, 48, 64)
    boxes = source([image])[0]
    trained.eval()
    expected = trained.propose(image, scales=[0.5, 1.0], max_proposals=20, mask_threshold=0.2)["boxes"]
    torch.testing.assert_close(boxes, expected)
    assert len(list((runs / "cache").glob("*/*.pt"))) == 1
    # a second source (another arm of the ablation) reads the file instead of running the network
    again = MaskProposals(model=_tiny_deepmask(2), checkpoint="deepmask/tiny/v0/checkpoints/last.ckpt", **options)
    monkeypatch.setattr(again.model, "propose_sets", lambda *a, **k: pytest.fail("proposals recomputed"))
    torch.testing.assert_close(again([image])[0], expected)
    # other weights (no checkpoint: the untrained network) never read those files
    with pytest.warns(UserWarning, match="untrained DeepMask"):
        other = MaskProposals(model=_tiny_deepmask(2), **options)
    other([image])
    assert len(list((runs / "cache").glob("*/*.pt"))) == 2
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        MaskProposals(model=_tiny_deepmask(2), checkpoint="missing.ckpt")
    with pytest.raises(RuntimeError, match="last.ckpt does not hold the configured DeepMask"):
        MaskProposals(model=DeepMask(patch_size=56, mask_channels=4, low_rank=8, mask_size=14, score_hidden=(8, 8),
                                     trunk=VGGTrunk(stage_convs=(1, 1, 1), widths=(4, 8, 8), batch_norm=True)),
                      checkpoint=str(ckpt))


def test_grid_proposals_are_clipped_windows():
    boxes = GridProposals(sizes=[16], aspect_ratios=[1.0], stride=16)([torch.zeros(3, 32, 48)])[0]
    assert boxes.shape == (6, 4)  # 2 x 3 centres at (8, 8), (24, 8), ...
    assert {tuple(b) for b in boxes.tolist()} == {(x, y, x + 16.0, y + 16.0) for x in (0.0, 16.0, 32.0)
                                                   for y in (0.0, 16.0)}


# -- the recipes -----------------------------------------------------------------------------------------------------

SWITCHES = ("region_scales", "region_strides", "iou_thresholds")


def test_ablation_arms_differ_from_multipathnet_only_in_the_three_switches():
    def load(name):
        cfg = yaml.safe_load((REPO / "configs" / "multipathnet" / f"{name}.yaml").read_text())
        args = cfg["model"]["init_args"]["model"]["init_args"]
        return cfg, {k: args.pop(k) for k in SWITCHES}

    full, full_switches = load("shapes")
    assert full_switches == {"region_scales": [1.0, 1.5, 2.0, 4.0],
                             "region_strides": [[16, 8, 4], [16, 8], [16, 8], [16]],
                             "iou_thresholds": [0.5, 0.55, 0.6, 0.65, 0.7, 0.75]}
    expected = {"shapes_fast_rcnn": ([1.0], [[16]], [0.5]),
                "shapes_foveal": ([1.0, 1.5, 2.0, 4.0], [[16]] * 4, [0.5]),
                "shapes_skip": ([1.0], [[16, 8, 4]], [0.5]),
                "shapes_integral": ([1.0], [[16]], [0.5, 0.55, 0.6, 0.65, 0.7, 0.75])}
    for name, values in expected.items():
        cfg, switches = load(name)
        assert switches == dict(zip(SWITCHES, values)), name
        assert cfg == full, f"{name} differs from shapes.yaml beyond the three switches"


def test_tiny_fit_and_test_through_the_cli(cli, tiny_fit):
    tiny_fit("multipathnet", into=cli.runs)  # the session's shared fit (conftest.py)
    run = cli.runs / "multipathnet" / "tiny" / "v0"
    assert (run / "predictions_val.png").is_file()
    proc = cli("test", "--config", "configs/multipathnet/tiny.yaml", "--wandb", "false",
               "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    assert "test/bbox_AP" in proc.stdout
    metrics = (cli.runs / "multipathnet" / "tiny" / "v1" / "csv" / "metrics.csv").read_text()
    for key in ("test/bbox_AP", "test/bbox_AP50", "test/bbox_AP75", "test/bbox_APs", "test/bbox_APm", "test/bbox_APl"):
        assert key in metrics
    # the side-by-side picture from the official results file: 2 images x [ground truth | run], 128-px tiles
    from lit_papers.data.root import generated_dir
    from lit_papers.papers.multipathnet.pictures import comparison_grid

    grid = comparison_grid(generated_dir("coco") / "shapes-tiny", [cli.runs / "multipathnet" / "tiny" / "v1"],
                           num_images=2, top=2)
    assert grid.shape == (3, 2 + 2 * (128 + 2), 2 + 2 * (128 + 2))  # make_grid: 2-px padding around tiles
    titled = comparison_grid(generated_dir("coco") / "shapes-tiny", [cli.runs / "multipathnet" / "tiny" / "v1"],
                             num_images=2, top=2, titles=["tiny run"])
    assert titled.shape == (3, 16 + grid.shape[1], grid.shape[2]) and torch.equal(titled[:, 16:], grid)
    header = titled[:, :16].float()
    assert (header < 128).any(dim=0)[:, 2:130].any() and (header < 128).any(dim=0)[:, 132:].any()  # both titles


def test_real_coco_sample_end_to_end(shared_data, tmp_path):
    """Loader, DeepMask proposals (a tiny untrained DeepMask given by config), one training step, COCO evaluation."""
    from lit_papers.data.coco import COCODataModule
    from lit_papers.detection.evaluators import COCOMetrics

    dm = COCODataModule(root=str(shared_data), min_size=128, max_size=192, hflip=0.0, with_masks=False,
                        aspect_ratio_grouping=False, max_train_images=2, max_eval_images=2, batch_size=2,
                        num_workers=0, download=False)
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert all(im.shape[0] == 3 and (min(im.shape[1:]) == 128 or max(im.shape[1:]) == 192) for im in images)
    with pytest.warns(UserWarning, match="untrained DeepMask"):
        proposals = MaskProposals(model=_tiny_deepmask(0), scales=[0.5, 1.0], max_proposals=50)
    torch.manual_seed(0)
    model = MultiPathNet(backbone=TimmBackbone(name="resnet10t", strides=(4, 8, 16)), proposals=proposals,
                         num_classes=len(dm.class_names), pool_size=3, head_dim=16, roi_batch_size_per_image=16)
    assert all(len(p) > 0 for p in proposals(images))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg"} and all(torch.isfinite(v) for v in losses.values())
    before = model.roi_heads.box_predictor.cls[0].weight.detach().clone()
    sum(losses.values()).backward()
    optimizer.step()
    assert not torch.equal(before, model.roi_heads.box_predictor.cls[0].weight)
    model.eval()
    evaluator = COCOMetrics()
    evaluator.start(dm.eval_dataset("val"), ("bbox",))
    with torch.no_grad():
        for images, targets in dm.val_dataloader():
            for target, det in zip(targets, model(images, original_sizes=[t["orig_size"] for t in targets])):
                h0, w0 = target["orig_size"]
                assert det["boxes"].shape[1] == 4 and (det["boxes"][:, 2] <= w0 + 1e-3).all()
                evaluator.update(target["image_id"], det)
    metrics = evaluator.finish()
    assert evaluator.num_images == 2
    for key in ("bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl"):
        assert -1.0 <= metrics[key] <= 1.0


def test_paired_bootstrap_of_the_ap_difference():
    from lit_papers.papers.multipathnet.compare import box_ap, paired_bootstrap, resample

    images = [{"id": i, "width": 50, "height": 50, "file_name": f"{i}.png"} for i in (3, 5, 9)]
    boxes = {3: [5, 5, 20, 20], 5: [10, 10, 30, 15], 9: [0, 0, 40, 40]}
    anns = [{"id": n + 1, "image_id": i, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for n, (i, b) in enumerate(boxes.items())]
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    perfect = [{"image_id": i, "category_id": 1, "bbox": b, "score": 1.0} for i, b in boxes.items()]
    half = [d for d in perfect if d["image_id"] != 9]  # misses one of three objects
    assert box_ap(gt, perfect) == pytest.approx(1.0)
    g, (again,) = resample(gt, [half], [3, 5, 9])
    assert box_ap(g, again) == pytest.approx(box_ap(gt, half))
    g, (twice,) = resample(gt, [half], [9, 9, 3])  # the missed image drawn twice: recall 1/3
    assert [im["id"] for im in g["images"]] == [1, 2, 3] and len(g["annotations"]) == 3
    assert box_ap(g, twice) < box_ap(gt, half)
    out = paired_bootstrap(gt, perfect, perfect, reps=5)
    assert out["diff_low"] == out["diff_high"] == 0.0
    out = paired_bootstrap(gt, half, perfect, reps=20)
    assert out["ap_b"] - out["ap_a"] > 0 and out["diff_low"] >= 0.0


def test_mask_proposals_from_a_sharpmask_by_config():
    from lit_papers.papers.sharpmask.model import SharpMask

    sharp = SharpMask(deepmask=_tiny_deepmask(3), mask_channels=[8, 4, 2], skip_channels=[4, 4])
    image = torch.rand(3, 40, 56)
    options = {"scales": [0.5, 1.0], "max_proposals": 10, "mask_threshold": 0.2, "nms_iou": None}
    expected = sharp.eval().propose_sets(image, **options)
    for name in ("", "deepmask"):  # the refined masks' boxes, or DeepMask's coarse masks' of the same windows
        with pytest.warns(UserWarning, match="untrained SharpMask"):
            source = MaskProposals(model=sharp, proposal_set=name, **{k: v for k, v in options.items()})
        torch.testing.assert_close(source([image])[0], expected[name]["boxes"])
    with pytest.raises(KeyError, match="'coarse' is not among the model's sets"):
        MaskProposals(model=sharp, proposal_set="coarse", scales=[1.0])([image])


def test_seed_summary_mean_and_t_interval_by_hand(tmp_path):
    import csv as _csv
    import json as _json

    from lit_papers.papers.multipathnet.seeds import summarise

    def run(version: str, seed: int, ap: float | None, finished: bool = True):
        folder = tmp_path / "multipathnet" / "shapes_skip" / version
        (folder / "csv").mkdir(parents=True)
        (folder / "evidence.json").write_text(_json.dumps({"seed": seed, "git_commit": "abc", "global_step": 400}))
        with (folder / "csv" / "metrics.csv").open("w", newline="") as f:
            w = _csv.DictWriter(f, ["step", "train/loss", "test/bbox_AP"])
            w.writeheader()
            w.writerow({"step": 10, "train/loss": 1.0, "test/bbox_AP": ""})
            if ap is not None:
                w.writerow({"step": 400, "train/loss": "", "test/bbox_AP": ap})
        if finished:
            (folder / "FINISHED").write_text("")

    run("v0", 0, 0.20)
    run("seed1", 1, 0.23)
    run("seed2", 2, 0.26)
    run("seed3", 3, None)                 # trained but never tested: skipped, named
    run("seed4", 4, 0.99, finished=False)  # unfinished: skipped
    said = []
    out = summarise(tmp_path, ("shapes_skip",), log=said.append)["shapes_skip"]
    assert out["seeds"] == [0, 1, 2] and len(said) == 2 and "seed3" in said[0] + said[1]
    # mean 23.0, sample std 3.0, t(0.975, 2) = 4.3027: half-width 4.3027 * 3 / sqrt(3) = 7.4524
    assert out["test/bbox_AP"]["mean"] == pytest.approx(23.0)
    assert out["test/bbox_AP"]["t_ci95"] == pytest.approx(4.302653 * 3.0 / 3 ** 0.5, rel=1e-5)
    run("seed1b", 1, 0.5)                 # a second run of seed 1 would count it twice
    with pytest.raises(ValueError, match="same seed"):
        summarise(tmp_path, ("shapes_skip",), log=said.append)
