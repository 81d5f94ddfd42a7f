"""Prompt cleaning and the original default negative prompts.

Cleaning is the original tokenizer wrapper's `clean='whitespace'` (`wan21_original.md` §5): `ftfy.fix_text`, then
`html.unescape` twice, then every run of whitespace becomes one space and the ends are stripped. `ftfy` is a hard
dependency here: diffusers skips it when it is not installed, and then a prompt with full-width punctuation
tokenises differently (`，` stays instead of becoming `,`).
"""

import html

import ftfy
import regex

# `wan/configs/shared_config.py` -> `sample_neg_prompt` (T2V, T2I and VACE). The separators are full-width commas.
_NEGATIVE_PROMPT_T2V = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# I2V prepends "camera shake"; FLF2V prepends "shot change" to the I2V one.
_NEGATIVE_PROMPT_I2V = "镜头晃动，" + _NEGATIVE_PROMPT_T2V
_NEGATIVE_PROMPT_FLF2V = "镜头切换，" + _NEGATIVE_PROMPT_I2V

# The negative prompt the original uses for each task when none is given (`n_prompt=""`). Video-to-video has no
# original counterpart and runs T2V weights, so it takes the T2V prompt.
DEFAULT_NEGATIVE_PROMPTS = {
    "t2v": _NEGATIVE_PROMPT_T2V,
    "v2v": _NEGATIVE_PROMPT_T2V,
    "vace": _NEGATIVE_PROMPT_T2V,
    "i2v": _NEGATIVE_PROMPT_I2V,
    "flf2v": _NEGATIVE_PROMPT_FLF2V,
}

_WHITESPACE = regex.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """Normalise a prompt exactly as the original does before tokenising it."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()
