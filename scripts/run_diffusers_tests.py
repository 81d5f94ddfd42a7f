#!/usr/bin/env python
"""Run diffusers' own Wan tests on wan_diffusers' classes, offline, and print the counts per module.

diffusers' tests are not in its wheel. This script takes them from `tests/diffusers_upstream/diffusers-tests.tar.gz`
(a pinned extract of the diffusers repository, Apache-2.0; its README says from which commit and why) or, with
`--git-dir`, straight from a clone or mirror of github.com/huggingface/diffusers at `--ref` (default: the tag of the
installed version, `v<diffusers.__version__>`). It then

1. points the Wan imports of the test modules at `wan_diffusers`: every name a module imports from `diffusers` that
   `wan_diffusers` also exports (`WanPipeline`, `AutoencoderKLWan`, `WanTransformer3DModel`, ...) is imported again
   from `wan_diffusers` right after, so the tests build and check our classes (`--oracle` skips this step and runs
   them on diffusers' own classes: the baseline of this environment);
2. replaces the one Hub download the tests make, `hf-internal-testing/tiny-random-t5` (`AutoConfig` and
   `AutoTokenizer`; the model itself is built from the config with random weights), by a local folder: that repo's
   config (d_model 32, 5 layers, vocab 1103) and, as tokenizer, the umT5 tokenizer of the Wan 2.1 parity fixtures
   (452 tokens, all below 1103). Its embeddings start at initializer_factor 0.002, so the expected output slices of
   the tests do not depend on which ids the prompt gets;
3. adds `test_models_autoencoder_wan_22.py`: diffusers' own VAE model test classes (core, training, memory, slicing
   and tiling) on a tiny Wan 2.2 configuration (`is_residual`, `patch_size` 2, z_dim 48), which diffusers does not
   test at the model level;
4. runs pytest with the Hub offline (`HF_HUB_OFFLINE=1`) and prints passed / failed / skipped / errors per module,
   exiting with 1 if any test failed. A failure listed in `DIFFERS_BY_DESIGN` (a test whose expected numbers come
   from a behaviour where wan_diffusers follows the original Wan code instead of diffusers) is still run, and
   counted and printed as "differs by design" with its reason and the test of ours that shows the difference.

Run it with the interpreter of the environment to test, with wan_diffusers importable:
    PYTHONPATH=src .venv/bin/python scripts/run_diffusers_tests.py [-k EXPR] [--oracle] [--keep DIR]
Refresh the pinned extract from a mirror (then update its README):
    .venv/bin/python scripts/run_diffusers_tests.py --git-dir /path/to/diffusers.git --ref v0.42.1 --write-archive
"""

import argparse
import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ARCHIVE = REPO / "tests" / "diffusers_upstream" / "diffusers-tests.tar.gz"
TOKENIZER = REPO / "tests" / "fixtures" / "wan21_parity" / "components" / "google" / "umt5-xxl"

# What the extract holds: the Wan test modules, the VAE model tests, and the harness they import.
EXTRACTED_PATHS = (
    "LICENSE",
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/testing_utils.py",
    "tests/pipelines/__init__.py",
    "tests/pipelines/testing_utils",
    "tests/pipelines/wan",
    "tests/models/__init__.py",
    "tests/models/testing_utils",
    "tests/models/autoencoders/__init__.py",
    "tests/models/autoencoders/testing_utils.py",
    "tests/models/autoencoders/test_models_autoencoder_wan.py",
)
# What is run: every module under tests/pipelines/wan/ and the VAE model tests (diffusers' and the Wan 2.2 ones).
TEST_PATHS = (
    "tests/pipelines/wan",
    "tests/models/autoencoders/test_models_autoencoder_wan.py",
    "tests/models/autoencoders/test_models_autoencoder_wan_22.py",
)

TINY_T5_REPO = "hf-internal-testing/tiny-random-t5"
# The config of the Hub repo `hf-internal-testing/tiny-random-t5` (its `config.json`).
TINY_T5_CONFIG = {
    "model_type": "t5",
    "vocab_size": 1103,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 37,
    "num_layers": 5,
    "num_decoder_layers": 5,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-06,
    "initializer_factor": 0.002,
    "feed_forward_proj": "relu",
    "is_encoder_decoder": True,
    "use_cache": True,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "bos_token_id": 0,
    "decoder_start_token_id": 0,
}

_TEXT_PADDING = (
    "our DiT zero-pads the text context to 512 rows as the original Wan does; diffusers attends to the pipeline's "
    "max_sequence_length (16) rows, which changes the attention once CLIP image tokens sit in front of the text "
    "(with the padding set to 16 rows the slice matches diffusers' to 3e-8)",
    "tests/models/test_transformer_wan.py::test_unpadded_text_context_is_padded_to_512_rows_like_the_original",
)
# Failing tests whose expected numbers come from a behaviour where we follow the original Wan code instead of
# diffusers: test id -> (why, the test of ours that shows the difference). Run as usual, counted apart.
DIFFERS_BY_DESIGN = {
    "tests/pipelines/wan/test_wan_image_to_video.py::TestWanImageToVideoPipeline::test_inference": _TEXT_PADDING,
    "tests/pipelines/wan/test_wan_image_to_video.py::TestWanFLFToVideoPipeline::test_inference": _TEXT_PADDING,
    "tests/pipelines/wan/test_wan_video_to_video.py::TestWanVideoToVideoPipeline::test_inference": (
        "the video is noised by the flow-matching mix s * noise + (1 - s) * x0 whatever the scheduler; diffusers "
        "calls scheduler.add_noise, variance-preserving for the test's UniPC without use_flow_sigmas (with "
        "add_noise the slice matches diffusers' to 1e-6)",
        "tests/pipelines/test_pipeline_wan_video2video.py::"
        "test_start_latents_are_the_flow_matching_mix_whatever_the_scheduler",
    ),
}

# diffusers' VAE model tests on a tiny Wan 2.2 configuration, built on its own test classes.
WAN22_VAE_TESTS = '''"""diffusers' AutoencoderKLWan model tests on a tiny Wan 2.2 configuration (written by
scripts/run_diffusers_tests.py of wan-diffusers; diffusers tests the Wan 2.2 VAE only inside the TI2V pipelines)."""

import torch

from diffusers.utils.torch_utils import randn_tensor

from ...testing_utils import torch_device
from . import test_models_autoencoder_wan as wan21


class AutoencoderKLWan22TesterConfig(wan21.AutoencoderKLWanTesterConfig):
    @property
    def output_shape(self):
        return (3, 9, 32, 32)

    def get_init_dict(self):
        return {
            "base_dim": 3,
            "decoder_base_dim": 4,
            "z_dim": 48,
            "dim_mult": [1, 1, 1, 1],
            "num_res_blocks": 1,
            "temperal_downsample": [False, True, True],
            "is_residual": True,
            "in_channels": 12,
            "out_channels": 12,
            "patch_size": 2,
            "scale_factor_spatial": 16,
            "latents_mean": [0.0] * 48,
            "latents_std": [1.0] * 48,
        }

    def get_dummy_inputs(self):
        image = randn_tensor((2, 3, 9, 32, 32), generator=self.generator, device=torch_device)
        return {"sample": image}


class TestAutoencoderKLWan22(AutoencoderKLWan22TesterConfig, wan21.ModelTesterMixin):
    base_precision = 1e-2


class TestAutoencoderKLWan22Training(AutoencoderKLWan22TesterConfig, wan21.TestAutoencoderKLWanTraining):
    pass


class TestAutoencoderKLWan22Memory(AutoencoderKLWan22TesterConfig, wan21.TestAutoencoderKLWanMemory):
    pass


class TestAutoencoderKLWan22SlicingTiling(AutoencoderKLWan22TesterConfig, wan21.AutoencoderTesterMixin):
    pass
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--git-dir", type=Path, help="a clone or mirror of huggingface/diffusers to take the tests from"
    )
    parser.add_argument("--ref", help="the commit or tag of --git-dir (default: v<installed diffusers version>)")
    parser.add_argument("--write-archive", action="store_true", help="write the extract of --git-dir to the archive")
    parser.add_argument("--oracle", action="store_true", help="run on diffusers' own classes (no redirection)")
    parser.add_argument("--keep", type=Path, help="extract into this new folder and keep it (default: a temp folder)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument(
        "--only", choices=("pipelines", "vae"), help="run only the pipeline modules or only the VAE model modules"
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.write_archive and args.git_dir is None:
        parser.error("--write-archive needs --git-dir")
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep must name a new folder, got {args.keep}, which exists")

    import diffusers

    ref = args.ref or f"v{diffusers.__version__}"
    if args.git_dir is not None:
        tests_tar = _archive_from_git(args.git_dir, ref)
        if args.write_archive:
            ARCHIVE.parent.mkdir(parents=True, exist_ok=True)
            partial = ARCHIVE.with_suffix(".partial")
            partial.write_bytes(tests_tar)
            partial.replace(ARCHIVE)
            print(f"wrote {ARCHIVE.relative_to(REPO)} ({len(tests_tar)} bytes) from {ref}")
            return 0
    else:
        tests_tar = ARCHIVE.read_bytes()

    root = Path(tempfile.mkdtemp(prefix="diffusers-tests-")) if args.keep is None else args.keep
    try:
        _prepare(root, tests_tar, redirect=not args.oracle)
        return _run(root, args)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def _archive_from_git(git_dir: Path, ref: str) -> bytes:
    """The extracted paths at `ref` of the diffusers repository in `git_dir`, as a gzipped tar."""
    try:
        return subprocess.run(
            ["git", f"--git-dir={git_dir}", "archive", "--format=tar.gz", ref, *EXTRACTED_PATHS],
            check=True,
            capture_output=True,
        ).stdout
    except subprocess.CalledProcessError as error:
        tags = subprocess.run(
            ["git", f"--git-dir={git_dir}", "tag", "--sort=-creatordate"], capture_output=True, text=True
        ).stdout.split()[:5]
        raise SystemExit(
            f"`--ref` {ref} cannot be read from {git_dir}: {error.stderr.decode().strip()}; the newest tags there are "
            f"{tags}: pass one with --ref"
        ) from None


def _prepare(root: Path, tests_tar: bytes, redirect: bool) -> None:
    with tarfile.open(fileobj=io.BytesIO(tests_tar), mode="r:gz") as archive:
        archive.extractall(root, filter="data")
    hub = root / "hub" / "tiny-random-t5"
    hub.mkdir(parents=True)
    (hub / "config.json").write_text(json.dumps(TINY_T5_CONFIG, indent=2))
    for name in ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TOKENIZER / name, hub / name)
    vae22 = root / "tests" / "models" / "autoencoders" / "test_models_autoencoder_wan_22.py"
    vae22.write_text(WAN22_VAE_TESTS)
    import wan_diffusers

    ours = set(wan_diffusers.__all__)
    for path in (root / "tests").rglob("test_*.py"):
        source = path.read_text().replace(TINY_T5_REPO, str(hub))
        if redirect:
            source = _redirect_imports(source, ours)
        path.write_text(source)


def _redirect_imports(source: str, ours: set[str]) -> str:
    """Import again from wan_diffusers, after the module's last top-level `from diffusers import ...`, every name
    imported from diffusers that wan_diffusers exports."""
    imports = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.ImportFrom) and node.module == "diffusers" and node.level == 0
    ]
    names = sorted({alias.name for node in imports for alias in node.names if alias.name in ours})
    if not names:
        return source
    lines = source.splitlines(keepends=True)
    end = max(node.end_lineno for node in imports)
    redirect = f"from wan_diffusers import {', '.join(names)}  # redirected by wan-diffusers' run_diffusers_tests.py\n"
    return "".join(lines[:end]) + redirect + "".join(lines[end:])


def _run(root: Path, args: argparse.Namespace) -> int:
    report = root / "report.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"]
    paths = [path for path in TEST_PATHS if args.only is None or ("pipelines" in path) == (args.only == "pipelines")]
    command += ["--rootdir", str(root), *paths, *args.pytest_args]
    if args.keyword:
        command += ["-k", args.keyword]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run(command, cwd=root, env=environment)
    if not report.exists():
        print("pytest wrote no report: see its output above", file=sys.stderr)
        return 1
    counts, by_design = _counts(report, {} if args.oracle else DIFFERS_BY_DESIGN)
    classes = "diffusers' own classes (--oracle)" if args.oracle else "wan_diffusers' classes"
    print(f"\ndiffusers' tests on {classes}:")
    columns = ("passed", "failed", "skipped", "error", "by design")
    print(f"{'module':<58} {'passed':>7} {'failed':>7} {'skipped':>8} {'errors':>7} {'differs by design':>18}")
    total = sum(counts.values(), Counter())
    for module, count in [*sorted(counts.items()), ("total", total)]:
        print(f"{module:<58} " + " ".join(f"{count[c]:>{w}}" for c, w in zip(columns, (7, 7, 8, 7, 18))))
    for test_id in by_design:
        reason, ours = DIFFERS_BY_DESIGN[test_id]
        print(f"\ndiffers by design: {test_id}\n  why: {reason}\n  shown by: {ours}")
    return 1 if total["failed"] or total["error"] else 0


def _counts(report: Path, by_design: dict) -> tuple[dict[str, Counter], list[str]]:
    """passed / failed / skipped / error / by design per test module, from pytest's JUnit XML report, and the ids of
    the failures counted as differing by design (failures listed in `by_design`)."""
    counts: dict[str, Counter] = {}
    differing = []
    for case in ElementTree.parse(report).iter("testcase"):
        classname = case.get("classname", "")
        module = re.sub(r"\.[A-Z]\w*$", "", classname).replace(".", "/") + ".py"
        test_id = f"{module}::{classname.rpartition('.')[2]}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
        if outcome == "failed" and test_id in by_design:
            outcome = "by design"
            differing.append(test_id)
        counts.setdefault(module, Counter())[outcome] += 1
    return counts, differing


if __name__ == "__main__":
    sys.exit(main())
