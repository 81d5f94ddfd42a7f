"""Multi-process generation on torch.distributed: context parallel (Ulysses, Ring), CFG-parallel and FSDP2.

`parallelize_pipeline(pipe, ParallelLayout(...))` spreads a pipeline over the ranks of a job; `init_distributed()`
joins the job `torchrun` started. `wan-diffusers generate` exposes the same as flags (`cli.py` here). Nothing runs at
import.
"""

from .layout import ParallelLayout
from .parallelize import (
    init_distributed,
    is_main_process,
    parallelize_pipeline,
    parallelize_transformer,
    transformers_of,
)

__all__ = [
    "ParallelLayout",
    "init_distributed",
    "is_main_process",
    "parallelize_pipeline",
    "parallelize_transformer",
    "transformers_of",
]
