"""W&B defaults: project ``lit-papers``, offline unless credentials exist, the run id kept in the run folder so a
resumed run continues the same W&B run."""

from __future__ import annotations

import netrc
import os
import uuid
from pathlib import Path
from urllib.parse import urlparse

WANDB_ID_FILE = "wandb_id.txt"


def wandb_has_credentials() -> bool:
    """True when an API key is configured (env or ~/.netrc for the W&B host); never contacts a server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_offline() -> bool:
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if mode == "online":
        return False
    return not wandb_has_credentials()


def wandb_run_id(run_dir: Path) -> str:
    """The run's W&B id, created once and stored in the run folder (and so reused by a resumed run, e.g. a
    requeued Slurm job). Under ``wandb agent`` the id the agent assigned (``WANDB_RUN_ID``) is the one stored, so
    the run reports to its sweep."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    agent_id = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
    run_id = agent_id or uuid.uuid4().hex[:12]
    # Every srun-launched DDP rank builds the logger: the first to publish its id wins (link() is atomic and
    # fails if the file exists), the others read that id, so a requeued job finds the id rank 0 used.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")  # unique per process and thread
    tmp.write_text(run_id + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        run_id = path.read_text().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return run_id


def make_wandb_logger(run_dir: Path, name: str):
    from lightning.pytorch.loggers import WandbLogger

    offline = wandb_offline()
    return WandbLogger(
        project=os.environ.get("WANDB_PROJECT", "lit-papers"),
        name=name,
        save_dir=str(run_dir),
        id=wandb_run_id(run_dir),
        resume="allow",
        offline=offline,
        log_model=False,
    )
