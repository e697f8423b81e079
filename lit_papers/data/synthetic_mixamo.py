"""Synthetic stand-in for the authors' Mixamo data (the real animations may not be redistributed).

Writes exactly the layout of the official preprocessing (``shared/data/MANIFEST.md`` section 5)::

    <out>/train/<Character>/<Animation>/<Animation>.npy     float32 (15, 3, T), global 3D joints, z up
    <out>/train/<Character>/<Animation>/motions/<k>.npy     windows (15, 3, 64), hop 32, k = 1 .. T//32 - 1
    <out>/test/<Character>/<Animation>/...                  windows (15, 3, 120), hop 60
    <out>/meanpose.npy, stdpose.npy                         (15, 2) front-view statistics of the train windows
    <out>/meanpose_with_view.npy, stdpose_with_view.npy     (15, 2) over the 7 view angles
    <out>/synthetic.json                                    the generator's settings (provenance)

Characters differ in size and proportions (tall, short, long-armed, stocky, ...); every character performs
every animation of its split (the authors' paired-data assumption: same animation names and window counts).
Animations are procedural, driven by joint angles through forward kinematics on each character's skeleton:
walk, run, jump, wave, kick, turn (walking on an arc: heading changes, root translates) and squat, each in
several parameter variants. Held-out data: the test split has other characters *and* other parameter
variants than the train split. Root speed scales with leg length, so feet do not slide on any character.

15 joints in Mixamo order (:data:`lit_papers.ops.motion2d.JOINTS`), Blender-like units (head to hips about
0.6, as in the authors' data), characters face -y so that the authors' front view (world x, z) sees them
from the front with their right side at negative x.

Command line: ``python -m lit_papers.data.synthetic_mixamo --out DIR [--seed 0] [--small]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lit_papers.ops import motion2d as M

FPS = 30.0
GROUND = 0.08  # ankle height above the floor when the foot is planted


@dataclass(frozen=True)
class Character:
    """Bone lengths as factors of a base skeleton (head-to-hips 0.61, hips-to-ankle 0.62 + 0.08)."""

    name: str
    scale: float = 1.0      # whole body
    torso: float = 1.0      # hips -> shoulders/neck/head
    arm: float = 1.0        # upper arm and forearm
    leg: float = 1.0        # thigh and shin
    width: float = 1.0      # shoulder and hip half-widths

    def bones(self) -> dict[str, float]:
        s = self.scale
        return {
            "hip_w": 0.09 * s * self.width, "shoulder_w": 0.16 * s * self.width,
            "shoulder_h": 0.47 * s * self.torso, "neck_h": 0.52 * s * self.torso, "head_h": 0.61 * s * self.torso,
            "upper_arm": 0.26 * s * self.arm, "forearm": 0.25 * s * self.arm,
            "thigh": 0.31 * s * self.leg, "shin": 0.31 * s * self.leg,
        }


TRAIN_CHARACTERS = (
    Character("Average"),
    Character("Tall", scale=1.15),
    Character("Short", scale=0.85),
    Character("LongArms", arm=1.3),
    Character("Stocky", leg=0.8, width=1.3, scale=0.95),
    Character("LongLegs", leg=1.25, torso=0.9),
    Character("Child", scale=0.7, torso=1.1, leg=0.85),
    Character("Broad", width=1.4, torso=1.1, arm=1.1),
)
TEST_CHARACTERS = (
    Character("Giant", scale=1.25, width=1.15),
    Character("Tiny", scale=0.75, leg=0.9),
    Character("Lanky", leg=1.2, arm=1.2, width=0.85),
    Character("Squat", leg=0.8, torso=0.95, arm=0.9, width=1.25),
)


# -- kinematics ---------------------------------------------------------------------------------------------
def _limb(pitch: np.ndarray, abduct: np.ndarray, side: float) -> np.ndarray:
    """Unit limb direction (T, 3) in (right, forward, up) body coordinates; pitch swings forward, abduct
    lifts sideways (0 = hanging down). side = +1 for the right limb, -1 for the left."""
    ca = np.cos(abduct)
    return np.stack([side * np.sin(abduct), ca * np.sin(pitch), -ca * np.cos(pitch)], axis=-1)


def forward_kinematics(char: Character, angles: dict[str, np.ndarray], heading: np.ndarray,
                       root_xy: np.ndarray, lift: np.ndarray) -> np.ndarray:
    """Joint angles (each (T,), radians) -> global joints (15, 3, T).

    Angle keys: lean (torso pitch forward), {r,l}_hip, {r,l}_hip_ab, {r,l}_knee (flexion), {r,l}_sho,
    {r,l}_sho_ab, {r,l}_elb_pitch, {r,l}_elb_ab (forearm absolute pitch/abduction). ``heading`` (T,) turns
    the body about z (0 = facing -y), ``root_xy`` (T, 2) is the horizontal root path and ``lift`` (T,) the
    height of the lower ankle above the floor (jumps).
    """
    b = char.bones()
    T = len(heading)
    zero = np.zeros(T)
    joints = np.zeros((15, T, 3))  # body coordinates (right, forward, up) relative to the hips centre
    lean = angles.get("lean", zero)
    up = np.stack([zero, np.sin(lean), np.cos(lean)], axis=-1)  # (T, 3) spine direction
    right = np.array([1.0, 0.0, 0.0])
    joints[0] = b["head_h"] * up
    joints[1] = b["neck_h"] * up
    for side, name, sho in ((1.0, "r", 2), (-1.0, "l", 5)):
        joints[sho] = b["shoulder_h"] * up + side * b["shoulder_w"] * right
        upper = _limb(angles.get(f"{name}_sho", zero), angles.get(f"{name}_sho_ab", zero), side)
        fore = _limb(angles.get(f"{name}_elb_pitch", angles.get(f"{name}_sho", zero)),
                     angles.get(f"{name}_elb_ab", angles.get(f"{name}_sho_ab", zero)), side)
        joints[sho + 1] = joints[sho] + b["upper_arm"] * upper
        joints[sho + 2] = joints[sho + 1] + b["forearm"] * fore
    roll = angles.get("roll", zero)  # pelvis roll about the forward axis: the right hip rises for roll > 0
    for side, name, hip in ((1.0, "r", 9), (-1.0, "l", 12)):
        joints[hip] = side * b["hip_w"] * np.stack([np.cos(roll), zero, np.sin(roll)], axis=-1)
        pitch = angles.get(f"{name}_hip", zero)
        ab = angles.get(f"{name}_hip_ab", zero)
        joints[hip + 1] = joints[hip] + b["thigh"] * _limb(pitch, ab, side)
        joints[hip + 2] = joints[hip + 1] + b["shin"] * _limb(pitch - angles.get(f"{name}_knee", zero), ab, side)
    joints[8] = (joints[9] + joints[12]) / 2
    # the lower ankle touches the floor (plus jump lift)
    height = GROUND + lift - np.minimum(joints[11, :, 2], joints[14, :, 2])  # (T,)
    # body (right, forward, up) -> world: facing -y, right = -x, rotated by heading about z
    c, s = np.cos(heading), np.sin(heading)
    x_body, y_body, z_body = joints[..., 0], joints[..., 1], joints[..., 2]  # (15, T)
    wx0, wy0 = -x_body, -y_body
    world = np.stack([c * wx0 - s * wy0 + root_xy[:, 0], s * wx0 + c * wy0 + root_xy[:, 1], z_body + height], axis=1)
    return world.astype(np.float64)  # (15, 3, T)


def _path(heading: np.ndarray, speed: np.ndarray | float) -> np.ndarray:
    """Integrate a forward speed (units/s) along the heading (facing -y at heading 0) -> (T, 2) root path."""
    step = np.broadcast_to(np.asarray(speed, dtype=np.float64), heading.shape) / FPS
    dx, dy = np.sin(heading) * step, -np.cos(heading) * step
    return np.stack([np.cumsum(dx) - dx[0], np.cumsum(dy) - dy[0]], axis=-1)


# -- procedural motions: (char, t, params) -> (angles, heading, speed, lift) ----------------------------------
def _gait(t: np.ndarray, p: dict, run: bool = False) -> dict[str, np.ndarray]:
    phase = 2 * np.pi * p["freq"] * t + p.get("phase", 0.0)
    hip = np.deg2rad(p["stride"])
    knee = np.deg2rad(p["knee"])
    arm = np.deg2rad(p["arm"])
    a = {
        "r_hip": hip * np.sin(phase), "l_hip": -hip * np.sin(phase),
        "r_knee": knee * np.clip(np.cos(phase), 0, None) ** 1.5 + 0.05,
        "l_knee": knee * np.clip(-np.cos(phase), 0, None) ** 1.5 + 0.05,
        "r_sho": -arm * np.sin(phase), "l_sho": arm * np.sin(phase),
        "r_sho_ab": np.full_like(t, 0.12), "l_sho_ab": np.full_like(t, 0.12),
        "lean": np.full_like(t, np.deg2rad(p.get("lean", 3.0))),
        "roll": np.deg2rad(6.0) * np.cos(phase),  # the pelvis drops on the swing side
    }
    elbow = np.deg2rad(80.0 if run else 15.0)
    a["r_elb_pitch"] = a["r_sho"] + elbow
    a["l_elb_pitch"] = a["l_sho"] + elbow
    return a


def walk(char: Character, t: np.ndarray, p: dict):
    a = _gait(t, p)
    # stride length ~ 2 * leg * sin(hip amplitude) per half cycle
    speed = 4 * (char.bones()["thigh"] + char.bones()["shin"]) * np.sin(np.deg2rad(p["stride"])) * p["freq"] * 0.9
    heading = np.full_like(t, np.deg2rad(p.get("heading", 0.0)))
    return a, heading, speed, np.zeros_like(t)


def run(char: Character, t: np.ndarray, p: dict):
    a = _gait(t, p, run=True)
    speed = 4 * (char.bones()["thigh"] + char.bones()["shin"]) * np.sin(np.deg2rad(p["stride"])) * p["freq"]
    heading = np.full_like(t, np.deg2rad(p.get("heading", 0.0)))
    lift = 0.04 * np.abs(np.sin(2 * np.pi * p["freq"] * t)) * (char.bones()["thigh"] / 0.31)
    return a, heading, speed, lift


def turn(char: Character, t: np.ndarray, p: dict):
    a, _, speed, lift = walk(char, t, p)
    heading = np.deg2rad(p.get("heading", 0.0) + p["rate"] * (t - t.mean()))
    return a, heading, speed, lift


def jump(char: Character, t: np.ndarray, p: dict):
    period = p["period"]
    u = (t / period) % 1.0  # 0..1 within one jump cycle
    crouch = np.exp(-(((u - 0.2) / 0.09) ** 2)) + np.exp(-(((u - 0.95) / 0.06) ** 2)) * 0.7  # before/after
    air = np.where((u > 0.35) & (u < 0.85), np.sin(np.pi * (u - 0.35) / 0.5), 0.0)
    knee = np.deg2rad(p["crouch"]) * crouch
    arms = np.deg2rad(p["arms"])
    swing = arms * (air - 0.5 * crouch)
    a = {
        "r_hip": knee * 0.6 + 0.15 * air, "l_hip": knee * 0.6 + 0.15 * air, "r_knee": knee + 0.3 * air,
        "l_knee": knee + 0.3 * air, "lean": 0.5 * knee * 0.6 + 0.03, "roll": 0.04 * np.sin(2 * np.pi * u),
        "r_sho": swing, "l_sho": swing, "r_sho_ab": np.full_like(t, 0.15), "l_sho_ab": np.full_like(t, 0.15),
    }
    a["r_elb_pitch"] = a["r_sho"] + 0.3
    a["l_elb_pitch"] = a["l_sho"] + 0.3
    legs = (char.bones()["thigh"] + char.bones()["shin"]) / 0.62
    lift = p["height"] * air * legs
    heading = np.full_like(t, np.deg2rad(p.get("heading", 0.0)))
    speed = p.get("forward", 0.0) * legs * (air > 0)
    return a, heading, speed, lift


def wave(char: Character, t: np.ndarray, p: dict):
    side = p["side"]  # "r" or "l"
    other = "l" if side == "r" else "r"
    osc = np.deg2rad(p["amp"]) * np.sin(2 * np.pi * p["freq"] * t)
    a = {
        f"{side}_sho_ab": np.full_like(t, np.deg2rad(p["raise"])), f"{side}_sho": np.full_like(t, 0.2),
        f"{side}_elb_ab": np.deg2rad(p["raise"]) + np.deg2rad(40) + osc, f"{side}_elb_pitch": np.full_like(t, 0.3),
        f"{other}_sho_ab": np.full_like(t, 0.1), f"{other}_sho": 0.05 * np.sin(2 * np.pi * 0.5 * t),
        "lean": 0.03 * np.sin(2 * np.pi * 0.4 * t), "roll": 0.06 * np.sin(2 * np.pi * 0.4 * t),
        "r_hip_ab": np.full_like(t, 0.05), "l_hip_ab": np.full_like(t, 0.05),
        "r_knee": np.full_like(t, 0.05), "l_knee": np.full_like(t, 0.05),
    }
    heading = np.full_like(t, np.deg2rad(p.get("heading", 0.0)))
    return a, heading, 0.0, np.zeros_like(t)


def kick(char: Character, t: np.ndarray, p: dict):
    side = p["side"]
    other = "l" if side == "r" else "r"
    u = (t / p["period"]) % 1.0
    up = np.sin(np.pi * np.clip((u - 0.2) / 0.5, 0, 1)) ** 2  # leg raise 0..1
    extend = np.clip((u - 0.3) / 0.2, 0, 1) * (u < 0.6)  # knee straightens at the top
    hip = np.deg2rad(p["height"]) * up
    a = {
        f"{side}_hip": hip, f"{side}_knee": np.deg2rad(70) * up * (1 - extend) + 0.05,
        f"{other}_knee": np.full_like(t, 0.08), "lean": -0.15 * up, "roll": (0.15 if side == "r" else -0.15) * up,
        "r_sho_ab": 0.3 + 0.5 * up, "l_sho_ab": 0.3 + 0.5 * up,
        f"{side}_sho": -0.4 * up, f"{other}_sho": 0.3 * up,
    }
    heading = np.full_like(t, np.deg2rad(p.get("heading", 0.0)))
    return a, heading, 0.0, np.zeros_like(t)


def squat(char: Character, t: np.ndarray, p: dict):
    d = 0.5 - 0.5 * np.cos(2 * np.pi * t / p["period"])
    knee = np.deg2rad(p["depth"]) * d
    a = {
        "r_hip": 0.7 * knee, "l_hip": 0.7 * knee, "r_knee": knee + 0.05, "l_knee": knee + 0.05,
        "lean": 0.45 * knee, "roll": 0.05 * np.sin(np.pi * t / p["period"]), "r_hip_ab": np.full_like(t, 0.12), "l_hip_ab": np.full_like(t, 0.12),
        "r_sho": np.deg2rad(p["arms"]) * d, "l_sho": np.deg2rad(p["arms"]) * d,
    }
    heading = np.full_like(t, np.deg2rad(p.get("heading", 0.0)))
    return a, heading, 0.0, np.zeros_like(t)


MOTIONS: dict[str, Callable] = {"walk": walk, "run": run, "turn": turn, "jump": jump, "wave": wave, "kick": kick,
                                "squat": squat}


def _variants(kind: str, rng: np.random.Generator, held_out: bool) -> dict:
    """Parameters of one animation variant. Train and test draw from disjoint sub-ranges (held-out motions)."""
    def pick(lo: float, hi: float) -> float:
        # train: the outer 2/3 of the range, test: the middle third, so test motions are new but in range
        third = (hi - lo) / 3
        if held_out:
            return float(rng.uniform(lo + third, hi - third))
        return float(rng.choice([rng.uniform(lo, lo + third), rng.uniform(hi - third, hi)]))

    heading = pick(-15, 15)
    if kind in ("walk", "turn"):
        p = {"freq": pick(0.75, 1.15), "stride": pick(18, 34), "knee": pick(30, 65), "arm": pick(10, 40),
             "heading": heading, "phase": float(rng.uniform(0, 2 * np.pi))}
        if kind == "turn":
            p["rate"] = float(rng.choice([-1, 1])) * pick(20, 35)
        return p
    if kind == "run":
        return {"freq": pick(1.3, 1.7), "stride": pick(30, 45), "knee": pick(70, 100), "arm": pick(30, 50),
                "lean": pick(6, 14), "heading": heading, "phase": float(rng.uniform(0, 2 * np.pi))}
    if kind == "jump":
        return {"period": pick(0.9, 1.5), "crouch": pick(40, 80), "arms": pick(40, 120), "height": pick(0.1, 0.35),
                "forward": pick(0.0, 0.8), "heading": heading}
    if kind == "wave":
        return {"side": str(rng.choice(["r", "l"])), "freq": pick(1.2, 2.4), "amp": pick(15, 35),
                "raise": pick(60, 110), "heading": heading}
    if kind == "kick":
        return {"side": str(rng.choice(["r", "l"])), "period": pick(1.0, 1.8), "height": pick(50, 95),
                "heading": heading}
    if kind == "squat":
        return {"period": pick(1.5, 2.5), "depth": pick(50, 100), "arms": pick(30, 90), "heading": heading}
    raise ValueError(f"unknown motion kind {kind!r}")


def animate(char: Character, kind: str, params: dict, frames: int) -> np.ndarray:
    """One animation of one character: (15, 3, frames) float64 global joints."""
    t = np.arange(frames) / FPS
    angles, heading, speed, lift = MOTIONS[kind](char, t, params)
    return forward_kinematics(char, angles, heading, _path(heading, speed), lift)


# -- the authors' windowing and statistics ---------------------------------------------------------------------
def windows(motion: np.ndarray, length: int) -> list[np.ndarray]:
    """The authors' preprocessing: windows of ``length`` with hop ``length // 2``, k = 1 .. T // hop - 1."""
    hop = length // 2
    count = motion.shape[-1] // hop - 1
    return [motion[..., k * hop: k * hop + length] for k in range(count)]


def statistics(motions3d: list[np.ndarray], with_view: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std (15, 2) of the projected, root-relative (+ velocity) windows, over all frames; std zeros -> 1e-9.
    Front view (world x, z) or, ``with_view``, the 7 view angles."""
    views = M.VIEW_ANGLES if with_view else (None,)
    enc = [M.encode(M.project(m, v)) for m in motions3d for v in views]  # each (15, 2, T)
    allf = np.concatenate(enc, axis=-1)  # (15, 2, sum T)
    mean, std = allf.mean(axis=-1), allf.std(axis=-1)
    std[std == 0] = 1e-9
    return mean, std


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def generate(out: str | os.PathLike, *, seed: int = 0, variants: int = 4, test_variants: int = 2,
             train_frames: int = 160, test_frames: int = 240, kinds: tuple[str, ...] = tuple(MOTIONS),
             train_characters: int | None = None, test_characters: int | None = None,
             overwrite: bool = False) -> Path:
    """Write a synthetic ``mixamo_data`` folder at ``out`` (atomically: built beside it, then renamed).

    ``variants``/``test_variants``: parameter variants per motion kind in each split; ``train_frames`` /
    ``test_frames``: animation lengths (>= 64 / 120); ``*_characters``: use only the first N characters.
    Returns ``out``. An existing complete folder is kept unless ``overwrite``.
    """
    out = Path(out)
    if (out / "synthetic.json").is_file() and not overwrite:
        return out
    if train_frames < 64 or test_frames < 120:
        raise ValueError("animations must have at least 64 (train) / 120 (test) frames")
    rng = np.random.default_rng(seed)
    splits = {"train": (TRAIN_CHARACTERS[:train_characters], variants, train_frames, 64, False),
              "test": (TEST_CHARACTERS[:test_characters], test_variants, test_frames, 120, True)}
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    meta: dict = {"generator": __name__, "seed": seed, "fps": FPS, "splits": {}}
    train_windows: list[np.ndarray] = []
    for split, (chars, n_var, frames, length, held_out) in splits.items():
        anims = []
        for kind in kinds:
            for i in range(n_var):
                anims.append((f"{kind}_{'t' if held_out else ''}{i:02d}", kind, _variants(kind, rng, held_out)))
        meta["splits"][split] = {"characters": [asdict(c) for c in chars], "frames": frames, "window": length,
                                 "animations": {name: {"kind": kind, **p} for name, kind, p in anims}}
        for char in chars:
            for name, kind, p in anims:
                motion = animate(char, kind, p, frames)
                folder = tmp / split / char.name / name
                _save(folder / f"{name}.npy", motion.astype(np.float32))
                for k, w in enumerate(windows(motion, length), start=1):
                    _save(folder / "motions" / f"{k}.npy", w.astype(np.float32))
                    if split == "train":
                        train_windows.append(w)
    for with_view, suffix in ((False, ""), (True, "_with_view")):
        mean, std = statistics(train_windows, with_view)
        np.save(tmp / f"meanpose{suffix}.npy", mean)
        np.save(tmp / f"stdpose{suffix}.npy", std)
    (tmp / "synthetic.json").write_text(json.dumps(meta, indent=1))
    if out.exists():
        if not overwrite and (out / "synthetic.json").is_file():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return out
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out)
    except OSError:  # lost a race against another writer: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "synthetic.json").is_file():
            raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write (the mixamo_data root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", type=int, default=4, help="train variants per motion kind")
    parser.add_argument("--test-variants", type=int, default=2)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    path = generate(args.out, seed=args.seed, variants=args.variants, test_variants=args.test_variants,
                    overwrite=args.overwrite)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
