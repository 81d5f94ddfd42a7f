"""Tiny random-weight Wan pipelines, built in code: the offline default of `wan-diffusers generate`.

They have the real architecture (umT5 encoder, CLIP vision tower, Wan VAE and DiT) with about 150,000 parameters in
all instead of billions, and random weights from a fixed seed, so the whole path (prompt, conditioning, sampling,
decoding, mp4) runs on a CPU in seconds without any download. Their frames are noise: they show that the machinery
works, not what Wan generates. The tokenizer is a character-level unigram model made here from a fixed vocabulary
(Latin letters, digits and punctuation; other characters become `<unk>`).
"""

import string

import torch

from ..tasks import TASK_NAMES
from .sampling import default_scheduler

_TEXT_DIM = 32
_IMAGE_DIM = 24
_CLIP_IMAGE_SIZE = 32
_CLIP_PATCH_SIZE = 8
_CLIP_TOKENS = (_CLIP_IMAGE_SIZE // _CLIP_PATCH_SIZE) ** 2 + 1


def demo_tokenizer():
    """A umT5-style tokenizer (`<pad>` 0, `</s>` 1, `<unk>` 2, `</s>` appended) over single characters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    characters = string.ascii_letters + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
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
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

    from ..models.autoencoder_kl_wan import AutoencoderKLWan
    from ..models.transformer_wan import WanTransformer3DModel
    from ..models.transformer_wan_vace import WanVACETransformer3DModel
    from .pipeline_wan import WanPipeline
    from .pipeline_wan_i2v import WanImageToVideoPipeline
    from .pipeline_wan_vace import WanVACEPipeline
    from .pipeline_wan_video2video import WanVideoToVideoPipeline

    if task not in TASK_NAMES:
        raise ValueError(f"`task` must be one of {TASK_NAMES}, got {task!r}")
    tokenizer = demo_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=_TEXT_DIM,
            d_kv=16,
            d_ff=64,
            num_layers=2,
            num_heads=2,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
        )
    ).eval()
    vae = AutoencoderKLWan(
        base_dim=4, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()
    image_task = task in ("i2v", "flf2v")
    transformer_class, vace_config = WanTransformer3DModel, {}
    if task == "vace":  # a hint after each of the two blocks, from the usual 96 control channels
        transformer_class, vace_config = WanVACETransformer3DModel, {"vace_layers": [0, 1]}
    transformer = transformer_class(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=36 if image_task else 16,
        out_channels=16,
        text_dim=_TEXT_DIM,
        freq_dim=32,
        ffn_dim=64,
        num_layers=2,
        image_dim=_IMAGE_DIM if image_task else None,
        added_kv_proj_dim=32 if image_task else None,
        pos_embed_seq_len=2 * _CLIP_TOKENS if task == "flf2v" else None,
        **vace_config,
    ).eval()
    components = dict(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=default_scheduler(task),
        transformer=transformer,
    )
    if task == "t2v":
        return WanPipeline(**components)
    if task == "v2v":
        return WanVideoToVideoPipeline(**components)
    if task == "vace":
        return WanVACEPipeline(**components)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=_IMAGE_DIM,
            intermediate_size=48,
            projection_dim=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=_CLIP_IMAGE_SIZE,
            patch_size=_CLIP_PATCH_SIZE,
        )
    ).eval()
    # no `image_processor`: the pipelines prepare CLIP's input themselves, at `image_encoder.config.image_size`
    return WanImageToVideoPipeline(**components, image_encoder=image_encoder)
