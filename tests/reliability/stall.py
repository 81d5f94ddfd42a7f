"""Run the `wan-diffusers` command with one function made to stall, so a test can signal it mid-way.

    python stall.py MODULE:FUNCTION READY_FILE ARG...   (or MODULE:CLASS.METHOD)

runs `wan_diffusers.cli.main([ARG...])` in this process, with MODULE.FUNCTION replaced by a wrapper that, on its
first call, runs the original, creates READY_FILE and then waits (up to a minute) until READY_FILE.go exists: the
test acts while the command is inside that step (half a file written, a staging folder full), by signalling it or
by running a second command, then lets it go on. The rest is the real command in a real process.
"""

import sys
import time
from pathlib import Path

from reliability.helpers import resolve  # tests/ is on PYTHONPATH (helpers.command_env)


def main() -> int:
    target, ready, *argv = sys.argv[1:]
    module, function_name = resolve(target)
    original = getattr(module, function_name)

    def stalled(*args, **kwargs):
        result = original(*args, **kwargs)
        if not Path(ready).exists():
            Path(ready).write_text("ready")
            deadline = time.monotonic() + 60
            while not Path(f"{ready}.go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return result

    setattr(module, function_name, stalled)
    from wan_diffusers.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
