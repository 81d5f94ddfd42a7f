"""Smaller DiT weights for inference, through existing engines: diffusers' layerwise casting and optimum-quanto.

`quantize_transformer(transformer, recipe)` applies one recipe to the Linear layers of the transformer blocks (the
embeddings, the output head and the float32 modules of `_keep_in_fp32_modules` keep their precision, as the
original keeps them in float32) and returns what it saved:

| recipe | engine | weights of the block Linears | compute |
|---|---|---|---|
| `fp8-storage` | diffusers' `enable_layerwise_casting` (float8_e4m3fn storage) | 1 byte | the model's dtype, upcast per layer |
| `int8` | optimum-quanto `qint8` weight-only (a scale per output row) | 1 byte + 4 per row | the model's dtype |
| `fp8` | optimum-quanto `qfloat8_e4m3fn` weight-only (a scale per output row) | 1 byte + 4 per row | the model's dtype |

The block Linears hold almost all of a released DiT's weights: from bf16, each recipe about halves the DiT (14B:
28.95 to 14.90 GB; 1.3B: 2.87 to 1.48 GB; `quantized_bytes` on `memory.model.released_transformer`). fp8-storage works with every accelerator and offloading;
quanto's int8 and fp8 run on CUDA and on the CPU. The error of each against the unquantized model, measured on the
tiny test models, is in tests/README.md.
"""

from dataclasses import dataclass

import torch

from .memory.model import module_bytes

RECIPES = ("fp8-storage", "int8", "fp8")
_BLOCK_LINEARS = ("blocks.*", "vace_blocks.*")  # quanto's fnmatch patterns


@dataclass(frozen=True)
class QuantizationReport:
    recipe: str
    bytes_before: int
    bytes_after: int

    @property
    def saved_bytes(self) -> int:
        return self.bytes_before - self.bytes_after

    def __str__(self) -> str:
        return (
            f"{self.recipe}: DiT weights {self.bytes_before / 1e9:.2f} -> {self.bytes_after / 1e9:.2f} GB "
            f"(saves {self.saved_bytes / 1e9:.2f} GB)"
        )


def quantize_transformer(transformer: torch.nn.Module, recipe: str) -> QuantizationReport:
    """Apply `recipe` (one of `RECIPES`) to `transformer` in place; returns the weight bytes before and after.

    Example:
        ```py
        >>> pipe = WanPipeline.from_pretrained("Wan-AI/Wan2.1-T2V-14B-Diffusers", torch_dtype=torch.bfloat16)
        >>> print(quantize_transformer(pipe.transformer, "int8"))  # before moving it to the GPU
        ```
    """
    if recipe not in RECIPES:
        raise ValueError(f"`recipe` must be one of {RECIPES}, got {recipe!r}")
    before = module_bytes(transformer)
    if recipe == "fp8-storage":
        compute_dtype = _float_dtype(transformer)
        transformer.enable_layerwise_casting(
            storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype, skip_modules_pattern=_skipped(transformer)
        )
    else:
        from optimum.quanto import freeze, qfloat8_e4m3fn, qint8, quantize

        quantize(
            transformer,
            weights={"int8": qint8, "fp8": qfloat8_e4m3fn}[recipe],
            include=list(_BLOCK_LINEARS),
            exclude=[f"*{name}*" for name in transformer._keep_in_fp32_modules or []],
        )
        freeze(transformer)
    return QuantizationReport(recipe, before, module_bytes(transformer))


def quantized_bytes(transformer: torch.nn.Module, recipe: str) -> int:
    """The DiT's weight bytes after `recipe`, computed without quantizing (works on the meta device)."""
    if recipe not in RECIPES:
        raise ValueError(f"`recipe` must be one of {RECIPES}, got {recipe!r}")
    total = module_bytes(transformer)
    keep = set(transformer._keep_in_fp32_modules or [])
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[0] in ("blocks", "vace_blocks"):
            if keep & set(name.split(".")):
                continue
            weight = module.weight
            total -= weight.numel() * weight.element_size()
            # quanto keeps one scale per output row, in the weight's dtype
            total += weight.numel() + (0 if recipe == "fp8-storage" else weight.element_size() * weight.shape[0])
            if recipe == "fp8-storage" and module.bias is not None:  # layerwise casting stores the bias too
                total -= module.bias.numel() * (module.bias.element_size() - 1)
    return total


def _float_dtype(module: torch.nn.Module) -> torch.dtype:
    return next((p.dtype for p in module.parameters() if p.dtype in (torch.bfloat16, torch.float16)), torch.float32)


def _skipped(transformer: torch.nn.Module) -> list[str]:
    """Layerwise casting's skip patterns: the model's own, its float32 modules and everything outside the blocks."""
    patterns = list(transformer._skip_layerwise_casting_patterns or [])
    patterns += list(transformer._keep_in_fp32_modules or [])
    return patterns + [r"^(?!blocks|vace_blocks|$)"]  # the root module ("") and the block lists stay in
