"""The model card of a converted repo (conversion/model_card.py): YAML front matter, pipeline tag, usage, contents."""

import pytest

from wan_diffusers.conversion.model_card import ComponentRow, ModelCardInfo, front_matter, render_model_card


def card_info(task="i2v", size="14B", resolution="480p", base_model="Wan-AI/Wan2.1-I2V-14B-480P", **overrides):
    rows = (
        ComponentRow(
            "transformer",
            "wan_diffusers.WanTransformer3DModel",
            "`config.json` + shards",
            16_396_000_000,
            "bfloat16 (float32: 242 tensors)",
        ),
        ComponentRow("vae", "wan_diffusers.AutoencoderKLWan", "`Wan2.1_VAE.pth`", 126_900_000, "float32"),
        ComponentRow("tokenizer", "transformers.T5TokenizerFast", "`google/umt5-xxl/` (copied)", None, "-"),
    )
    fields = dict(
        release_name="Wan2.1-I2V-14B-480P",
        task=task,
        base_model=base_model,
        pipeline_class="WanImageToVideoPipeline",
        repo_id="someone/Wan2.1-I2V-14B-480P-Diffusers",
        shift=3.0,
        shift_reason="the original's default",
        resolution=resolution,
        size=size,
        components=rows,
        converter_version="0.1.0",
    )
    return ModelCardInfo(**(fields | overrides))


def test_front_matter_parses_and_has_the_hub_fields():
    card = render_model_card(card_info())
    metadata = front_matter(card)
    assert metadata["license"] == "apache-2.0"
    assert metadata["library_name"] == "diffusers"
    assert metadata["pipeline_tag"] == "image-to-video"
    assert metadata["base_model"] == "Wan-AI/Wan2.1-I2V-14B-480P"
    assert {"wan", "wan2.1", "image-to-video"} <= set(metadata["tags"])


@pytest.mark.parametrize(
    "task, tag",
    [("t2v", "text-to-video"), ("i2v", "image-to-video"), ("flf2v", "image-to-video"), ("vace", "video-to-video")],
)
def test_each_task_names_its_pipeline_tag(task, tag):
    assert front_matter(render_model_card(card_info(task=task)))["pipeline_tag"] == tag


def test_unreleased_sizes_have_no_base_model():
    metadata = front_matter(render_model_card(card_info(size=None, base_model=None)))
    assert "base_model" not in metadata


def test_card_has_usage_sources_parameter_counts_and_dtypes():
    card = render_model_card(card_info())
    assert 'WanImageToVideoPipeline.from_pretrained("someone/Wan2.1-I2V-14B-480P-Diffusers"' in card
    assert "image=image" in card and "height=480, width=832" in card
    assert "| `transformer/` | `wan_diffusers.WanTransformer3DModel` | `config.json` + shards | 16.40 B |" in card
    assert "bfloat16 (float32: 242 tensors)" in card and "126.9 M" in card
    assert "shift 3 (the original's default)" in card
    compile(card.split("```python\n")[1].split("```")[0], "usage", "exec")  # the snippet is valid Python


def test_cards_without_front_matter_are_refused():
    with pytest.raises(ValueError, match="`card` must start with a YAML front matter block"):
        front_matter("# just a title\n")
