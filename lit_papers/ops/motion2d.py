"""2D skeleton motion of Aberman et al. 2019 ("Learning Character-Agnostic Motion for Motion Retargeting in
2D"): 3D -> 2D projection, root-relative + velocity encoding, normalisation, their exact inverses, mirroring.

Formats (the authors' conventions, see ``shared/data/MANIFEST.md`` section 5):

* ``motion3d``: float (15, 3, T), global 3D joint positions, world frame, **z up**, Blender units
  (1 unit = ``UNIT`` = 128 px after projection). Joints in Mixamo order :data:`JOINTS`.
* ``motion2d``: float (15, 2, T), 2D joint positions in pixels, image y pointing **down**.
* ``encoded``: float (15, 2, T), rows 0..13 = the 14 non-root joints minus the mid-hip (joint 8, dropped),
  row 14 = mid-hip velocity (frame-to-frame difference, zero at frame 0).
* ``normalised``: float (30, T) = ``(encoded - mean) / std`` flattened joint-major
  (j0x, j0y, j1x, j1y, ..., vel_x, vel_y).

All functions are pure and work on numpy arrays (float64 recommended); they never modify their inputs.
"""

from __future__ import annotations

import numpy as np

JOINTS = ("Head", "Neck", "RightArm", "RightForeArm", "RightHand", "LeftArm", "LeftForeArm", "LeftHand",
          "Hips", "RightUpLeg", "RightLeg", "RightFoot", "LeftUpLeg", "LeftLeg", "LeftFoot")
NUM_JOINTS = 15
ROOT = 8
UNIT = 128.0  # Blender units -> pixels (authors' ``unit``)
IMG_SIZE = 512  # authors' ``img_size`` (512, 512); de-normalised motions are placed around its centre
# The 7 training view angles (rad) about (x, y, z): (0, 0, theta), theta in {-90, -60, ..., 90} degrees.
VIEW_ANGLES = tuple((0.0, 0.0, float(np.deg2rad(d))) for d in (-90, -60, -30, 0, 30, 60, 90))
# Left/right partner of each of the 15 joints (used by mirroring).
MIRROR = (0, 1, 5, 6, 7, 2, 3, 4, 8, 12, 13, 14, 9, 10, 11)
# Pairs drawn by stick figures (joint indices).
BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (10, 11),
         (8, 12), (12, 13), (13, 14))
# Rows of the encoded (15, 2, T) array: the 14 non-root joints then the root velocity.
ENCODED_ROWS = tuple(j for j in range(NUM_JOINTS) if j != ROOT)  # joint index of encoded row r < 14
# Channels of the normalised (30, T) array holding the two ankles (RightFoot, LeftFoot): 2*10, 2*13.
FOOT_CHANNELS = (20, 21, 26, 27)


# -- 3D -> 2D ---------------------------------------------------------------------------------------------
def _rodrigues(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` about the unit ``axis`` (Rodrigues' formula)."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.cos(angle) * np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * np.outer(axis, axis)


def body_frame(motion3d: np.ndarray, angles: tuple[float, float, float] | None = None) -> np.ndarray:
    """The body-facing projection basis of a clip, rows = (x, y, z) unit axes, (3, 3).

    h = time-mean of ((RightArm - LeftArm) + (RightUpLeg - LeftUpLeg)) / 2, normalised; z = (0, 0, 1);
    y = normalise(h x z); x = y x z. With ``angles`` the frame is rotated about its own x axis by
    ``angles[0]`` and about the vertical by ``angles[2]`` (``angles[1]`` is unused, as in the official code).
    """
    side = ((motion3d[2] - motion3d[5]) + (motion3d[9] - motion3d[12])) / 2  # (3, T)
    h = side.mean(axis=1)
    norm = np.linalg.norm(h)
    if not np.isfinite(norm) or norm < 1e-8:
        raise ValueError("cannot build the body frame: the left and right joints coincide on average")
    h = h / norm
    z = np.array([0.0, 0.0, 1.0])
    y = np.cross(h, z)
    y = y / np.linalg.norm(y)
    x = np.cross(y, z)
    frame = np.stack([x, y, z])  # (3, 3) rows are axes
    if angles is not None:
        rx = _rodrigues(frame[0], float(angles[0]))
        cz, sz = np.cos(angles[2]), np.sin(angles[2])
        rz = np.array([[cz, sz, 0.0], [-sz, cz, 0.0], [0.0, 0.0, 1.0]])
        frame = frame @ rx.T @ rz  # each row r -> r Rx^T Rz
    return frame


def project(motion3d: np.ndarray, angles: tuple[float, float, float] | None = None, *,
            unit: float = UNIT) -> np.ndarray:
    """Orthographic projection (15, 3, T) -> (15, 2, T) pixels, image y down.

    Scales by ``unit``, replaces the Neck by the midpoint of the shoulders and the Hips by the midpoint of
    the up-legs, then takes the world (x, z) axes (``angles is None``: the authors' fixed front view) or the
    1st and 3rd axes of :func:`body_frame` rotated by ``angles``; finally negates the vertical coordinate.
    """
    m = np.asarray(motion3d, dtype=np.float64) * unit  # (15, 3, T)
    if m.ndim != 3 or m.shape[:2] != (NUM_JOINTS, 3):
        raise ValueError(f"expected a (15, 3, T) motion, got {m.shape}")
    m[1] = (m[2] + m[5]) / 2
    m[8] = (m[9] + m[12]) / 2
    if angles is None:
        out = m[:, [0, 2], :]  # (15, 2, T) world x and z
    else:
        axes = body_frame(m, angles)[[0, 2]]  # (2, 3)
        out = np.einsum("ad,jdt->jat", axes, m)  # (15, 2, T)
    out[:, 1] = -out[:, 1]
    return out


def rotate3d(motion3d: np.ndarray, angles: tuple[float, float, float]) -> np.ndarray:
    """Rotate a (15, 3, T) motion about the world x, y then z axes by ``angles`` (rad) around the origin."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    return np.einsum("ab,jbt->jat", rot, motion3d)  # (15, 3, T)


# -- root-relative + velocity encoding --------------------------------------------------------------------
def encode(motion2d: np.ndarray) -> np.ndarray:
    """(15, 2, T) pixels -> (15, 2, T) encoded: joints minus the mid-hip (mid-hip row dropped) + root velocity."""
    m = np.asarray(motion2d, dtype=np.float64)
    root = m[ROOT]  # (2, T)
    rel = m - root[None]
    velocity = np.zeros_like(root)
    velocity[:, 1:] = root[:, 1:] - root[:, :-1]
    return np.concatenate([rel[list(ENCODED_ROWS)], velocity[None]], axis=0)  # (15, 2, T)


def decode(encoded: np.ndarray, start: tuple[float, float] = (IMG_SIZE / 2, IMG_SIZE / 2)) -> np.ndarray:
    """Inverse of :func:`encode`: re-insert a zero root row at index 8, integrate the velocity (cumulative
    sum, so the root of frame 0 sits at ``start``) and add the root to every joint. (15, 2, T) -> (15, 2, T).

    ``decode(encode(m), start=m[8, :, 0])`` returns ``m`` exactly (up to float rounding).
    """
    e = np.asarray(encoded, dtype=np.float64)
    rel = np.insert(e[:-1], ROOT, 0.0, axis=0)  # (15, 2, T)
    root = np.cumsum(e[-1], axis=-1) + np.asarray(start, dtype=np.float64)[:, None]  # (2, T)
    return rel + root[None]


def normalise(encoded: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(15, 2, T) encoded -> (30, T) normalised with (15, 2) statistics, joint-major channels."""
    e = np.asarray(encoded, dtype=np.float64)
    out = (e - mean[:, :, None]) / std[:, :, None]  # (15, 2, T)
    return out.reshape(2 * NUM_JOINTS, -1)  # (30, T): j0x, j0y, j1x, ...


def denormalise(normalised: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalise`: (30, T) -> (15, 2, T) encoded."""
    n = np.asarray(normalised, dtype=np.float64).reshape(NUM_JOINTS, 2, -1)  # (15, 2, T)
    return n * std[:, :, None] + mean[:, :, None]


def preprocess(motion2d: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(15, 2, T) pixels -> (30, T) network input: :func:`encode` then :func:`normalise`."""
    return normalise(encode(motion2d), mean, std)


def postprocess(normalised: np.ndarray, mean: np.ndarray, std: np.ndarray,
                start: tuple[float, float] = (IMG_SIZE / 2, IMG_SIZE / 2)) -> np.ndarray:
    """(30, T) network output -> (15, 2, T) pixels: :func:`denormalise` then :func:`decode`."""
    return decode(denormalise(normalised, mean, std), start)


# -- augmentation helpers ---------------------------------------------------------------------------------
def mirror(motion2d: np.ndarray) -> np.ndarray:
    """Horizontal mirror of a (15, 2, T) pixel motion: x -> -x and left/right joints swapped consistently.
    An involution: ``mirror(mirror(m)) == m``."""
    m = np.asarray(motion2d, dtype=np.float64)[list(MIRROR)].copy()  # (15, 2, T) partners swapped
    m[:, 0] = -m[:, 0]
    return m


def body_height(motion2d: np.ndarray) -> float:
    """Height of the skeleton in a (15, 2, T) motion: median over frames of head-neck + neck-hip + the
    mean of the two legs (hip-knee + knee-ankle) lengths, in the motion's units (2D, so view-dependent)."""
    m = np.asarray(motion2d, dtype=np.float64)

    def length(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(m[a] - m[b], axis=0)  # (T,)

    legs = (length(9, 10) + length(10, 11) + length(12, 13) + length(13, 14)) / 2
    return float(np.median(length(0, 1) + length(1, ROOT) + legs))


def scale_copy(source2d: np.ndarray, source_height: float, target_height: float) -> np.ndarray:
    """Baseline retargeting: the source motion scaled about its root by ``target_height / source_height``
    (root-relative joints and the root velocity alike). (15, 2, T) -> (15, 2, T), same start position."""
    ratio = target_height / max(source_height, 1e-9)
    e = encode(source2d) * ratio
    return decode(e, start=np.asarray(source2d, dtype=np.float64)[ROOT, :, 0])


def gaussian_smooth(x: np.ndarray, sigma: float, axis: int = -1, truncate: float = 4.0) -> np.ndarray:
    """1D Gaussian filter along ``axis`` with half-sample-symmetric edges (``scipy.ndimage.gaussian_filter1d``
    with its defaults ``mode='reflect'``, ``truncate=4``): radius ``int(truncate * sigma + 0.5)``."""
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    n = x.shape[-1]
    # reflect-pad; for very short inputs tile the symmetric extension until it covers the radius
    idx = np.arange(-radius, n + radius)
    period = 2 * n
    idx = np.mod(idx, period)
    idx = np.where(idx >= n, period - 1 - idx, idx)
    padded = x[..., idx]  # (..., n + 2r)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=-1)  # (..., n, 2r+1)
    out = windows @ kernel[::-1]
    return np.moveaxis(out, -1, axis)


def postprocess_torch(normalised, mean, std, start):
    """Batched torch version of :func:`postprocess`: (B, 30, T) normalised, (B, 15, 2) or (15, 2) statistics,
    (B, 2) root start -> (B, 15, 2, T) pixels (differentiable; same maths as the numpy path)."""
    import torch

    B, _, T = normalised.shape
    enc = normalised.reshape(B, NUM_JOINTS, 2, T) * std[..., None] + mean[..., None]  # (B, 15, 2, T)
    zeros = torch.zeros_like(enc[:, :1])
    rel = torch.cat([enc[:, :ROOT], zeros, enc[:, ROOT:-1]], dim=1)  # (B, 15, 2, T) root row re-inserted
    root = torch.cumsum(enc[:, -1], dim=-1) + start[..., None]  # (B, 2, T)
    return rel + root[:, None]
