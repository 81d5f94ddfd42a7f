"""The procedural shapes dataset and the detector that reads it back."""

import numpy as np
import pytest

from wan_diffusers.training import shapes


def test_grammar_and_held_out_split():
    held_out = shapes.held_out_combinations()
    training = shapes.training_combinations()
    assert len(shapes.all_combinations()) == 60 and len(held_out) == 12 and len(training) == 48
    # every pair of attributes of a held-out combination still appears in training
    for colour, shape, direction in held_out:
        assert any(c == colour and s == shape for c, s, _ in training)
        assert any(c == colour and d == direction for c, _, d in training)
        assert any(s == shape and d == direction for _, s, d in training)
    assert shapes.parse_caption("a red circle moves left") == ("red", "circle", "left")
    with pytest.raises(ValueError, match="must read `a {colour} {shape} moves {direction}`"):
        shapes.parse_caption("a red circle")


def test_describe_video_reads_back_rendered_clips():
    rng = np.random.default_rng(0)
    # every 5th of the 84: all colours, shapes and directions, in varied combinations
    combinations = shapes.all_combinations((*shapes.COLOURS, *shapes.EXTRA_COLOURS))[::5]
    for combination in combinations:
        spec = shapes.random_clip_spec(*combination, rng)
        frames = shapes.render_clip(spec)
        assert frames.shape == (17, 64, 64, 3) and 0.0 <= frames.min() and frames.max() <= 1.0
        found = shapes.describe_video(frames)
        assert (found.colour, found.shape, found.direction) == combination, (combination, found)
    empty = shapes.describe_video(np.zeros((17, 64, 64, 3)))
    assert (empty.colour, empty.shape, empty.direction) == (None, None, None)


def test_dataset_is_seeded(tmp_path):
    first = shapes.write_shapes_dataset(tmp_path / "a", shapes.training_combinations()[:2], 1, seed=3)
    second = shapes.write_shapes_dataset(tmp_path / "b", shapes.training_combinations()[:2], 1, seed=3)
    assert (first / "metadata.csv").read_text() == (second / "metadata.csv").read_text()
    names = sorted(path.name for path in first.glob("*.mp4"))
    assert [(first / n).read_bytes() == (second / n).read_bytes() for n in names] == [True] * len(names)
    with pytest.raises(FileExistsError, match="exists already"):
        shapes.write_shapes_dataset(first, shapes.training_combinations()[:1], 1)
