"""Prompt following on the shapes grammar: generate each prompt, read the video back, count what matches.

`describe_video` (in `training.shapes`) names the colour, shape and direction of motion it finds in a decoded video;
`prompt_following` runs a pipeline over `a {colour} {shape} moves {direction}` prompts and reports, for the
combinations seen in training and those held out apart, how often each attribute (and all three) came out right.
"""

from dataclasses import dataclass

import torch

from .shapes import caption, describe_video, held_out_combinations


@dataclass(frozen=True)
class PromptResult:
    prompt: str
    expected: tuple[str, str, str]
    found: tuple[str | None, str | None, str | None]
    held_out: bool

    @property
    def correct(self) -> tuple[bool, bool, bool]:
        return tuple(a == b for a, b in zip(self.expected, self.found))


ATTRIBUTES = ("colour", "shape", "direction")


def prompt_following(
    pipe,
    combinations: list[tuple[str, str, str]],
    seed: int = 0,
    num_inference_steps: int = 20,
    guidance_scale: float = 5.0,
    batch_size: int = 8,
    height: int = 64,
    width: int = 64,
    num_frames: int = 17,
) -> list[PromptResult]:
    """Generate one video per combination (seed `seed + index`) and describe it."""
    held_out = set(held_out_combinations())
    results = []
    for start in range(0, len(combinations), batch_size):
        chunk = combinations[start : start + batch_size]
        generators = [torch.Generator().manual_seed(seed + start + offset) for offset in range(len(chunk))]
        videos = pipe(
            [caption(*combination) for combination in chunk],
            height=height,
            width=width,
            num_frames=num_frames,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generators,
            output_type="np",
        ).frames
        for combination, video in zip(chunk, videos):
            description = describe_video(video)
            found = (description.colour, description.shape, description.direction)
            results.append(PromptResult(caption(*combination), tuple(combination), found, combination in held_out))
    return results


def accuracy(results: list[PromptResult]) -> dict[str, float]:
    """Fraction correct of each attribute and of all three together (`all`), over `results`."""
    if not results:
        return {name: float("nan") for name in (*ATTRIBUTES, "all")}
    table = {name: sum(r.correct[i] for r in results) / len(results) for i, name in enumerate(ATTRIBUTES)}
    table["all"] = sum(all(r.correct) for r in results) / len(results)
    return table


def accuracy_report(results: list[PromptResult]) -> str:
    """A Markdown table: seen and held-out combinations apart, one column per attribute."""
    lines = ["| prompts | n | colour | shape | direction | all three |", "|---|---|---|---|---|---|"]
    for label, subset in (
        ("seen in training", [r for r in results if not r.held_out]),
        ("held out", [r for r in results if r.held_out]),
        ("all", results),
    ):
        if subset:
            table = accuracy(subset)
            cells = " | ".join(f"{100 * table[name]:.0f} %" for name in (*ATTRIBUTES, "all"))
            lines.append(f"| {label} | {len(subset)} | {cells} |")
    return "\n".join(lines)
