"""Mixamo-derived 2D skeleton motion (Aberman et al. 2019), in the authors' on-disk layout.

``<data_dir>/{train,test}/<Character>/<Animation>/motions/<k>.npy`` windows (15, 3, L) and/or the whole
animation ``<Animation>/<Animation>.npy`` (15, 3, T); the four statistics files at ``<data_dir>``'s root
(see ``shared/data/MANIFEST.md`` section 5 and :mod:`lit_papers.ops.motion2d` for projection and encoding).
Real Mixamo exports load unchanged; :mod:`lit_papers.data.synthetic_mixamo` writes the same layout.

Training items (:class:`MixamoPairs`) are the paired/cross samples the losses need: two motions x two
characters (x two view angles for the view/full models), every combination projected and normalised, so the
network can swap codes and be compared with the real third sample. Evaluation items
(:class:`MixamoRetargetEval`) give a source clip, a reference clip of the target character (another motion),
the ground truth (source motion performed by the target character) and the scaled-copy baseline.
Real 2D input: :func:`load_openpose` reads an OpenPose BODY_25 JSON folder through the authors' inference path.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lit_papers.data.base import ShardedDataModule
from lit_papers.data.download import DatasetError, DatasetMissingError
from lit_papers.data.root import cache_root, family_dir
from lit_papers.ops import motion2d as M

log = logging.getLogger(__name__)

STATS_FILES = {False: ("meanpose.npy", "stdpose.npy"), True: ("meanpose_with_view.npy", "stdpose_with_view.npy")}


# -- reading ------------------------------------------------------------------------------------------------
def load_stats(folder: str | os.PathLike, with_view: bool) -> tuple[np.ndarray, np.ndarray]:
    """The (15, 2) mean and std: ``meanpose[_with_view].npy`` / ``stdpose[_with_view].npy`` in ``folder``."""
    out = []
    for name in STATS_FILES[with_view]:
        path = Path(folder) / name
        if not path.is_file():
            raise DatasetMissingError(f"{path}: missing statistics file; copy the four mean/std files of the "
                                      "authors' mixamo_data there or generate synthetic data (synthetic=true)")
        try:
            a = np.load(path).astype(np.float64)
        except Exception as exc:
            raise DatasetError(f"{path}: unreadable statistics file ({type(exc).__name__}: {exc})") from exc
        if a.shape != (15, 2) or not np.all(np.isfinite(a)):
            raise DatasetError(f"{path}: expected finite (15, 2) statistics, got {a.shape}")
        out.append(a)
    mean, std = out
    if np.any(std <= 0):
        raise DatasetError(f"{Path(folder) / STATS_FILES[with_view][1]}: std must be positive")
    return mean, std


def _load_motion(path: Path) -> np.ndarray:
    try:
        a = np.load(path)
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable motion array ({type(exc).__name__}: {exc}); re-export or delete it") from exc
    if a.ndim != 3 or a.shape[:2] != (15, 3):
        raise DatasetError(f"{path}: expected a (15, 3, T) joint array (15 joints x xyz x frames), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DatasetError(f"{path}: contains NaN/inf joint positions")
    return a.astype(np.float64)


def scan_split(folder: str | os.PathLike, length: int) -> tuple[list[str], list[tuple[str, int]], dict]:
    """Read one split folder -> (characters, motion ids [(animation, k)], arrays).

    ``arrays[(character, animation)]`` is ``("full", (15, 3, T))`` when ``<Animation>.npy`` exists (windows
    are cut on the fly, which allows temporal clipping), else ``("windows", {k: (15, 3, L)})`` from
    ``motions/<k>.npy``. Motion ids are the windows k = 1 .. T // (L/2) - 1 of the first character's
    animations (the authors' paired-data assumption); ids missing for another character are dropped with a
    logged count. Raises :class:`DatasetError` naming the folder when nothing usable is found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetMissingError(f"{folder}: missing split folder (expected <split>/<Character>/<Animation>/...)")
    hop = length // 2
    characters = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not characters:
        raise DatasetError(f"{folder}: no character folders")
    arrays: dict = {}
    ids_per_char: dict[str, set] = {}
    for char in characters:
        ids: set = set()
        for anim_dir in sorted(p for p in (folder / char).iterdir() if p.is_dir()):
            anim = anim_dir.name
            full = anim_dir / f"{anim}.npy"
            if full.is_file():
                a = _load_motion(full)
                arrays[(char, anim)] = ("full", a)
                count = a.shape[-1] // hop - 1
            else:
                files = sorted((anim_dir / "motions").glob("*.npy"), key=lambda p: (len(p.stem), p.stem))
                wins = {}
                for f in files:
                    if not f.stem.isdigit():
                        raise DatasetError(f"{f}: window files must be named <k>.npy with an integer k")
                    w = _load_motion(f)
                    if w.shape[-1] != length:
                        raise DatasetError(f"{f}: window has {w.shape[-1]} frames, expected {length}")
                    wins[int(f.stem)] = w
                arrays[(char, anim)] = ("windows", wins)
                count = 0
                ids.update((anim, k) for k in wins)
            ids.update((anim, k) for k in range(1, count + 1))
        ids_per_char[char] = ids
    first = ids_per_char[characters[0]]
    common = set.intersection(*ids_per_char.values())
    if not common:
        raise DatasetError(f"{folder}: no motion (animation, window) is shared by all characters; every "
                           "character must perform the same animations (windows of {length} frames)")
    if len(common) < len(first):
        log.warning("%s: %d of %d motion windows are missing for some character and were skipped",
                    folder, len(first) - len(common), len(first))
    motions = sorted(common, key=lambda m: (m[0], m[1]))
    return characters, motions, arrays


def _window(arrays: dict, char: str, anim: str, k: int, length: int, offset: int = 0) -> np.ndarray:
    kind, data = arrays[(char, anim)]
    if kind == "windows":
        return data[k]
    start = (k - 1) * (length // 2) + offset
    start = int(np.clip(start, 0, data.shape[-1] - length))
    return data[..., start:start + length]


# -- datasets -----------------------------------------------------------------------------------------------
class MixamoPairs(Dataset):
    """Paired/cross training items.

    Index ``i`` fixes motion ``i // C`` and character ``i % C`` (length = motions x characters, as the
    authors'); a second motion, character (and view) are drawn at random. Returns ``{"x": (K, 30, L),
    "y": (K, 30, L)}`` float32 where K = 2**F combinations ordered as ``itertools.product((0, 1), repeat=F)``
    over the factors (motion, body) or (motion, body, view); combination (a, b[, c]) is motion a performed by
    character b [seen from view c]. ``x`` = inputs (joint dropping applied), ``y`` = clean targets.

    Augmentation (per item, reproducible from the sampler's seed): scale per character ~ U(scale_range)
    (the authors tie the scale to the character), 3D rotation per motion (``rotate_deg``, the skeleton
    model's), temporal clipping (windows start up to +-hop/2 frames off their grid position, same offset for
    every character performing that motion; needs whole animations), mirroring with probability
    ``flip_prob`` (left/right swapped consistently in every combination) and joint dropping (each non-root
    joint of each input set to the mean pose, i.e. 0 after normalisation, with probability ``drop_prob``).
    """

    def __init__(self, characters: list[str], motions: list[tuple[str, int]], arrays: dict, *,
                 mean: np.ndarray, std: np.ndarray, length: int, views: bool,
                 scale_range: tuple[float, float] | None, rotate_deg: tuple[float, float, float] | None,
                 clip: bool, flip_prob: float, drop_prob: float) -> None:
        if len(characters) < 2 or len(motions) < 2:
            raise DatasetError(f"paired training needs >= 2 characters and >= 2 motions, got {len(characters)} "
                               f"and {len(motions)}")
        self.characters, self.motions, self.arrays = characters, motions, arrays
        self.mean, self.std, self.length, self.views = mean, std, length, views
        self.scale_range, self.rotate_deg = scale_range, rotate_deg
        self.clip, self.flip_prob, self.drop_prob = clip, flip_prob, drop_prob
        self.factors = ("motion", "body", "view") if views else ("motion", "body")
        self.combos = list(itertools.product((0, 1), repeat=len(self.factors)))

    def __len__(self) -> int:
        return len(self.motions) * len(self.characters)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, item)
        rng = np.random.default_rng(seed)
        C, N = len(self.characters), len(self.motions)
        m = [index // C, int((index // C + rng.integers(1, N)) % N)]
        c = [index % C, int((index % C + rng.integers(1, C)) % C)]
        v = list(rng.choice(len(M.VIEW_ANGLES), size=2, replace=False)) if self.views else [None, None]
        scale = [rng.uniform(*self.scale_range) if self.scale_range else 1.0 for _ in range(2)]
        rot = [tuple(np.deg2rad(rng.uniform(-1, 1, 3) * np.asarray(self.rotate_deg))) if self.rotate_deg else None
               for _ in range(2)]
        hop = self.length // 2
        offset = [int(rng.integers(-(hop // 2), hop // 2 + 1)) if self.clip else 0 for _ in range(2)]
        flip = rng.random() < self.flip_prob
        xs, ys = [], []
        for combo in self.combos:
            a, b = combo[0], combo[1]
            view = v[combo[2]] if self.views else None
            anim, k = self.motions[m[a]]
            motion3d = _window(self.arrays, self.characters[c[b]], anim, k, self.length, offset[a]) * scale[b]
            if rot[a] is not None:
                motion3d = M.rotate3d(motion3d, rot[a])
            m2d = M.project(motion3d, None if view is None else M.VIEW_ANGLES[view])
            if flip:
                m2d = M.mirror(m2d)
            y = M.preprocess(m2d, self.mean, self.std)  # (30, L)
            x = y.copy()
            if self.drop_prob > 0:
                dropped = np.flatnonzero(rng.random(14) < self.drop_prob)
                for r in dropped:  # encoded rows 0..13 are the non-root joints
                    x[2 * r:2 * r + 2] = 0.0
            xs.append(x)
            ys.append(y)
        return {"x": torch.from_numpy(np.stack(xs)).float(), "y": torch.from_numpy(np.stack(ys)).float()}


class MixamoRetargetEval(Dataset):
    """Deterministic retargeting evaluation on one split: every (motion m, source character a, target
    character b != a). The view (one of the 7, or the front view without views) depends on (m, a) and is
    the same for source and target. ``ref`` is the target character performing another animation (its
    static codes are what the network sees of the target). Returns float32 tensors ``src``, ``ref``, ``gt``,
    ``copy`` (30, L) normalised (``copy`` = :func:`motion2d.scale_copy` of the source to the height measured on
    ``ref``), ``gt_px`` (15, 2, L) pixels, ``mean``/``std`` (15, 2), and int64 ``motion``, ``animation``,
    ``char``, ``target``, ``view``. With views, also ``ref_view``/``gt_view`` (30, L) and ``gt_view_px``: the
    target clip and the ground truth seen from a *different* view (retargeting skeleton and view at once).
    """

    def __init__(self, characters: list[str], motions: list[tuple[str, int]], arrays: dict, *,
                 mean: np.ndarray, std: np.ndarray, length: int, views: bool, seed: int = 0,
                 max_items: int | None = None) -> None:
        animations = sorted({a for a, _ in motions})
        if len(characters) < 2 or len(animations) < 2:
            raise DatasetError(f"evaluation needs >= 2 characters and >= 2 animations, got {len(characters)} and "
                               f"{len(animations)}")
        self.characters, self.motions, self.arrays = characters, motions, arrays
        self.mean, self.std, self.length, self.views = mean, std, length, views
        self.animation_index = {a: i for i, a in enumerate(animations)}
        C = len(characters)
        rng = np.random.default_rng(seed)
        items = [(m, a, b) for m in range(len(motions)) for a in range(C) for b in range(C) if a != b]
        self.view_of = rng.integers(0, len(M.VIEW_ANGLES), size=(len(motions), C))
        self.ref_of = {}
        for m, a, b in items:  # reference: a window of another animation, fixed per item
            others = [i for i, (anim, _) in enumerate(motions) if anim != motions[m][0]]
            self.ref_of[(m, a, b)] = int(others[(m * 31 + a * 7 + b * 3) % len(others)])
        if max_items is not None and max_items < len(items):
            keep = np.sort(rng.choice(len(items), size=max_items, replace=False))
            items = [items[i] for i in keep]
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def project(self, m: int, char: int, view: int) -> np.ndarray:
        anim, k = self.motions[m]
        angles = M.VIEW_ANGLES[view] if self.views else None
        return M.project(_window(self.arrays, self.characters[char], anim, k, self.length), angles)

    def __getitem__(self, item):
        index = item[0] if isinstance(item, tuple) else item
        m, a, b = self.items[index]
        view = int(self.view_of[m, a])
        src, gt = self.project(m, a, view), self.project(m, b, view)
        ref = self.project(self.ref_of[(m, a, b)], b, view)
        copy = M.scale_copy(src, M.body_height(src), M.body_height(ref))

        def norm(x):
            return torch.from_numpy(M.preprocess(x, self.mean, self.std)).float()

        out = {}
        if self.views:  # view change too: target clip and ground truth seen from another of the 7 views
            view2 = (view + 1 + (m + a + b) % (len(M.VIEW_ANGLES) - 1)) % len(M.VIEW_ANGLES)
            gt2 = self.project(m, b, view2)
            out = {"ref_view": norm(self.project(self.ref_of[(m, a, b)], b, view2)), "gt_view": norm(gt2),
                   "gt_view_px": torch.from_numpy(gt2).float()}
        return {**out, "src": norm(src), "ref": norm(ref), "gt": norm(gt), "copy": norm(copy),
                "gt_px": torch.from_numpy(gt).float(),
                "mean": torch.from_numpy(self.mean).float(), "std": torch.from_numpy(self.std).float(),
                "motion": m, "animation": self.animation_index[self.motions[m][0]], "char": a, "target": b,
                "view": view if self.views else -1}


# -- OpenPose input -----------------------------------------------------------------------------------------
def load_openpose(folder: str | os.PathLike, *, video_height: float = 720.0, max_length: int | None = 120,
                  multiple: int = 8, smooth_sigma: float | None = 2.0, person: int | None = None) -> np.ndarray:
    """An OpenPose BODY_25 JSON folder (one ``*_keypoints.json`` per frame, sorted = time) -> (15, 2, T) pixels
    at the network's 512-px scale, by the authors' inference path: the first 15 joints' (x, y) (BODY_25 0-14
    equal the Mixamo order), zero (undetected) entries filled from the previous frame, then from the next
    frame; T cut to ``max_length`` and down to a multiple of ``multiple``; Gaussian smoothing over time
    (sigma 2 frames); scaled by 512 / ``video_height``.

    Bad input: a frame with no person, or with several people when ``person`` is None, raises
    :class:`DatasetError` naming the file (pass ``person=0`` to take the first detection as the official code
    does); a joint missing in every frame raises; fewer than ``multiple`` frames raises.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetMissingError(f"{folder}: not a folder of OpenPose JSON files")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DatasetError(f"{folder}: no *.json files (expected OpenPose *_keypoints.json, one per frame)")
    frames = []
    for f in files:
        try:
            data = json.loads(f.read_text())
            people = data["people"]
        except Exception as exc:
            raise DatasetError(f"{f}: not an OpenPose keypoint JSON ({type(exc).__name__}: {exc})") from exc
        if len(people) == 0:
            raise DatasetError(f"{f}: no person detected in this frame; trim the clip or re-run OpenPose")
        if len(people) > 1 and person is None:
            raise DatasetError(f"{f}: {len(people)} people detected; pass person=<index> to choose one "
                               "(the official code takes the first)")
        kp = np.asarray(people[person or 0].get("pose_keypoints_2d", []), dtype=np.float64)
        if kp.size != 75:
            raise DatasetError(f"{f}: pose_keypoints_2d has {kp.size} numbers, expected 75 (BODY_25 x (x, y, c))")
        frames.append(kp.reshape(25, 3)[:15, :2])
    motion = np.stack(frames, axis=-1)  # (15, 2, T)
    missing = np.all(motion == 0, axis=(1, 2))
    if missing.any():
        names = [M.JOINTS[j] for j in np.flatnonzero(missing)]
        raise DatasetError(f"{folder}: joint(s) {names} never detected in any frame; cannot fill them from "
                           "neighbouring frames")
    for t in range(1, motion.shape[-1]):  # fill from the previous frame
        hole = motion[..., t] == 0
        motion[..., t][hole] = motion[..., t - 1][hole]
    for t in range(motion.shape[-1] - 2, -1, -1):  # then from the next frame
        hole = motion[..., t] == 0
        motion[..., t][hole] = motion[..., t + 1][hole]
    T = motion.shape[-1] if max_length is None else min(motion.shape[-1], max_length)
    T -= T % multiple
    if T < multiple:
        raise DatasetError(f"{folder}: {motion.shape[-1]} frames; the network needs at least {multiple}")
    motion = motion[..., :T]
    if smooth_sigma:
        motion = M.gaussian_smooth(motion, smooth_sigma, axis=-1)
    return motion * (M.IMG_SIZE / video_height)


# -- datamodule ---------------------------------------------------------------------------------------------
def synthetic_dir(seed: int, variants: int, test_variants: int) -> Path:
    """The generated set's folder, ``$LIT_PAPERS_CACHE/synthetic/mixamo-...`` (default
    ``~/.cache/lit_papers/synthetic/``): the user cache, never ``$LIT_PAPERS_DATA``."""
    return cache_root() / "synthetic" / f"mixamo-s{seed}-v{variants}-t{test_variants}"


class MixamoDataModule(ShardedDataModule):
    """Mixamo 2D retargeting data in the authors' layout.

    Args:
        data_dir: the ``mixamo_data`` folder; default ``<root>/mixamo/mixamo_data`` or, with ``synthetic``,
            a cache folder for the generated data.
        synthetic: generate synthetic data (:mod:`synthetic_mixamo`) into ``data_dir`` when it lacks
            ``train/``; ``synthetic_seed``/``synthetic_variants``/``synthetic_test_variants`` its settings.
        stats: ``data`` = the four files at ``data_dir``'s root, ``real`` = the authors' files under
            ``<root>/mixamo/mixamo_data``, or a folder path.
        views: project from the 7 view angles (view/full models, ``*_with_view`` stats) or the fixed front
            view (skeleton model).
        train_length / test_length: window lengths (64 / 120, sec. 5 of the paper / official code).
        scale_range, rotate_deg, clip, flip_prob, drop_prob: training augmentation, see :class:`MixamoPairs`.
        eval_items: evaluate on a random subset of this many (motion, source, target) items (None = all).
    """

    def __init__(
        self,
        *,
        data_dir: str | None = None,
        root: str | None = None,
        synthetic: bool = False,
        synthetic_seed: int = 0,
        synthetic_variants: int = 4,
        synthetic_test_variants: int = 2,
        stats: str = "data",
        views: bool = True,
        train_length: int = 64,
        test_length: int = 120,
        scale_range: tuple[float, float] | None = (0.5, 1.5),
        rotate_deg: tuple[float, float, float] | None = None,
        clip: bool = True,
        flip_prob: float = 0.5,
        drop_prob: float = 0.0,
        eval_items: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        for name, n in (("train_length", train_length), ("test_length", test_length)):
            if n % 8 or n < 16:
                raise ValueError(f"{name}={n}: windows must be a multiple of 8 frames and >= 16 (three stride-2 "
                                 "layers with reflection padding)")
        if data_dir is not None:
            self.data_dir = Path(data_dir).expanduser()
        elif synthetic:
            self.data_dir = synthetic_dir(synthetic_seed, synthetic_variants, synthetic_test_variants)
        else:
            self.data_dir = family_dir("mixamo", root) / "mixamo_data"
        if stats == "data":
            self.stats_dir = self.data_dir
        elif stats == "real":
            self.stats_dir = family_dir("mixamo", root) / "mixamo_data"
        else:
            self.stats_dir = Path(stats).expanduser()
        self.train_set: MixamoPairs | None = None

    def prepare_data(self) -> None:
        if (self.data_dir / "train").is_dir() and (self.data_dir / "test").is_dir():
            return
        if not self.hparams.synthetic:
            raise DatasetMissingError(
                f"{self.data_dir}: missing train/ and test/ (the authors' Mixamo data is not redistributable). "
                "Download it as the official README describes and point data_dir at it, or set synthetic=true.")
        from lit_papers.data.synthetic_mixamo import generate

        generate(self.data_dir, seed=self.hparams.synthetic_seed, variants=self.hparams.synthetic_variants,
                 test_variants=self.hparams.synthetic_test_variants)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.prepare_data()  # idempotent and atomic: safe on every rank and outside a Trainer
        hp = self.hparams
        self.mean, self.std = load_stats(self.stats_dir, hp.views)
        chars, motions, arrays = scan_split(self.data_dir / "train", hp.train_length)
        self.train_set = MixamoPairs(chars, motions, arrays, mean=self.mean, std=self.std, length=hp.train_length,
                                     views=hp.views, scale_range=hp.scale_range, rotate_deg=hp.rotate_deg,
                                     clip=hp.clip, flip_prob=hp.flip_prob, drop_prob=hp.drop_prob)
        chars, motions, arrays = scan_split(self.data_dir / "test", hp.test_length)
        self.test_set = MixamoRetargetEval(chars, motions, arrays, mean=self.mean, std=self.std,
                                           length=hp.test_length, views=hp.views, seed=hp.seed,
                                           max_items=hp.eval_items)

    def train_dataloader(self):
        return self.train_loader(self.train_set)

    def val_dataloader(self):
        # The authors validate on the test characters; we do the same (there is no third split).
        return self.eval_loader(self.test_set, batch_size=self.hparams.eval_batch_size)

    def test_dataloader(self):
        return self.eval_loader(self.test_set, batch_size=self.hparams.eval_batch_size)

