"""What every verb does first: check and hold its output, load the config (mixq or NNCF 2.x format) and warn
once, before work starts."""
from __future__ import annotations

import os
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from mixq_nncf.errors import OutputError
from mixq_nncf.io_utils import ensure_writable, folder_lock

MB = 1 << 20
# command -> (what --out is, free space it needs before starting, whether one process holds the folder).
# The space is a floor that catches a nearly full disk, not the size of every output: checkpoints, IRs and
# images of a real model are larger, and their writers check again where the size is known.
OUTPUTS = {
    "run": ("folder", 512 * MB, True), "demo": ("folder", 512 * MB, True), "sweep": ("folder", 256 * MB, True),
    "train": ("folder", 128 * MB, True), "export": ("folder", 64 * MB, True), "quantize": ("folder", 64 * MB, True),
    "upscale": ("folder", 64 * MB, False), "eval": ("folder", 16 * MB, False), "bench": ("folder", 1 * MB, False),
    "allocate": ("file", 1 * MB, False), "config": ("file", 1 * MB, False),
}
# set while a process holds its --out, so the worker processes it starts on that folder (sweep --jobs) go ahead
HELD_ENV = "MIXQ_HELD_OUT"


def _cooperating(command: str, args) -> bool:
    """True for a process that shares its folder by design: sweep shards, training ranks other than 0."""
    if command == "sweep":
        return bool(getattr(args, "shard", None)) or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    return False


@contextmanager
def output_guard(command: str, args) -> Iterator[None]:
    """Before any work: --out must be writable with room to spare, and (for commands that write a run folder)
    held by this process alone until it exits; a second process on the same folder stops at once."""
    kind, need, lock = OUTPUTS.get(command, (None, 0, False))
    out = getattr(args, "out", None)
    if kind is None or not out:
        yield
        return
    out = Path(out)
    if kind == "file":
        if out.is_dir():
            raise OutputError(f"--out {out} is a folder; give the path of the file to write, e.g. {out / 'x.json'}")
        ensure_writable(out.parent, need_bytes=need, what="the folder of --out", create=False)
        yield
        return
    ensure_writable(out, need_bytes=need, create=lock)
    held = os.environ.get(HELD_ENV)
    key = str(out.resolve())
    if not lock or held == key or (command == "train" and os.environ.get("RANK", "0") != "0"):
        yield
        return
    with ExitStack() as stack:
        stack.enter_context(folder_lock(out, shared=_cooperating(command, args), command=f"mixq {command}"))
        os.environ[HELD_ENV] = key
        stack.callback(_restore_env, held)
        yield


def _restore_env(value) -> None:
    if value is None:
        os.environ.pop(HELD_ENV, None)
    else:
        os.environ[HELD_ENV] = value


def load_checked(path, overrides: list[str]):
    """load_config, then print the NNCF translation notes and the settings warnings once, on stderr."""
    from mixq_nncf.config.preflight import preflight_warnings
    from mixq_nncf.config.files import load_config

    notes: list[str] = []
    cfg = load_config(path, overrides, notes=notes)
    lines = list(dict.fromkeys(notes + preflight_warnings(cfg)))
    if os.environ.get("RANK", "0") == "0":  # once, not once per training process
        for line in lines:
            print(f"warning: {line}", file=sys.stderr)
    return cfg
