"""Atomic file writes and content-keyed caches: a crash or Ctrl-C never leaves a half-written output behind,
and a cached result is reused only while what it measured is unchanged."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from mixq_nncf.errors import OutputError

TMP_SUFFIX = ".tmp"


def umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp makes 0600, unreadable by others)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def output_error(path: Path, exc: OSError) -> OutputError:
    """An OS error while writing, as one line naming the path and the fix."""
    if exc.errno == errno.ENOSPC:
        fix = "free some space on that disk or choose another --out"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a writable --out or fix the folder's permissions"
    else:
        fix = "choose another --out"
    return OutputError(f"cannot write {path}: {exc.strerror or exc}; {fix}")


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it into place (mode per the umask)."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        write(tmp_path)
        os.chmod(tmp_path, umask_mode())
        os.replace(tmp_path, path)
    except OSError as exc:
        raise output_error(path, exc) from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda p: torch.save(obj, p))


def ensure_writable(folder: Path, *, need_bytes: int = 0, what: str = "--out", create: bool = True) -> Path:
    """Fail before any work when ``folder`` cannot take our outputs (read-only, not a folder, too little space).

    With ``create=False`` a missing folder is not made: its nearest existing parent is checked instead, so a
    command refused later for another reason leaves nothing behind."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file, not a folder; give a folder path (or move that file away)")
    blocked = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise OutputError(f"{what} {folder} cannot be created: {blocked} is a file, not a folder; choose another path")
    probe_dir = folder if create or folder.is_dir() else next(
        (p for p in folder.absolute().parents if p.is_dir()), Path("/"))
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mixq-write-probe.", suffix=TMP_SUFFIX, dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {folder} is not writable ({exc.strerror or exc}); choose a writable folder or "
                          "fix its permissions") from None
    free = shutil.disk_usage(probe_dir).free
    if need_bytes and free < need_bytes:
        raise OutputError(f"{what} {folder} has {free / 1e6:.0f} MB free but this needs about {need_bytes / 1e6:.0f} "
                          "MB; free some space or choose another folder")
    return folder


# ----------------------------------------------------------------------------------------------
# one writer per folder

LOCK_NAME = ".mixq.lock"


def _lock_holder(path: Path) -> str:
    """'process PID (started TIME)' from a lock file, as far as the holder has written it."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    started = info.get("started", "?")
    command = f", {info['command']}" if info.get("command") else ""
    return f"process {info['pid']} (started {started}{command})"


@contextmanager
def folder_lock(folder: Path, *, shared: bool = False, command: str = "", what: str = "--out") -> Iterator[Path]:
    """Hold ``folder`` for this process: a second writer stops at once with the holder's PID.

    fcntl.flock on FOLDER/.mixq.lock: the kernel drops the lock when the process exits or is killed, so a lock
    file left by a crash never blocks. ``shared`` lets cooperating writers (sweep shards, each appending its own
    results file) hold the folder together while keeping everyone else out. The file is removed on release
    (exclusive holders only); an opener that locked a file removed meanwhile opens the new one instead.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, umask_mode())
        except OSError as exc:
            raise output_error(path, exc) from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"{folder} is in use by {_lock_holder(path)}; wait for it or use another "
                              f"{what}") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder released and removed it between our open and our lock: take the new one
    try:
        info = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": command or " ".join(["mixq"] + sys.argv[1:3])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield folder
    finally:
        if not shared:
            try:
                os.unlink(path)
            except OSError:
                pass
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# content keys

def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def content_key(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (config sections, file hashes, image lists)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_json(path: Path, key: str, compute: Callable[[], Any],
                valid: Callable[[Any], bool] | None = None) -> tuple[Any, bool]:
    """``compute()``'s result, saved at ``path`` with ``key``; reused only when the stored key equals ``key``
    (and ``valid(value)`` holds, for results that point at other files).

    The key is the content hash of what the result measured (IR files, config section, image list), so a result
    computed for other inputs is never reported for these. Returns (value, reused).
    """
    path = Path(path)
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            saved = None
        if isinstance(saved, dict) and saved.get("key") == key and "value" in saved and \
                (valid is None or valid(saved["value"])):
            return saved["value"], True
    value = compute()
    atomic_write_json(path, {"key": key, "value": value})
    return value, False


def remove_stale_temp(folder: Path) -> list[Path]:
    """Delete temp files and export folders a killed run left behind (never finished outputs)."""
    gone = []
    folder = Path(folder)
    if not folder.is_dir():
        return gone
    for p in folder.rglob(".*"):
        if p.is_file() and p.name.endswith(TMP_SUFFIX):
            p.unlink(missing_ok=True)
            gone.append(p)
        elif p.is_dir() and p.name.startswith(".export-"):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


FAULT_ENV = "MIXQ_FAULT_AT"
FAULT_EXIT = 75


def fault_point(name: str) -> None:
    """Crash-safety tests set MIXQ_FAULT_AT=<name> to kill the process here, as a power cut would (no cleanup)."""
    if os.environ.get(FAULT_ENV) == name:
        os._exit(FAULT_EXIT)
