"""2D motion ops (Aberman et al. 2019): projection, encoding, normalisation, inverses, mirroring, smoothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_papers.data import synthetic_mixamo as S
from lit_papers.data.mixamo import load_stats
from lit_papers.ops import motion2d as M


def walk(heading: float = 0.0, frames: int = 64) -> np.ndarray:
    p = S._variants("walk", np.random.default_rng(0), False)
    p["heading"] = heading
    return S.animate(S.TRAIN_CHARACTERS[0], "walk", p, frames)


@pytest.fixture(scope="module")
def real_stats(shared_data):
    return {v: load_stats(shared_data / "mixamo" / "mixamo_data", v) for v in (False, True)}


def test_front_projection_hand_computed():
    m = np.zeros((15, 3, 2))
    m[:, 0, :] = np.arange(15)[:, None] * 0.01  # x
    m[:, 2, :] = np.arange(15)[:, None] * -0.02 + 1.0  # z
    m[:, 2, 1] += 0.5  # the whole body moves up in frame 1
    out = M.project(m, None)
    # Neck = mid(2, 5), Hips = mid(9, 12); x * 128, y = -z * 128
    expect_x = np.arange(15) * 0.01 * 128
    expect_x[1] = (2 + 5) / 2 * 0.01 * 128
    expect_x[8] = (9 + 12) / 2 * 0.01 * 128
    np.testing.assert_allclose(out[:, 0, 0], expect_x)
    z = np.arange(15) * -0.02 + 1.0
    z[1], z[8] = (z[2] + z[5]) / 2, (z[9] + z[12]) / 2
    np.testing.assert_allclose(out[:, 1, 0], -z * 128)
    np.testing.assert_allclose(out[:, 1, 1], -(z + 0.5) * 128)
    assert m[1, 0, 0] == 0.01  # input untouched


def test_view_projection_equals_rotated_body_in_world_view():
    m = walk(heading=0.0)  # faces -y: the body frame is the world frame
    np.testing.assert_allclose(M.body_frame(m), np.eye(3), atol=1e-12)
    for deg in (-90, -30, 0, 45, 90, 137):
        th = np.deg2rad(deg)
        view = M.encode(M.project(m, (0, 0, th)))
        world = M.encode(M.project(M.rotate3d(m, (0, 0, -th)), None))  # independent path: rotate the body by -theta
        np.testing.assert_allclose(view, world, atol=1e-9)


def test_view_projection_is_invariant_to_body_heading():
    m = walk(heading=0.0)
    turned = M.rotate3d(m, (0, 0, 0.9))
    for angles in M.VIEW_ANGLES:
        np.testing.assert_allclose(M.encode(M.project(turned, angles)), M.encode(M.project(m, angles)), atol=1e-9)


def test_front_view_sees_right_side_at_negative_x():
    out = M.project(walk(), None)
    assert np.all(out[2, 0] < out[5, 0])  # RightArm left of LeftArm in the image (facing the camera)
    assert np.all(out[0, 1] < out[11, 1])  # head above the ankle (image y down)


def test_encode_hand_computed_and_decode_roundtrip():
    m = np.random.default_rng(0).normal(size=(15, 2, 5)) * 50
    e = M.encode(m)
    assert e.shape == (15, 2, 5)
    np.testing.assert_allclose(e[0], m[0] - m[8])
    np.testing.assert_allclose(e[8], m[9] - m[8])  # row 8 is joint 9 (the root row is dropped)
    np.testing.assert_allclose(e[14, :, 0], 0)
    np.testing.assert_allclose(e[14, :, 3], m[8, :, 3] - m[8, :, 2])
    np.testing.assert_allclose(M.decode(e, start=m[8, :, 0]), m, atol=1e-9)


@pytest.mark.parametrize("with_view", [False, True])
def test_normalise_roundtrip_with_real_statistics(real_stats, with_view):
    mean, std = real_stats[with_view]
    m2d = M.project(walk(heading=0.3), M.VIEW_ANGLES[1] if with_view else None)
    n = M.preprocess(m2d, mean, std)
    assert n.shape == (30, 64)
    e = M.encode(m2d)
    # channel 2j + c is joint row j, coordinate c
    np.testing.assert_allclose(n[2 * 3 + 1], (e[3, 1] - mean[3, 1]) / std[3, 1])
    np.testing.assert_allclose(M.denormalise(n, mean, std), e, atol=1e-9)
    np.testing.assert_allclose(M.postprocess(n, mean, std, start=m2d[8, :, 0]), m2d, atol=1e-9)


def test_real_statistics_look_like_the_manifest(real_stats):
    mean, std = real_stats[False]
    np.testing.assert_allclose(mean[0], [-3.3, -78.2], atol=0.1)  # head relative to the hip
    assert 80 < mean[10, 1] < 95 and 80 < mean[13, 1] < 95  # ankles
    assert abs(mean[14]).max() < 0.1 and 1.5 < std[14].mean() < 2.0  # velocity row


def test_postprocess_torch_matches_numpy(real_stats):
    mean, std = real_stats[True]
    n = np.random.default_rng(1).normal(size=(3, 30, 16))
    start = np.random.default_rng(2).normal(size=(3, 2)) * 100
    got = M.postprocess_torch(torch.from_numpy(n), torch.from_numpy(mean), torch.from_numpy(std), torch.from_numpy(start))
    for b in range(3):
        np.testing.assert_allclose(got[b].numpy(), M.postprocess(n[b], mean, std, start=start[b]), atol=1e-9)


def test_mirror_twice_is_identity_and_swaps_sides():
    m = M.project(walk(heading=0.2), None)
    f = M.mirror(m)
    np.testing.assert_array_equal(M.mirror(f), m)
    np.testing.assert_allclose(f[4, 0], -m[7, 0])  # RightHand <- mirrored LeftHand
    np.testing.assert_allclose(f[4, 1], m[7, 1])
    np.testing.assert_allclose(f[0, 0], -m[0, 0])


def test_scale_copy_scales_height():
    m = M.project(walk(), None)
    h = M.body_height(m)
    assert 120 < h < 200  # about 1.2 Blender units x 128 px
    c = M.scale_copy(m, h, 2 * h)
    assert M.body_height(c) == pytest.approx(2 * h)
    np.testing.assert_allclose(c[8, :, 0], m[8, :, 0])
    np.testing.assert_allclose(M.encode(c)[14], 2 * M.encode(m)[14])  # root velocity scaled too


def test_gaussian_smooth_matches_scipy_and_keeps_constants():
    x = np.random.default_rng(0).normal(size=(4, 2, 37))
    np.testing.assert_allclose(M.gaussian_smooth(np.ones((2, 9)), 2.0), np.ones((2, 9)))
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    np.testing.assert_allclose(M.gaussian_smooth(x, 2.0), scipy_ndimage.gaussian_filter1d(x, 2.0, axis=-1), atol=1e-12)
    short = x[..., :5]  # shorter than the kernel radius: scipy reflects repeatedly
    np.testing.assert_allclose(M.gaussian_smooth(short, 2.0), scipy_ndimage.gaussian_filter1d(short, 2.0, axis=-1),
                               atol=1e-12)
