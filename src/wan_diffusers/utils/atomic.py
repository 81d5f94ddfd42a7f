"""Writing files and folders so that an interruption never loses or half-writes anything.

Everything this package writes for the user (videos, latents, converted repos) is first written under a temporary
name beside its target and then renamed into place: `os.replace` within one folder is atomic, so the target is
either the previous file or the complete new one, never a truncated one.

Temporary names are hidden, say what they are for, and name their writer (process id and host):
`.cat.mp4.partial-<pid>-<host>-<id>.mp4` (the suffix stays last, as encoders pick the format from it). Folders also
carry a marker file (`MARKER`) with the process id and host, so that a later run can tell the leftovers of a killed
run (by name and marker) from anything else, and clean them up.
"""

import errno
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from diffusers.utils import logging

logger = logging.get_logger(__name__)

MARKER = ".wan-diffusers-partial.json"
# What the hidden names of our temporary files and folders contain: `.{target}.{kind}-{id}`.
TEMPORARY_KINDS = ("partial", "replaced")


def temporary_name(target: Path, kind: str = "partial") -> Path:
    """A hidden path beside `target`, unique to this writer and naming it (process id and host); a file's suffix
    stays last: `.cat.mp4.partial-<pid>-<host>-<id>.mp4`."""
    token = f"{kind}-{os.getpid()}-{_host_tag()}-{uuid.uuid4().hex[:8]}"
    return target.parent / f".{target.name}.{token}{target.suffix if kind == 'partial' else ''}"


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def remove_file_leftovers(target: Path) -> list[Path]:
    """Remove the temporary files that killed writers of `target` left (`kill -9` runs no cleanup): ours by name,
    of a process of this host that no longer runs. Returns what was removed."""
    pattern = re.compile(
        rf"\.{re.escape(target.name)}\.partial-(\d+)-([0-9a-f]{{6}})-[0-9a-f]{{8}}{re.escape(target.suffix)}"
    )
    removed = []
    if not target.parent.is_dir():
        return removed
    for path in target.parent.glob(f".{glob.escape(target.name)}.partial-*"):
        match = pattern.fullmatch(path.name)
        if match and match.group(2) == _host_tag() and path.is_file() and not _process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `target` to write to; it becomes `target` when the block completes.

    Any failure, Ctrl-C or SIGTERM (see `interrupt_on_sigterm`) removes the temporary file, and an existing `target`
    is left as it was. The parent folder is created if missing.
    """
    target = Path(target)
    with describe_os_error(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    for path in remove_file_leftovers(target):
        logger.warning(f"Removed {path}, left by an interrupted run")
    temporary = temporary_name(target)
    try:
        with interrupt_on_sigterm():
            yield temporary
            with describe_os_error(target):
                os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_marker(folder: Path, target: Path) -> None:
    """Mark `folder` as a temporary folder of this process, for `find_leftovers`."""
    content = {"pid": os.getpid(), "host": socket.gethostname(), "target": target.name, "time": time.time()}
    (folder / MARKER).write_text(json.dumps(content) + "\n")


@dataclass(frozen=True)
class Leftover:
    """A temporary folder of another run of this package, found beside a target."""

    path: Path
    kind: str  # "partial": a repo being written; "replaced": the previous repo, moved away to be deleted;
    # "claim": the target itself, created empty to reserve its name
    pid: int | None
    alive: bool  # the process that made it still runs (on this host): a conversion in progress, not a leftover
    size: int  # bytes

    def describe(self) -> str:
        owner = f"process {self.pid}" if self.pid is not None else "an unknown process"
        return f"{self.path} ({format_size(self.size)}, left by {owner})"


def find_leftovers(target: Path, *, own_folder: bool = False) -> list[Leftover]:
    """Temporary folders made for `target` by runs of this package: ours by name (`.{name}.{kind}-*`) and marker.

    With `own_folder`, looks at `target` itself instead (kind "claim": a folder a writer created to reserve the name).
    """
    if own_folder:
        candidates = [("claim", target)]
    elif target.parent.is_dir():
        pattern = ".{name}.{kind}-*"
        candidates = [
            (kind, path)
            for kind in TEMPORARY_KINDS
            for path in sorted(target.parent.glob(pattern.format(name=glob.escape(target.name), kind=kind)))
        ]
    else:
        candidates = []
    leftovers = []
    for kind, path in candidates:
        marker = path / MARKER
        if not path.is_dir() or path.is_symlink() or not marker.is_file():
            continue
        try:
            content = json.loads(marker.read_text())
            pid, host = int(content["pid"]), content["host"]
        except (OSError, ValueError, KeyError, TypeError):
            pid, host = None, None
        alive = pid is not None and host == socket.gethostname() and _process_alive(pid)
        leftovers.append(Leftover(path, kind, pid, alive, folder_size(path)))
    return leftovers


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def folder_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def format_size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def remove_folder(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM inside `interrupt_on_sigterm`, so that cleanup runs as for Ctrl-C."""


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into an exception (`Terminated`) for the duration of the block, so `finally` clauses run.

    Only in the main thread (the only one that may set signal handlers); elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated(f"terminated by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class WriteError(OSError):
    """An OSError whose message names the file and says what went wrong in words (disk full, read-only...)."""


_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is larger than this system allows",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
}


@contextmanager
def describe_os_error(target: Path) -> Iterator[None]:
    """Re-raise an OSError while writing `target` as a `WriteError` that names `target` and the reason in words."""
    try:
        yield
    except WriteError:
        raise
    except OSError as error:
        raise WriteError(error.errno, f"cannot write {target}: {os_error_reason(error)}") from error


def os_error_reason(error: OSError) -> str:
    reason = _REASONS.get(error.errno, error.strerror or str(error))
    if error.filename is not None:
        reason += f" ({error.filename})"
    return reason
