"""Put a Wan pipeline on the ranks of a torch.distributed job: context parallel, CFG-parallel and FSDP2.

Everything here is glue over existing engines: diffusers' context-parallel engine (`ModelMixin.enable_parallelism`
with a `ContextParallelConfig`, driven by the DiT's `_cp_plan`), a diffusers `ModelHook` that splits the guidance
batch (`cfg_parallel.py`), and `torch.distributed.fsdp.fully_shard`. Every rank runs the same pipeline call with the
same seed; the ranks exchange activations inside the DiT, and all of them end the call with the same latents.
"""

import os

import torch
import torch.distributed as dist
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.utils import logging

from ..hooks.text_encoder_on_cpu import is_kept_on_cpu
from .attention import accelerator_count_at_least_one, register_math_attention_with_lse
from .cfg_parallel import apply_cfg_parallel
from .layout import ParallelLayout

logger = logging.get_logger(__name__)

# Pipeline components that are DiTs: Wan 2.2's second expert, where present, is parallelised like the first.
_TRANSFORMERS = ("transformer", "transformer_2")
_TOKEN_CHECK_HOOK = "wan_context_parallel_token_check"
# Attention backends of diffusers that can return the log-sum-exp Ring attention merges by.
_BACKENDS_WITH_LSE = ("_native_cudnn", "_native_flash", "flash", "flash_hub", "_flash_3_hub", "sage", "sage_hub")


def init_distributed(device_type: str | None = None) -> torch.device:
    """Join the job `torchrun` started (NCCL on CUDA, gloo on the CPU) and return this rank's device.

    `device_type` "cpu" runs the ranks on the CPU even where CUDA is available. Without torchrun's environment
    (`WORLD_SIZE` unset) this is a single process: nothing is initialised and the default device is returned.
    """
    cuda = torch.cuda.is_available() and device_type != "cpu"
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def is_main_process() -> bool:
    """True on rank 0 of a distributed job, and in a single process: the rank that writes files."""
    return not dist.is_initialized() or dist.get_rank() == 0


def transformers_of(pipe) -> list[torch.nn.Module]:
    """The pipeline's DiTs: `transformer`, and Wan 2.2's `transformer_2` where it has one."""
    return [model for name in _TRANSFORMERS if (model := getattr(pipe, name, None)) is not None]


def parallelize_pipeline(pipe, layout: ParallelLayout) -> None:
    """Spread `pipe` over the ranks of the current torch.distributed job according to `layout`, in place.

    Call it on every rank after `dist.init_process_group` and after placing the pipeline on the rank's device, then
    call the pipeline on every rank with the same arguments (same seed): each rank returns the same video, within
    float32 rounding of a single process. `layout.cfg_parallel` turns on `pipe.enable_batched_guidance()`.

    Example (`torchrun --nproc_per_node 4 script.py`):

    ```py
    >>> import torch
    >>> from wan_diffusers import WanPipeline
    >>> from wan_diffusers.distributed import ParallelLayout, init_distributed, is_main_process, parallelize_pipeline
    >>> from wan_diffusers.utils.video_io import export_to_mp4

    >>> device = init_distributed()
    >>> pipe = WanPipeline.from_pretrained("Wan-AI/Wan2.1-T2V-14B-Diffusers", torch_dtype=torch.bfloat16).to(device)
    >>> parallelize_pipeline(pipe, ParallelLayout(ulysses_degree=2, cfg_parallel=True))
    >>> video = pipe("A cat walks on the grass", generator=torch.Generator().manual_seed(0)).frames[0]
    >>> if is_main_process():
    ...     export_to_mp4(video, "cat.mp4")
    ```
    """
    layout.check_world_size(_world_size())
    transformers = transformers_of(pipe)
    for model in transformers:  # every check before anything changes
        layout.check_model(model.config.num_attention_heads)
    meshes = _device_meshes(layout)
    for model in transformers:
        parallelize_transformer(model, layout, meshes)
    if layout.cfg_parallel:
        pipe.enable_batched_guidance()
    if layout.fsdp and getattr(pipe, "text_encoder", None) is not None:
        if is_kept_on_cpu(pipe.text_encoder):
            raise ValueError("FSDP shards the text encoder over the ranks' devices: don't keep it on the CPU too")
        shard_text_encoder(pipe.text_encoder, meshes["fsdp"])


def parallelize_transformer(model, layout: ParallelLayout, meshes: dict | None = None) -> None:
    """Spread one DiT over the ranks of the current job, in place: what `parallelize_pipeline` does to each DiT.

    Under `layout.cfg_parallel` the model splits every batch over two rank groups, so the caller must put both
    guidance branches in one batch. `meshes` (from a previous call) lets several models share process groups.
    """
    layout.check_world_size(_world_size())
    layout.check_model(model.config.num_attention_heads)
    meshes = meshes or _device_meshes(layout)
    if layout.context_degree > 1:
        _apply_context_parallel(model, layout, meshes["cfg, ring, ulysses"])
    if layout.cfg_parallel:
        apply_cfg_parallel(model, meshes["cfg, ring, ulysses"]["cfg"].get_group())
    if layout.fsdp:
        shard_transformer(model, meshes["fsdp"])


def _world_size() -> int:
    if not dist.is_initialized():
        raise RuntimeError("parallelizing needs a torch.distributed job: call init_distributed() first")
    return dist.get_world_size()


def _device_meshes(layout: ParallelLayout) -> dict:
    """The `cfg x ring x ulysses` grid of the ranks, and the flat one FSDP shards over."""
    from torch.distributed.device_mesh import init_device_mesh

    # gloo (CPU ranks, even on a machine with an accelerator) or the accelerator's backend
    device_type = "cpu" if dist.get_backend() == "gloo" else torch._C._get_accelerator().type
    shape = (layout.cfg_degree, layout.ring_degree, layout.ulysses_degree)
    meshes = {"cfg, ring, ulysses": init_device_mesh(device_type, shape, mesh_dim_names=("cfg", "ring", "ulysses"))}
    if layout.fsdp:
        meshes["fsdp"] = init_device_mesh(device_type, (dist.get_world_size(),), mesh_dim_names=("fsdp",))
    return meshes


def _apply_context_parallel(model, layout: ParallelLayout, mesh) -> None:
    from diffusers import ContextParallelConfig

    if layout.ring_degree > 1:
        backend = _attention_backend(model)
        if backend not in _BACKENDS_WITH_LSE and backend != "_native_math":
            # Ring merges each key/value chunk's partial result by its log-sum-exp; see attention.py.
            replacement = register_math_attention_with_lse()
            if torch.cuda.is_available() and model.dtype in (torch.bfloat16, torch.float16):
                replacement = "_native_cudnn"
            logger.info(f"Ring attention needs an attention backend that returns the log-sum-exp: {replacement}")
            model.set_attention_backend(replacement)
    if _attention_backend(model) == "_native_math":
        register_math_attention_with_lse()
    config = ContextParallelConfig(
        ring_degree=layout.ring_degree, ulysses_degree=layout.ulysses_degree, mesh=mesh["ring", "ulysses"]
    )
    with accelerator_count_at_least_one():
        model.enable_parallelism(config=config)
    HookRegistry.check_if_exists_or_initialize(model).register_hook(TokenCheckHook(layout), _TOKEN_CHECK_HOOK)


def _attention_backend(model) -> str:
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    for module in model.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_attention_backend"):
            backend = processor._attention_backend
            return str(getattr(backend, "value", backend) or _AttentionBackendRegistry.get_active_backend()[0].value)
    return _AttentionBackendRegistry.get_active_backend()[0].value


class TokenCheckHook(ModelHook):
    """Before a context-parallel DiT runs: a clear error if its video tokens do not split over the ranks (diffusers'
    split would fail deep inside with a shape error)."""

    _is_stateful = False

    def __init__(self, layout: ParallelLayout):
        super().__init__()
        self.layout = layout

    def pre_forward(self, module, *args, **kwargs):
        hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        frames, height, width = hidden_states.shape[2:]
        patch_t, patch_h, patch_w = module.config.patch_size
        tokens = (frames // patch_t) * (height // patch_h) * (width // patch_w)
        self.layout.check_tokens(
            tokens, f"the latent video {frames} x {height} x {width} (patches of {patch_h} x {patch_w})"
        )
        return args, kwargs


def shard_transformer(model: torch.nn.Module, mesh) -> None:
    """FSDP2 over `mesh`: every block (and VACE hint block) is one unit, gathered just before it runs and freed after;
    the embeddings and the head form the root unit."""
    from torch.distributed.fsdp import fully_shard

    for block in [*model.blocks, *getattr(model, "vace_blocks", [])]:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def shard_text_encoder(text_encoder: torch.nn.Module, mesh) -> None:
    """FSDP2 of the umT5 encoder over `mesh`, one unit per transformer block (the original's `--t5_fsdp`)."""
    from torch.distributed.fsdp import fully_shard

    for block in text_encoder.encoder.block:
        fully_shard(block, mesh=mesh)
    fully_shard(text_encoder, mesh=mesh)
