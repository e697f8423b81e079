"""Retarget a 2D motion to another skeleton (and view): ``lit-papers retarget`` (dispatch: ``main(argv)``).

    python -m lit_papers.papers.motion_retarget.retarget --run RUN_DIR \\
        --source SRC --target TGT --out OUT [--source-view DEG] [--target-view DEG] [--keep-view]

``RUN_DIR`` is a ``lit-papers fit`` run folder (``config.yaml`` + ``checkpoints/last.ckpt``); alternatively
``--config CFG --ckpt CKPT``. ``SRC``/``TGT`` are each either a folder of OpenPose BODY_25 JSON files (one per
frame; read by :func:`lit_papers.data.mixamo.load_openpose`) or a dataset animation: ``<split>/<Character>/
<Animation>`` under the run's data folder, or a path to a ``(15, 3, T)`` ``.npy``, projected to 2D from
``--*-view`` degrees (one of the 7 training views or any angle). The target contributes only its static
codes (skeleton, and view unless ``--keep-view``); the source contributes the motion.

Writes into OUT: ``retargeted.npy`` (15, 2, T) pixels at the 512-px scale (root starting where the source's
starts), ``source.npy``, ``target.npy``, ``ground_truth.npy`` when both are dataset animations of the same
split (the source animation performed by the target character), ``retarget.gif`` (side by side: source,
target, retargeted[, ground truth]), ``retarget_strip.png`` (6 frames) and ``retarget.json`` (settings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from lit_papers.callbacks.skeleton_render import filmstrip, save_gif, side_by_side
from lit_papers.data.mixamo import MixamoDataModule, _load_motion, load_openpose, load_stats
from lit_papers.ops import motion2d as M
from lit_papers.ops.checkpoint import CheckpointError, read_checkpoint
from lit_papers.papers.motion_retarget.model import RetargetNet


def _instantiate(cls, init: dict):
    """Build ``cls`` from a config's ``init_args`` with jsonargparse (nested ``class_path`` entries included)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "obj", fail_untyped=False)
    cfg = parser.parse_object({"obj": init})
    build = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return build(cfg).obj


def load_run(config: str | os.PathLike, ckpt: str | os.PathLike) -> tuple[RetargetNet, MixamoDataModule]:
    """The network (weights from the Lightning checkpoint, eval mode) and the (not set up) datamodule of a run."""
    cfg = yaml.safe_load(Path(config).read_text())
    try:
        net_cfg = cfg["model"]["init_args"]["model"]["init_args"]
        data_cfg = cfg["data"]["init_args"]
    except (KeyError, TypeError) as exc:
        raise SystemExit(f"{config}: not a motion_retarget config (needs model.init_args.model and data)") from exc
    net = _instantiate(RetargetNet, net_cfg)
    data = _instantiate(MixamoDataModule, data_cfg)
    try:  # weights_only: a checkpoint the user points at never runs code while it is read
        checkpoint = read_checkpoint(ckpt, mmap=False)
    except CheckpointError as exc:
        raise SystemExit(str(exc)) from exc
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise SystemExit(f"{ckpt}: not a Lightning checkpoint (no state_dict)")
    state = checkpoint["state_dict"]
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    net.load_state_dict(weights)
    return net.eval(), data


def read_clip(spec: str, data: MixamoDataModule, view_deg: float | None, *, video_height: float,
              max_length: int | None) -> tuple[np.ndarray, dict]:
    """A clip spec -> ((15, 2, T) pixels, info). See the module docstring for the accepted specs."""
    path = Path(spec)
    if path.is_dir() and any(path.glob("*.json")):
        return load_openpose(path, video_height=video_height, max_length=max_length), {"kind": "openpose",
                                                                                       "path": str(path)}
    candidates = [path, data.data_dir / spec]
    for p in candidates:
        if p.is_dir() and (p / f"{p.name}.npy").is_file():
            p = p / f"{p.name}.npy"
        if p.suffix == ".npy" and p.is_file():
            motion3d = _load_motion(p)
            if max_length:
                motion3d = motion3d[..., :max_length]
            if view_deg is None:
                angles = M.VIEW_ANGLES[3] if data.hparams.views else None
            else:
                angles = (0.0, 0.0, float(np.deg2rad(view_deg)))
            info = {"kind": "dataset", "path": str(p), "view_deg": view_deg, "character": p.parent.parent.name,
                    "animation": p.parent.name, "split_dir": str(p.parent.parent.parent)}
            return M.project(motion3d, angles), info
    raise SystemExit(f"{spec}: neither an OpenPose JSON folder nor a dataset animation (tried {', '.join(map(str, candidates))})")


def _crop(m: np.ndarray, multiple: int, minimum: int, name: str) -> np.ndarray:
    T = m.shape[-1] - m.shape[-1] % multiple
    if T < minimum:
        raise SystemExit(f"{name}: {m.shape[-1]} frames; the network needs at least {minimum} (a multiple of {multiple})")
    return m[..., :T]


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lit-papers retarget", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="run folder with config.yaml and checkpoints/last.ckpt")
    parser.add_argument("--config", help="config YAML (instead of --run)")
    parser.add_argument("--ckpt", help="checkpoint (instead of --run)")
    parser.add_argument("--source", required=True, help="OpenPose JSON folder or <split>/<Character>/<Animation>")
    parser.add_argument("--target", required=True, help="same kinds; gives the skeleton (and view)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--source-view", type=float, default=None, help="projection angle (deg) of a dataset source")
    parser.add_argument("--target-view", type=float, default=None, help="projection angle (deg) of a dataset target")
    parser.add_argument("--keep-view", action="store_true", help="keep the source's view code")
    parser.add_argument("--video-height", type=float, default=720.0, help="OpenPose video height (px)")
    parser.add_argument("--max-length", type=int, default=120, help="frames used from each clip")
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.run:
        run = Path(args.run)
        config, ckpt = args.config or run / "config.yaml", args.ckpt or run / "checkpoints" / "last.ckpt"
    elif args.config and args.ckpt:
        config, ckpt = Path(args.config), Path(args.ckpt)
    else:
        parser.error("give --run RUN_DIR, or --config and --ckpt")
    for p in (config, ckpt):
        if not Path(p).is_file():
            raise SystemExit(f"{p}: missing (train first: lit-papers fit --config configs/motion_retarget/<variant>.yaml)")
    net, data = load_run(config, ckpt)
    mean, std = load_stats(data.stats_dir, data.hparams.views)
    opts = dict(video_height=args.video_height, max_length=args.max_length)
    src, src_info = read_clip(args.source, data, args.source_view, **opts)
    tgt, tgt_info = read_clip(args.target, data, args.target_view, **opts)
    src = _crop(src, net.length_multiple, net.min_length, args.source)
    tgt = _crop(tgt, net.length_multiple, net.min_length, args.target)
    x = torch.from_numpy(M.preprocess(src, mean, std)).float()[None]  # (1, 30, T)
    t = torch.from_numpy(M.preprocess(tgt, mean, std)).float()[None]
    with torch.no_grad():
        out = net.retarget(x, t, keep_view=args.keep_view)[0].double().numpy()  # (30, T)
    result = M.postprocess(out, mean, std, start=src[M.ROOT, :, 0])  # (15, 2, T) pixels
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    _save_npy(outdir / "retargeted.npy", result)
    _save_npy(outdir / "source.npy", src)
    _save_npy(outdir / "target.npy", tgt)
    panels, titles = [src, tgt, result], ["source (motion)", "target (skeleton)", "retargeted"]
    if src_info["kind"] == tgt_info["kind"] == "dataset" and src_info["split_dir"] == tgt_info["split_dir"]:
        gt_path = Path(src_info["split_dir"]) / tgt_info["character"] / src_info["animation"] / f"{src_info['animation']}.npy"
        if gt_path.is_file():
            view = tgt_info["view_deg"] if not args.keep_view else src_info["view_deg"]
            angles = (0.0, 0.0, float(np.deg2rad(view))) if view is not None else (M.VIEW_ANGLES[3] if data.hparams.views else None)
            gt = M.project(_load_motion(gt_path)[..., :src.shape[-1]], angles)
            _save_npy(outdir / "ground_truth.npy", gt)
            panels.append(gt)
            titles.append("ground truth")
    images = side_by_side(panels, titles, size=256)
    save_gif(images, outdir / "retarget.gif", fps=args.fps)
    filmstrip(images, 6).save(outdir / "retarget_strip.png")
    (outdir / "retarget.json").write_text(json.dumps({"source": src_info, "target": tgt_info, "config": str(config),
                                                      "ckpt": str(ckpt), "keep_view": args.keep_view,
                                                      "frames": int(result.shape[-1])}, indent=1))
    print(f"wrote {outdir}/retargeted.npy {tuple(result.shape)} and {outdir}/retarget.gif", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
