"""Packaging tells the truth: the dependency floors are the versions CI installs and tests."""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
# Packages whose floor is the tested version (pyproject.toml says why).
TESTED_FLOORS = ("torch", "diffusers", "transformers", "accelerate", "peft", "ruff")


def test_floors_are_the_versions_ci_tests():
    pyproject = (ROOT / "pyproject.toml").read_text()
    floors = dict(re.findall(r'"([A-Za-z0-9_.-]+)>=([0-9][0-9.]*)"', pyproject))
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([0-9][0-9.]*)$", (ROOT / ".ci/constraints.txt").read_text(), re.M))
    pins["torch"] = re.search(r"torch==([0-9.]+)", (ROOT / "scripts/bootstrap.sh").read_text()).group(1)
    for package in TESTED_FLOORS:
        floor, pin = floors[package].split("."), pins[package].split(".")
        assert pin[: len(floor)] == floor and all(part == "0" for part in pin[len(floor) :]), (
            f"{package}: pyproject.toml's floor {floors[package]} is not the version CI tests ({pins[package]})"
        )
