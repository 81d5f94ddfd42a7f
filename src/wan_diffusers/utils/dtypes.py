"""The dtypes the command line and the converter take by name, and what `auto` means."""

FLOAT_DTYPES = ("bfloat16", "float16", "float32")  # names of torch dtypes
AUTO = "auto"  # bfloat16 on a GPU, float32 on a CPU


def dtype_from_name(name: str, device=None):
    """The torch dtype called `name` (one of `FLOAT_DTYPES`, or `AUTO` for the one that suits `device`)."""
    import torch

    if name == AUTO:
        return torch.bfloat16 if device is not None and torch.device(device).type == "cuda" else torch.float32
    if name not in FLOAT_DTYPES:
        raise ValueError(f"`dtype` must be one of {(AUTO, *FLOAT_DTYPES)}, got {name!r}")
    return getattr(torch, name)
