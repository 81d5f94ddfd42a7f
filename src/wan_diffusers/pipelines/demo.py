"""Tiny random-weight Wan pipelines, built in code: the offline default of `wan-diffusers generate`.

They have the real architecture (umT5 encoder, CLIP vision tower, Wan VAE and DiT) at the tests' tiny sizes (below:
tens of thousands of parameters instead of billions) with random weights from a fixed seed, so the whole path
(prompt, conditioning, sampling, decoding, mp4) runs on a CPU in seconds without any download. Their frames are noise: they show that the machinery
works, not what Wan generates. The tokenizer is a character-level unigram model made here from a fixed vocabulary
(Latin letters, digits and punctuation; other characters become `<unk>`).
"""

import string

import torch

from ..tasks import TASK_NAMES
from .sampling import default_scheduler

# The tiny sizes, shared with the tests (tests/factories): 2 blocks of 2 heads of 12 channels (RoPE split 4/4/4), text
# width 16, CLIP width 20 on 8 x 8 images (4 x 4 patches: 5 tokens), the released VAE layout with one residual block
# per stage, all stages 3 wide. Small enough to run in milliseconds, large enough that every path is exercised.
TEXT_DIM = 16
IMAGE_DIM = 20
CLIP_IMAGE_SIZE = 8
CLIP_TOKENS = (CLIP_IMAGE_SIZE // 4) ** 2 + 1
T2V_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=16,
    out_channels=16,
    text_dim=TEXT_DIM,
    freq_dim=32,
    ffn_dim=48,
    num_layers=2,
)
I2V_CONFIG = dict(T2V_CONFIG, in_channels=36, image_dim=IMAGE_DIM, added_kv_proj_dim=24)
FLF2V_CONFIG = dict(I2V_CONFIG, pos_embed_seq_len=2 * CLIP_TOKENS)
# 3 blocks with hints after blocks 0 and 2, so a block without a hint sits between two with one (as in the releases:
# every 2nd block for 1.3B, every 5th for 14B), from the usual 96 control channels.
VACE_CONFIG = dict(T2V_CONFIG, num_layers=3, vace_layers=[0, 2], vace_in_channels=96)
TRANSFORMER_CONFIGS = {
    "t2v": T2V_CONFIG,
    "i2v": I2V_CONFIG,
    "flf2v": FLF2V_CONFIG,
    "v2v": T2V_CONFIG,
    "vace": VACE_CONFIG,
}
VAE_CONFIG = {
    "base_dim": 3,
    "z_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}
TEXT_ENCODER_CONFIG = dict(
    d_model=TEXT_DIM,
    d_kv=8,
    d_ff=32,
    num_layers=2,
    num_heads=2,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    feed_forward_proj="gated-gelu",
)
IMAGE_ENCODER_CONFIG = dict(
    hidden_size=IMAGE_DIM,
    intermediate_size=2 * IMAGE_DIM,
    projection_dim=8,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=CLIP_IMAGE_SIZE,
    patch_size=4,
    hidden_act="gelu",
)


def tiny_text_encoder(vocab_size: int, **overrides):
    """A random 2-layer `UMT5EncoderModel` (seed it first), `TEXT_ENCODER_CONFIG` with `overrides`."""
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(vocab_size=vocab_size, **{**TEXT_ENCODER_CONFIG, **overrides})).eval()


def tiny_image_encoder(**overrides):
    """A random 2-layer `CLIPVisionModelWithProjection` (seed it first), `IMAGE_ENCODER_CONFIG` with `overrides`."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(**{**IMAGE_ENCODER_CONFIG, **overrides})).eval()


def demo_tokenizer(words: tuple[str, ...] = ()):
    """A umT5-style tokenizer (`<pad>` 0, `</s>` 1, `<unk>` 2, `</s>` appended) over single characters, plus `words`
    kept whole (one token each, ids 4, 5, ...: a word scores -2, far above its spelling in characters)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    characters = string.ascii_letters + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)] + [("▁" + word, -2.0) for word in words]
    vocab += [("▁" + c, -4.0) for c in characters] + [(c, -5.0) for c in characters]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_demo_pipeline(task: str = "t2v", seed: int = 0):
    """A tiny random-weight pipeline for `task` (t2v, i2v, flf2v, v2v or vace), float32, on the CPU."""
    import wan_diffusers

    from ..models.autoencoder_kl_wan import AutoencoderKLWan
    from ..models.transformer_wan import WanTransformer3DModel
    from ..models.transformer_wan_vace import WanVACETransformer3DModel
    from ..tasks import default_variant

    if task not in TASK_NAMES:
        raise ValueError(f"`task` must be one of {TASK_NAMES}, got {task!r}")
    tokenizer = demo_tokenizer()
    torch.manual_seed(seed)
    components = dict(
        tokenizer=tokenizer,
        text_encoder=tiny_text_encoder(len(tokenizer)),
        vae=AutoencoderKLWan(**VAE_CONFIG).eval(),
        scheduler=default_scheduler(task),
        transformer=(WanVACETransformer3DModel if task == "vace" else WanTransformer3DModel)(
            **TRANSFORMER_CONFIGS[task]
        ).eval(),
    )
    if task in ("i2v", "flf2v"):
        # no `image_processor`: the pipelines prepare CLIP's input themselves, at `image_encoder.config.image_size`
        components["image_encoder"] = tiny_image_encoder()
    return getattr(wan_diffusers, default_variant(task).pipeline_class)(**components)
