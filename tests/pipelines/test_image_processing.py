"""I2V / FLF2V conditioning against the tensors the original prepared (fixtures tiny-i2v and tiny-flf2v)."""

import numpy as np
import PIL.Image
import pytest
import torch

from wan_diffusers.pipelines.image_processing import (
    clip_pixel_values,
    condition_mask,
    fit_to_size,
    image_to_tensor,
    resize_bicubic,
    size_from_max_area,
)

from factories.parity import component_references, manifest


@pytest.mark.parity
@pytest.mark.parametrize("task", ["i2v", "flf2v"])
def test_vae_input_frames_and_mask_match_the_original(task):
    """The resized condition frames and the 4 mask channels are exact (tolerance 0: same torch ops)."""
    references, settings = component_references(task), manifest(task)["sampling"]
    prefix = f"sampling.{task}."
    first = image_to_tensor(references[prefix + "image.0"].numpy())
    height, width = size_from_max_area(*first.shape[1:], settings["max_area"])
    assert (height, width) == tuple(references[prefix + "vae_input_first_frame"].shape[2:])
    assert torch.equal(resize_bicubic(first, height, width), references[prefix + "vae_input_first_frame"][0])
    if task == "flf2v":
        last = image_to_tensor(references[prefix + "image.1"].numpy())
        assert torch.equal(resize_bicubic(last, height, width), references[prefix + "vae_input_last_frame"][0])
    mask = condition_mask(settings["frame_num"], height // 8, width // 8, last_frame=task == "flf2v")
    assert torch.equal(mask, references[prefix + "y"][:4])


@pytest.mark.parity
@pytest.mark.parametrize("task, case", [("i2v", "single"), ("flf2v", "pair")])
def test_clip_pixel_values_match_the_original(task, case):
    """Bicubic squash of the whole image + OpenAI normalisation; README tolerance max_abs <= 1e-6 (we get 0)."""
    references = component_references(task)
    expected = references[f"clip.{case}.pixel_values"]
    images = [image_to_tensor(references[f"clip.{case}.image.{i}"].numpy()) for i in range(expected.shape[0])]
    assert (clip_pixel_values(images, expected.shape[-1]) - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize(
    "image_hw, max_area, expected",
    [
        # `WanI2V.generate` in `wan/image2video.py`: the float64 floor divisions give 720 x 1248 and 464 x 832, not 1280 and 480
        ((480, 832), 720 * 1280, (720, 1248)),
        ((480, 832), 480 * 832, (464, 832)),
        ((720, 1280), 720 * 1280, (720, 1280)),
        ((100, 60), 1920, (48, 32)),
        ((40, 72), 768, (16, 32)),
    ],
)
def test_size_from_max_area(image_hw, max_area, expected):
    assert size_from_max_area(*image_hw, max_area) == expected


def test_size_from_max_area_too_small():
    with pytest.raises(ValueError, match="`max_area`"):
        size_from_max_area(480, 832, 100)


def test_image_forms_give_the_same_tensor():
    array = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    expected = image_to_tensor(array)
    assert expected.shape == (3, 6, 10) and expected.min() >= -1 and expected.max() <= 1
    forms = [
        PIL.Image.fromarray(array),
        PIL.Image.fromarray(array).convert("RGBA"),
        torch.from_numpy(array).permute(2, 0, 1),
        torch.from_numpy(array).permute(2, 0, 1)[None],
        torch.from_numpy(array).permute(2, 0, 1).float() / 255,
        array.astype(np.float32) / 255,
    ]
    for form in forms:
        assert torch.allclose(image_to_tensor(form), expected, atol=1e-6)


@pytest.mark.parametrize(
    "image, message",
    [
        ("image.png", "must be a PIL.Image.Image"),
        (np.zeros((4, 4)), r"shape \[H, W, 3\]"),
        (torch.zeros(4, 4, 3), r"shape \[3, H, W\]"),
        (torch.full((3, 4, 4), 2.0), r"in \[0, 1\]"),
        (-torch.ones(3, 4, 4), r"in \[0, 1\]"),
        (torch.zeros(3, 4, 4, dtype=torch.int32), "uint8 or floating-point"),
    ],
)
def test_bad_images_name_the_argument(image, message):
    with pytest.raises(ValueError, match=f"`last_image`.*{message}"):
        image_to_tensor(image, "last_image")


def test_flf2v_mask_for_other_frame_counts():
    """Any 4n + 1 frames: latent frame 0 fully known; of the last latent frame only channel 3 (the last pixel frame)."""
    for num_frames in (5, 9, 13, 81):
        mask = condition_mask(num_frames, 2, 3, last_frame=True)
        latent_frames = (num_frames - 1) // 4 + 1
        assert mask.shape == (4, latent_frames, 2, 3)
        known = mask[:, :, 0, 0]
        assert known[:, 0].tolist() == [1, 1, 1, 1]
        assert known[:, -1].tolist() == [0, 0, 0, 1]
        assert known[:, 1:-1].sum() == 0
        assert torch.equal(condition_mask(num_frames, 2, 3)[:, 1:], torch.zeros(4, latent_frames - 1, 2, 3))


def test_a_last_frame_of_another_size_covers_the_first_and_is_centre_cropped():
    """FLF2V with two image sizes: the original means to scale the last frame to cover the first and crop the centre
    (its code only crops, with width and height swapped); the aspect ratio is kept, nothing is stretched."""
    first_size = (40, 72)  # height, width
    # a last frame 80 x 164: scaling by 1/2 covers 40 x 72 exactly in height and gives 82 columns, of which the
    # crop keeps the middle 72 (5 dropped on each side)
    last = torch.rand(3, 80, 164) * 2 - 1
    fitted = fit_to_size(last, *first_size)
    assert fitted.shape == (3, *first_size)
    expected = resize_bicubic(last, 40, 82)[:, :, 5:77]
    assert torch.equal(fitted, expected)
    same_size = torch.rand(3, *first_size)
    assert fit_to_size(same_size, *first_size) is same_size  # same size: untouched (the fixtures' case)
