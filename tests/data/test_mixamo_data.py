"""Mixamo data (authors' layout): synthetic generator, datamodule items, OpenPose inference input, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lit_papers.data import synthetic_mixamo as S
from lit_papers.data.download import DatasetError, DatasetMissingError
from lit_papers.data.mixamo import MixamoDataModule, MixamoPairs, load_openpose, load_stats, scan_split
from lit_papers.ops import motion2d as M


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return S.generate(tmp_path_factory.mktemp("mixamo") / "mixamo_data", seed=3, variants=1, test_variants=1,
                      train_characters=3, test_characters=2)


def test_generator_writes_the_authors_layout(synth):
    meta = json.loads((synth / "synthetic.json").read_text())
    for split, length, frames in (("train", 64, 160), ("test", 120, 240)):
        chars = sorted(p.name for p in (synth / split).iterdir())
        assert len(chars) == (3 if split == "train" else 2)
        anims = {c: sorted(p.name for p in (synth / split / c).iterdir()) for c in chars}
        assert len({tuple(a) for a in anims.values()}) == 1  # every character performs every animation
        assert len(anims[chars[0]]) == len(S.MOTIONS)
        anim = anims[chars[0]][0]
        full = np.load(synth / split / chars[0] / anim / f"{anim}.npy")
        assert full.shape == (15, 3, frames) and full.dtype == np.float32
        wins = sorted((synth / split / chars[0] / anim / "motions").glob("*.npy"))
        assert [w.stem for w in wins] == [str(k) for k in range(1, frames // (length // 2))]  # k = 1 .. T // hop - 1
        np.testing.assert_array_equal(np.load(wins[1]), full[..., length // 2: length // 2 + length])
        assert meta["splits"][split]["window"] == length
    train_names = set(meta["splits"]["train"]["animations"])
    assert not train_names & set(meta["splits"]["test"]["animations"])  # held-out motions
    for name in ("meanpose", "stdpose", "meanpose_with_view", "stdpose_with_view"):
        assert np.load(synth / f"{name}.npy").shape == (15, 2)


def test_generated_statistics_follow_the_authors_procedure(synth):
    chars, motions, arrays = scan_split(synth / "train", 64)
    windows = [arrays[(c, a)][1][..., (k - 1) * 32:(k - 1) * 32 + 64] for c in chars for a, k in motions]
    mean, std = S.statistics(windows, with_view=True)
    np.testing.assert_allclose(np.load(synth / "meanpose_with_view.npy"), mean, atol=1e-6)
    np.testing.assert_allclose(np.load(synth / "stdpose_with_view.npy"), std, atol=1e-6)
    # the synthetic skeletons have Mixamo-like proportions: head about 78 px above the hip in the real statistics
    assert -90 < mean[0, 1] < -60 and 60 < mean[10, 1] < 100


def test_characters_differ_in_proportions_and_stand_z_up():
    p = S._variants("walk", np.random.default_rng(0), False)
    heights = {}
    for c in (*S.TRAIN_CHARACTERS, *S.TEST_CHARACTERS):
        m = S.animate(c, "walk", p, 32)
        assert np.all(m[0, 2] > m[1, 2]) and np.all(m[1, 2] > m[8, 2]) and np.all(m[8, 2] > m[11, 2])  # z up
        assert np.min(m[[11, 14], 2]) == pytest.approx(S.GROUND, abs=1e-9)  # the lower ankle is planted
        heights[c.name] = M.body_height(M.project(m, None))
    assert heights["Tall"] > heights["Average"] > heights["Short"] > heights["Child"]
    bones = {tuple(round(v, 4) for v in c.bones().values()) for c in (*S.TRAIN_CHARACTERS, *S.TEST_CHARACTERS)}
    assert len(bones) == len(S.TRAIN_CHARACTERS) + len(S.TEST_CHARACTERS)  # all proportions differ


def test_turn_and_walk_translate_the_root():
    for kind in ("walk", "turn"):
        p = S._variants(kind, np.random.default_rng(1), False)
        m = S.animate(S.TRAIN_CHARACTERS[0], kind, p, 120)
        assert np.linalg.norm(m[8, :2, -1] - m[8, :2, 0]) > 0.5
    m = S.animate(S.TRAIN_CHARACTERS[0], "turn", p, 120)
    side = m[2, :2] - m[5, :2]  # shoulder line turns
    angle = np.degrees(np.arctan2(side[1], side[0]))
    assert abs(angle[-1] - angle[0]) > 30


def make_pairs(synth, views=True, **aug):
    chars, motions, arrays = scan_split(synth / "train", 64)
    mean, std = load_stats(synth, views)
    opts = dict(scale_range=None, rotate_deg=None, clip=False, flip_prob=0.0, drop_prob=0.0)
    opts.update(aug)
    return MixamoPairs(chars, motions, arrays, mean=mean, std=std, length=64, views=views, **opts)


def test_pairs_are_the_right_combinations(synth):
    ds = make_pairs(synth)
    item = ds[(5, 1234)]
    assert item["x"].shape == (8, 30, 64) and item["y"].shape == (8, 30, 64)
    np.testing.assert_array_equal(item["x"].numpy(), item["y"].numpy())  # no dropping
    # recompute the combinations independently: the sample seed fixes the second motion/character/views
    rng = np.random.default_rng(1234)
    C, N = len(ds.characters), len(ds.motions)
    m = [5 // C, int((5 // C + rng.integers(1, N)) % N)]
    c = [5 % C, int((5 % C + rng.integers(1, C)) % C)]
    v = list(rng.choice(7, size=2, replace=False))
    assert m[0] != m[1] and c[0] != c[1] and v[0] != v[1]
    for k, (a, b, w) in enumerate(ds.combos):
        anim, win = ds.motions[m[a]]
        motion3d = np.load(synth / "train" / ds.characters[c[b]] / anim / "motions" / f"{win}.npy")
        expect = M.preprocess(M.project(motion3d.astype(np.float64), M.VIEW_ANGLES[v[w]]), ds.mean, ds.std)
        np.testing.assert_allclose(item["y"][k].numpy(), expect, atol=1e-4)
    skel = make_pairs(synth, views=False)
    assert skel[(0, 1)]["x"].shape == (4, 30, 64)


def test_pairs_augmentation_reproducible_flip_and_drop(synth):
    ds = make_pairs(synth, scale_range=(0.5, 1.5), clip=True, flip_prob=1.0, drop_prob=0.3)
    a, b = ds[(3, 77)], ds[(3, 77)]
    np.testing.assert_array_equal(a["x"].numpy(), b["x"].numpy())
    assert not np.array_equal(ds[(3, 78)]["y"].numpy(), a["y"].numpy())
    diff = (a["x"] != a["y"]).any(dim=-1)  # (8, 30) changed channels
    assert diff.any()
    changed = a["x"][diff]
    assert (changed == 0).all()  # dropped joints are set to the mean pose
    assert not diff[:, 28:].any()  # the root velocity is never dropped
    plain = make_pairs(synth, flip_prob=1.0)[(3, 77)]["y"].numpy()
    unflipped = make_pairs(synth)[(3, 77)]["y"].numpy()
    # flipped targets = mirrored 2D motions: undo the normalisation, mirror back, compare
    for k in range(8):
        e = M.denormalise(plain[k].astype(np.float64), ds.mean, ds.std)
        d = M.decode(e, start=(0.0, 0.0))
        back = M.preprocess(M.mirror(d), ds.mean, ds.std)
        np.testing.assert_allclose(back, unflipped[k], atol=1e-3)


def test_windows_only_layout_loads_the_same_motions(synth, tmp_path):
    copy = tmp_path / "mixamo_data"
    shutil.copytree(synth, copy)
    for full in (copy / "train").glob("*/*/*.npy"):
        full.unlink()  # keep only <Animation>/motions/<k>.npy, as the official preprocess leaves it
    a = scan_split(synth / "train", 64)
    b = scan_split(copy / "train", 64)
    assert a[0] == b[0] and a[1] == b[1]
    char, (anim, k) = a[0][1], a[1][2]
    kind, wins = b[2][(char, anim)]
    assert kind == "windows"
    np.testing.assert_array_equal(wins[k], a[2][(char, anim)][1][..., (k - 1) * 32:(k - 1) * 32 + 64])


def test_datamodule_setup_eval_items_and_real_stats(synth, shared_data):
    dm = MixamoDataModule(data_dir=str(synth), views=True, batch_size=4, eval_items=20)
    dm.setup()
    assert len(dm.train_set) == len(dm.train_set.motions) * 3
    assert len(dm.test_set) == 20
    item = dm.test_set[0]
    assert item["src"].shape == item["gt"].shape == item["copy"].shape == (30, 120)
    assert item["char"] != item["target"]
    # the ground truth is the target character performing the source motion, seen from the same view
    m, a, b = dm.test_set.items[0]
    gt = dm.test_set.project(m, b, item["view"])
    np.testing.assert_allclose(item["gt_px"].numpy(), gt, atol=1e-3)
    view2 = (item["view"] + 1 + (m + a + b) % 6) % 7  # view transfer: another of the 7 views
    assert view2 != item["view"]
    np.testing.assert_allclose(item["gt_view_px"].numpy(), dm.test_set.project(m, b, view2), atol=1e-3)
    assert item["ref_view"].shape == (30, 120)
    real = MixamoDataModule(data_dir=str(synth), stats="real", root=str(shared_data), views=False)
    mean, std = load_stats(real.stats_dir, False)
    np.testing.assert_allclose(mean[0], [-3.3, -78.2], atol=0.1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 8, 30, 64)


# -- bad input ------------------------------------------------------------------------------------------------
def test_bad_dataset_files_name_the_file(synth, tmp_path):
    copy = tmp_path / "bad"
    shutil.copytree(synth / "test", copy)
    victim = next(copy.glob("*/*/*.npy"))
    victim.write_bytes(b"not a numpy file")
    with pytest.raises(DatasetError, match=victim.name):
        scan_split(copy, 120)
    np.save(victim, np.zeros((15, 2, 130)))
    with pytest.raises(DatasetError, match=r"\(15, 3, T\)"):
        scan_split(copy, 120)
    with pytest.raises(DatasetMissingError, match="missing split folder"):
        scan_split(tmp_path / "nowhere", 64)
    with pytest.raises(DatasetMissingError, match="meanpose"):
        load_stats(tmp_path, True)
    dm = MixamoDataModule(data_dir=str(tmp_path / "empty"))
    with pytest.raises(DatasetMissingError, match="synthetic=true"):
        dm.prepare_data()
    with pytest.raises(ValueError, match="multiple of 8"):
        MixamoDataModule(train_length=60)


def test_openpose_real_clips(shared_data):
    for clip in ("tall_man", "small_man", "model"):
        folder = shared_data / "mixamo" / "examples" / clip
        m = load_openpose(folder)
        assert m.shape[:2] == (15, 2) and m.shape[-1] == 120  # 121..135 frames -> max_length 120
        assert np.all(m > 0)  # every hole filled
        raw = json.loads(sorted(folder.glob("*.json"))[0].read_text())["people"][0]["pose_keypoints_2d"]
        neck = np.array(raw[3:5])
        # smoothing moves a joint only a little; scale 512/720
        assert np.abs(m[1, :, 0] - neck * 512 / 720).max() < 10
        mean, std = load_stats(shared_data / "mixamo" / "mixamo_data", True)
        n = M.preprocess(m, mean, std)
        assert np.isfinite(n).all() and np.abs(n[:28]).mean() < 5  # real people land near the real statistics
        np.testing.assert_allclose(M.postprocess(n, mean, std, start=m[8, :, 0]), m, atol=1e-9)
    short = load_openpose(shared_data / "mixamo" / "examples" / "model", max_length=21, smooth_sigma=None)
    assert short.shape[-1] == 16  # cut to a multiple of 8


def write_clip(folder: Path, frames: int, people=1, missing: tuple[int, ...] = (), missing_at: int | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for t in range(frames):
        persons = []
        for _ in range(people):
            kp = np.concatenate([rng.uniform(100, 600, size=(25, 2)), np.ones((25, 1))], axis=1)
            for j in missing:
                if missing_at is None or t == missing_at:
                    kp[j] = 0
            persons.append({"pose_keypoints_2d": kp.ravel().tolist()})
        (folder / f"clip_{t:012d}_keypoints.json").write_text(json.dumps({"version": 1.2, "people": persons}))
    return folder


def test_openpose_bad_input(tmp_path):
    with pytest.raises(DatasetError, match="no person detected"):
        load_openpose(write_clip(tmp_path / "zero", 16, people=0))
    two = write_clip(tmp_path / "two", 16, people=2)
    with pytest.raises(DatasetError, match="2 people"):
        load_openpose(two)
    assert load_openpose(two, person=0).shape == (15, 2, 16)
    with pytest.raises(DatasetError, match="never detected"):
        load_openpose(write_clip(tmp_path / "nohead", 16, missing=(0,)))
    with pytest.raises(DatasetError, match="at least 8"):
        load_openpose(write_clip(tmp_path / "short", 5))
    holes = load_openpose(write_clip(tmp_path / "holes", 16, missing=(4,), missing_at=3), smooth_sigma=None,
                          video_height=512)
    np.testing.assert_allclose(holes[4, :, 3], holes[4, :, 2])  # filled from the previous frame
    first = load_openpose(write_clip(tmp_path / "first", 16, missing=(4,), missing_at=0), smooth_sigma=None,
                          video_height=512)
    np.testing.assert_allclose(first[4, :, 0], first[4, :, 1])  # frame 0 filled from the next frame
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.json").write_text("{")
    with pytest.raises(DatasetError, match="a.json"):
        load_openpose(tmp_path / "junk")
