"""Two gaps of diffusers 0.42's context-parallel engine on a CPU (gloo) job, closed from outside.

1. `ModelMixin.enable_parallelism` places each rank on accelerator `rank % torch.accelerator.device_count()`
   (`ModelMixin._resolve_parallel_config`); without an accelerator the count is 0 and it fails with
   `ZeroDivisionError`. diffusers offers no argument to name the device, so `accelerator_count_at_least_one` reports
   one device while `enable_parallelism` runs (and only when there is none): the rank's device is then `cpu:0`, which
   is what a CPU rank uses anyway. Nothing else reads the patched function in that window.
2. Ring attention merges the partial results of each key/value chunk by their log-sum-exp (LSE), and the `native`
   backend cannot return one (its forward op raises for `return_lse=True`); diffusers' backends that can
   (`_native_cudnn`, `_native_flash`, `flash`, `sage`) are CUDA-only. `register_math_attention_with_lse` registers,
   through diffusers' attention dispatch registry (`_AttentionBackendRegistry.register`), a context-parallel-capable
   version of the `_native_math` backend: without a parallel config it is diffusers' own `_native_math` unchanged;
   under context parallelism it runs diffusers' templated Ulysses / Ring / unified attention with a forward op that
   computes `softmax(Q K^T * scale) V` and its LSE in float32. The registry keys backends by the members of the closed
   enum `AttentionBackendName`, so a new name cannot be added; `_native_math` is the member whose meaning (plain
   matrix products, any device) fits. It is inference only: its backward raises.
"""

import contextlib

import torch

_MATH_BACKEND = "_native_math"
_registered = False


@contextlib.contextmanager
def accelerator_count_at_least_one():
    """While active, `torch.accelerator.device_count()` returns 1 on a machine without an accelerator (see 1. above)."""
    if torch.accelerator.device_count() > 0:
        yield
        return
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def _math_forward_op(
    ctx,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    return_lse: bool = False,
    _save_ctx: bool = True,
    _parallel_config=None,
):
    """Attention of one key/value chunk: query (B, S_q, H, D), key and value (B, S_k, H, D) -> out (B, S_q, H, D)
    in the query's dtype and, with `return_lse`, the LSE (B, S_q, H) in float32 (the layout diffusers' ring merge
    expects, as `_native_flash_attention_forward_op` returns it)."""
    if attn_mask is not None or dropout_p or is_causal or enable_gqa:
        raise ValueError(
            "the context-parallel `_native_math` backend of wan_diffusers supports plain attention only (no mask, "
            "dropout, causal or grouped-query attention), which is all Wan's self-attention uses"
        )
    dtype = query.dtype
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    query, key, value = (x.transpose(1, 2).float() for x in (query, key, value))  # (B, H, S, D)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale  # (B, H, S_q, S_k)
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, S_q)
    out = torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), value)
    out = out.transpose(1, 2).to(dtype)
    return (out, lse.transpose(1, 2).contiguous()) if return_lse else out


def _math_backward_op(ctx, grad_out, *args, **kwargs):
    raise NotImplementedError("the context-parallel `_native_math` backend of wan_diffusers is for inference only")


def register_math_attention_with_lse() -> str:
    """Make diffusers' `_native_math` attention backend context-parallel capable (Ring included); idempotent.

    Returns the backend name to pass to `model.set_attention_backend`. See the module docstring for why this is
    `_native_math` and what changes: nothing, unless a context-parallel config is passed.
    """
    global _registered
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        _AttentionBackendRegistry,
        _templated_context_parallel_attention,
    )

    if _registered:
        return _MATH_BACKEND
    name = AttentionBackendName(_MATH_BACKEND)
    diffusers_math_attention = _AttentionBackendRegistry._backends[name]
    constraints = _AttentionBackendRegistry._constraints[name]

    @_AttentionBackendRegistry.register(name, constraints=constraints, supports_context_parallel=True)
    def _math_attention_with_lse(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
        return_lse: bool = False,
        _parallel_config=None,
    ) -> torch.Tensor:
        if _parallel_config is None:
            return diffusers_math_attention(
                query=query,
                key=key,
                value=value,
                attn_mask=attn_mask,
                dropout_p=dropout_p,
                is_causal=is_causal,
                scale=scale,
                enable_gqa=enable_gqa,
                return_lse=return_lse,
            )
        return _templated_context_parallel_attention(
            query,
            key,
            value,
            attn_mask,
            dropout_p,
            is_causal,
            scale,
            enable_gqa,
            return_lse,
            forward_op=_math_forward_op,
            backward_op=_math_backward_op,
            _parallel_config=_parallel_config,
        )

    _registered = True
    return _MATH_BACKEND
