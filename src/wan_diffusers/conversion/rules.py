"""Key maps as data, and the one function that applies them.

A key map is a tuple of `Rule`s. Each rule is an anchored regular expression over an original key and the name (or
names) it becomes in the diffusers layout. `rename_state_dict` applies a map and is strict: every original key must
match exactly one rule, and no two original keys may produce the same new key. Together with loading the result
with `strict=True` (see `check_state_dict`), this means nothing is dropped, invented or silently renamed twice, and
the order of the rules never matters.
"""

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch


class ConversionError(ValueError):
    """A checkpoint does not fit the expected layout. The message lists every offending key."""


@dataclass(frozen=True)
class Rule:
    """Rename the original keys that fully match `pattern` to `target` (a `re.Match.expand` template).

    `target` may be a tuple of templates when one original tensor becomes several (a fused q|k|v weight split in
    three); `transform` then returns one tensor per template. A single-target `transform` reshapes or re-lays out
    the tensor. `target=None` consumes the key on purpose without producing anything (the CLIP text tower, which
    Wan never runs); such a rule should say why in a comment.
    """

    pattern: str
    target: str | tuple[str, ...] | None
    transform: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]] | None = None

    def __post_init__(self):
        object.__setattr__(self, "_regex", re.compile(self.pattern))

    def match(self, key: str) -> re.Match | None:
        return self._regex.fullmatch(key)

    def apply(self, match: re.Match, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.target is None:
            return {}
        targets = (self.target,) if isinstance(self.target, str) else self.target
        values = self.transform(tensor) if self.transform is not None else tensor
        if isinstance(self.target, str):
            values = (values,)
        if len(values) != len(targets):
            raise ConversionError(f"rule {self.pattern!r} produced {len(values)} tensors for {len(targets)} targets")
        return {match.expand(template): value for template, value in zip(targets, values)}


def rename_state_dict(
    state_dict: Mapping[str, torch.Tensor], rules: Iterable[Rule], *, what: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Apply a key map. Raises `ConversionError` naming every key that matches no rule or several rules."""
    rules = tuple(rules)
    converted: dict[str, torch.Tensor] = {}
    unmatched, ambiguous, collisions = [], [], []
    for key, tensor in state_dict.items():
        matches = [(rule, m) for rule in rules if (m := rule.match(key)) is not None]
        if not matches:
            unmatched.append(key)
            continue
        if len(matches) > 1:
            ambiguous.append(f"{key} (rules: {', '.join(rule.pattern for rule, _ in matches)})")
            continue
        rule, match = matches[0]
        for new_key, value in rule.apply(match, tensor).items():
            if new_key in converted:
                collisions.append(new_key)
            converted[new_key] = value
    problems = []
    if unmatched:
        problems.append(_listing(f"keys the {what} key map does not know", unmatched))
    if ambiguous:
        problems.append(_listing(f"keys that several rules of the {what} key map match", ambiguous))
    if collisions:
        problems.append(_listing("converted keys produced twice", collisions))
    if problems:
        raise ConversionError(f"Cannot convert the {what}:\n" + "\n".join(problems))
    return converted


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size | tuple[int, ...]], *, what: str
) -> None:
    """Check that `state_dict` has exactly the `expected` keys with exactly the expected shapes."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)}, model {tuple(expected[key])}"
        for key in sorted(set(state_dict) & set(expected))
        if tuple(state_dict[key].shape) != tuple(expected[key])
    ]
    problems = []
    if missing:
        problems.append(_listing("missing keys", missing))
    if unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if wrong_shape:
        problems.append(_listing("shape mismatches", wrong_shape))
    if problems:
        raise ConversionError(f"The converted {what} does not fit the model:\n" + "\n".join(problems))


def require_keys(keys: Iterable[str], needed: Iterable[str], *, what: str) -> None:
    """Raise `ConversionError` naming every key of `needed` missing from `keys`: `what` (e.g. "the T5 checkpoint is
    not an umT5 encoder as Wan 2.1 releases it") says what a file lacking them is."""
    keys = set(keys)
    missing = [key for key in needed if key not in keys]
    if missing:
        raise ConversionError(f"{what[0].upper()}{what[1:]}; it lacks {', '.join(missing)}")


def _listing(title: str, items: list[str], limit: int = 20) -> str:
    shown = "\n".join(f"    {item}" for item in items[:limit])
    more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"  {title} ({len(items)}):\n{shown}{more}"
