"""Running the `wan-diffusers` command as a user would: in a subprocess, stalled at a chosen step, signalled."""

import importlib
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = Path(__file__).parents[2] / "src"


def command_env() -> dict:
    """The environment of a subprocess: this checkout's package first, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE), str(HERE.parent), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


def entry_point() -> list[str]:
    """The installed `wan-diffusers` script beside this Python, else the module (same `main`)."""
    script = Path(sys.executable).parent / "wan-diffusers"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "wan_diffusers.cli"]


def run_command(*args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """`wan-diffusers ARGS...` in a subprocess; returns the finished process (stdout and stderr as text)."""
    return subprocess.run(
        [*entry_point(), *map(str, args)],
        capture_output=True,
        text=True,
        env=command_env(),
        timeout=timeout,
        **kwargs,
    )


def start_stalled(stall: str, ready: Path, *args) -> subprocess.Popen:
    """`wan-diffusers ARGS...` in a subprocess that stalls after `stall` (MODULE:FUNCTION) ran once; see stall.py."""
    return subprocess.Popen(
        [sys.executable, str(HERE / "stall.py"), stall, str(ready), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env(),
    )


def wait_until_stalled(process: subprocess.Popen, ready: Path, timeout: float = 120) -> None:
    """Wait until `process` (from `start_stalled`) reached its stall point."""
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the command never reached its stall point:\n{process.communicate()[1]}")
        time.sleep(0.05)


def resume(process: subprocess.Popen, ready: Path, timeout: float = 120) -> tuple[int, str]:
    """Let a stalled `process` go on; returns its exit status and stderr."""
    Path(f"{ready}.go").write_text("go")
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def resolve(target: str) -> tuple[object, str]:
    """MODULE:FUNCTION or MODULE:CLASS.METHOD -> (the module or class that holds it, its name)."""
    module_name, attribute = target.split(":")
    *owner_path, function_name = attribute.split(".")
    owner = importlib.import_module(module_name)
    for name in owner_path:
        owner = getattr(owner, name)
    return owner, function_name


@contextmanager
def signal_inside(monkeypatch, target: str, signum: int):
    """Make MODULE:FUNCTION send `signum` to this very process once it has run (an in-process, real signal)."""
    module, function_name = resolve(target)
    original = getattr(module, function_name)

    def signalled(*args, **kwargs):
        result = original(*args, **kwargs)
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler runs at the next bytecode: well before this ends
        return result

    # A shell starts background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt handler:
    # give this process Python's own handler for the test, as an interactive `wan-diffusers` run has.
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(module, function_name, signalled)
    try:
        yield
    finally:
        monkeypatch.setattr(module, function_name, original)
        signal.signal(signal.SIGINT, previous_sigint)


def one_line_error(stderr: str) -> str:
    """The error the user sees: exactly one line starting with "error:" and no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]
