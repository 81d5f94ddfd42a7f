"""What the command-line entry points print while they work."""

import logging
import sys
from contextlib import contextmanager


@contextmanager
def progress_on_stderr():
    """Show this package's INFO messages on stderr while a command runs, without touching global logging."""
    package_logger = logging.getLogger("wan_diffusers")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous_level)
