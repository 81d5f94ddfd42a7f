"""What every benchmark here shares: interleaved timing, synchronisation and the JSON-lines results file.

Each benchmark runs wan-diffusers and diffusers' built-in Wan on identical weights and inputs, in one process, and
prints ratios ours / diffusers. Timings alternate the two implementations (ours, diffusers, diffusers, ours, ...) so
that a drift of the machine (clocks, other jobs) affects both alike; the medians are reported with their range.
"""

import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    calls: dict[str, Callable[[], object]], device: torch.device, warmup: int, iters: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and process-CPU seconds of each call, `iters` times each, alternating which one goes first.

    The process CPU time (all threads) is the steadier figure on a CPU that other jobs share.
    """
    for _ in range(warmup):
        for call in calls.values():
            call()
    wall, cpu = {name: [] for name in calls}, {name: [] for name in calls}
    for index in range(iters):
        order = list(calls) if index % 2 == 0 else list(reversed(calls))
        for name in order:
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            calls[name]()
            synchronize(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def summarize_times(row: dict, wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> dict:
    """Add `<name>_s` (median), `<name>_s_min`, `<name>_s_max`, `<name>_cpu_s` and the ours / diffusers ratios."""
    for name in wall:
        row[f"{name}_s"] = statistics.median(wall[name])
        row[f"{name}_s_min"], row[f"{name}_s_max"] = min(wall[name]), max(wall[name])
        row[f"{name}_cpu_s"] = statistics.median(cpu[name])
    row["ratio_time"] = row["ours_s"] / row["diffusers_s"]
    row["ratio_cpu_time"] = row["ours_cpu_s"] / row["diffusers_cpu_s"]
    return row


def format_times(row: dict) -> str:
    return (
        f"ours {row['ours_s']:.3f} s ({row['ours_s_min']:.3f}-{row['ours_s_max']:.3f}), "
        f"diffusers {row['diffusers_s']:.3f} s ({row['diffusers_s_min']:.3f}-{row['diffusers_s_max']:.3f}), "
        f"ratio {row['ratio_time']:.3f}; process CPU time ratio {row['ratio_cpu_time']:.3f}"
    )


def append_json_lines(path: str, rows: list[dict]) -> None:
    with open(path, "a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def built_in(dtype: torch.dtype, device: torch.device, cls: type, **config) -> torch.nn.Module:
    """`cls(**config)` created directly on `device` in `dtype`, in eval mode: a 14B model never exists in float32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return cls(**config).eval()
    finally:
        torch.set_default_dtype(previous)


def throughput(row: dict, name: str, flops_per_call: float, peak_tflops: float | None) -> dict:
    """Add the achieved TFLOP/s of `name`'s median time and, with a known peak rate, the fraction of the floor."""
    row[f"{name}_tflops"] = flops_per_call / 1e12 / row[f"{name}_s"]
    if peak_tflops:
        row[f"{name}_fraction_of_floor"] = row[f"{name}_tflops"] / peak_tflops
    return row


# ---------------------------------------------------------------------------------------------------------------------
# Peak memory on the CPU: the resident set size of a fresh process


def run_in_fresh_process(function: Callable, *args):
    """`function(*args)` in a new interpreter, so that nothing another measurement allocated is in its peak.

    glibc is told to return every allocation of 64 KiB or more to the system when it is freed
    (`MALLOC_MMAP_THRESHOLD_`), so that the resident set follows the memory actually in use. `function` must be
    defined at the top level of an importable module or of the benchmark script.
    """
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)  # read by glibc when the child process starts
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


class PeakResidentMemory:
    """Peak resident memory of this process between `start()` and `stop()`, beyond what was resident at `start()`.

    Linux only: it resets the kernel's high-water mark (`/proc/self/clear_refs`) and reads `VmHWM`.
    """

    def start(self) -> None:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set size (VmHWM) to the current one
        self.before = _proc_status_bytes("VmRSS")

    def stop(self) -> int:
        return _proc_status_bytes("VmHWM") - self.before


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}: peak RSS is only measured on Linux")
