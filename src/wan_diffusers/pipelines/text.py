"""Prompt cleaning and the original default negative prompts.

Cleaning is the original tokenizer wrapper's `clean='whitespace'` (`HuggingfaceTokenizer._clean`, `basic_clean` and
`whitespace_clean` in `wan/modules/tokenizers.py`): `ftfy.fix_text`, then
`html.unescape` twice, then every run of whitespace becomes one space and the ends are stripped. `ftfy` is a hard
dependency here: diffusers skips it when it is not installed, and then a prompt with full-width punctuation
tokenises differently (`，` stays instead of becoming `,`).
"""

import html

import ftfy
import regex

from ..tasks import TASK_NAMES, default_variant

# The negative prompt the original uses for each task when none is given (`n_prompt=""`): that of the task's default
# variant (`wan_diffusers.tasks`; every variant of a task has the same one).
DEFAULT_NEGATIVE_PROMPTS = {task: default_variant(task).negative_prompt for task in TASK_NAMES}

_WHITESPACE = regex.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """Normalise a prompt exactly as the original does before tokenising it."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()
