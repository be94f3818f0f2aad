"""A meta-training run's folder (RUN_DIR): writable, which files make it a run, which checkpoint a
resumed run continues, and which options a resumed run may change."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gwnmo_meta.config import RunConfig
from gwnmo_meta.errors import CheckpointError, ConfigError
from gwnmo_meta.io.checkpoint import KIND_META, load_checkpoint

# Fields of RunConfig a resumed run may change (they do not alter what has been computed so far).
RESUMABLE_CHANGES = {"meta_steps", "device", "data_root", "download", "task_batch"}
# Files that mark a folder as holding a run (a new run there needs --resume or another --out).
RUN_ARTEFACTS = ("config.json", "*.pt", "events.out.tfevents.*", "test.json")
PROBE_NAME = ".gwnmo-write-test"  # written and removed to check that --out is writable


def check_writable(out: Path) -> None:
    """Create ``out`` and verify a file can be written there, else ``ConfigError``."""
    try:
        str(out).encode("utf-8")  # TensorBoard and JSON need a text path
    except UnicodeEncodeError:
        shown = str(out).encode("utf-8", "replace").decode()
        raise ConfigError(f"--out {shown} is not a valid UTF-8 path") from None
    probe = out / PROBE_NAME
    try:
        out.mkdir(parents=True, exist_ok=True)
        if probe.is_symlink() or (probe.exists() and not probe.is_file()):
            raise ConfigError(f"refusing to write to --out {out}: {probe} is not a regular file")
        probe.unlink(missing_ok=True)  # left by a killed process
        # O_EXCL | O_NOFOLLOW: never through a link planted meanwhile
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.write(fd, b"ok")
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to --out {out}: {exc.strerror or exc}") from None


def restartable(out: Path) -> bool:
    """Whether ``out`` holds a meta-train run stopped before its first checkpoint (a readable
    config.json and no checkpoint): ``--resume`` starts it afresh."""
    try:
        RunConfig.load(out / "config.json")
    except ConfigError:
        return False
    return resume_checkpoint(out) is None


def check_not_run_file(path: Path, checkpoint: Path, flag: str) -> None:
    """``ConfigError`` if ``path`` (an output) is ``checkpoint`` itself, or a file of the run
    folder holding it (its artefacts, its lock), which writing ``path`` would overwrite."""
    from fnmatch import fnmatch

    from gwnmo_meta.io.runlock import LOCK_NAME

    path, checkpoint = Path(path), Path(checkpoint)
    try:
        same = path.exists() and os.path.samefile(path, checkpoint)
        same_folder = path.parent.resolve() == checkpoint.parent.resolve()
    except OSError:
        return  # a checkpoint that cannot be read is reported when it is loaded
    names = (*RUN_ARTEFACTS, "results.json", LOCK_NAME, PROBE_NAME)
    if same or (same_folder and any(fnmatch(path.name, pattern) for pattern in names)):
        what = "the checkpoint being read" if same else f"a file of the run {checkpoint.parent}"
        raise ConfigError(f"{flag} {path} is {what}; write the results elsewhere")


def run_artefacts(out: Path) -> list[str]:
    """Names of the files in ``out`` that belong to a run (see ``RUN_ARTEFACTS``)."""
    if not out.is_dir():
        return []
    return sorted({p.name for pattern in RUN_ARTEFACTS for p in out.glob(pattern)})


def resume_config(cfg: RunConfig, ckpt: dict[str, Any]) -> RunConfig:
    """``cfg`` if it may continue ``ckpt`` (same options but ``RESUMABLE_CHANGES``, enough meta-steps)."""
    saved = RunConfig.from_dict(ckpt["config"])
    diff = [
        k
        for k, v in cfg.to_dict().items()
        if k not in RESUMABLE_CHANGES and saved.to_dict()[k] != v
    ]
    if diff:
        raise ConfigError(
            "--resume with options that differ from the checkpoint's: "
            + ", ".join(
                f"{k} (checkpoint {saved.to_dict()[k]!r}, given {getattr(cfg, k)!r})" for k in diff
            )
        )
    if cfg.meta_steps < ckpt["step"]:  # config.json would claim a shorter run than its history
        raise ConfigError(
            f"--meta-steps {cfg.meta_steps} is fewer than the {ckpt['step']} meta-steps this run "
            f"has done; give at least {ckpt['step']}"
        )
    return cfg


def resume_checkpoint(out: Path) -> Path | None:
    """The checkpoint a resumed run of ``out`` continues: ``last.pt``, or ``best.pt`` when it is
    newer (a run stopped between the two writes) or alone; ``None`` if there is neither."""
    last, best = out / "last.pt", out / "best.pt"
    if not best.is_file():
        return last if last.is_file() else None
    if last.is_file():  # best.pt is written first: only a run stopped in between leaves it newer
        if best.stat().st_mtime_ns <= last.stat().st_mtime_ns:
            return last
        try:
            newer = load_checkpoint(best, KIND_META)["step"] > load_checkpoint(last)["step"]
        except CheckpointError:
            return last  # a damaged file: resuming last.pt reports it
        if not newer:
            return last
    return best
