"""What the reliability tests share: one tiny release and its converted repo per session, and the real command.

Each case runs as a user would: the `wan-diffusers` command in a subprocess where exit codes, signals or concurrency
matter, `main(argv)` in-process where a subprocess would add only its start-up time (2-3 s with torch).
"""

from pathlib import Path

import pytest

from factories.original_release import build_release


@pytest.fixture(scope="session")
def release(tmp_path_factory) -> Path:
    """A tiny original T2V release folder (read it, never change it)."""
    return build_release(tmp_path_factory.mktemp("release") / "Wan2.1-T2V-tiny", "t2v-1.3b")


@pytest.fixture(scope="session")
def repo(release, tmp_path_factory) -> Path:
    """The tiny release, converted to a Hub-format pipeline repo (read it, never change it)."""
    from wan_diffusers.conversion import convert_release

    return convert_release(release, tmp_path_factory.mktemp("repo") / "Wan2.1-T2V-tiny-Diffusers")
