"""Preprocessing primitives, checked against direct numpy computations and reference
implementations (scikit-image, Pillow), on NumPy arrays and on torch tensors alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellmorph.preprocess import (
    anscombe,
    control_statistics,
    correct_illumination,
    grid_tiles,
    illumination_function,
    nonempty_tiles,
    normalise_to_controls,
    random_tiles,
    rescale_to_uint8,
    resize_stack,
    to_device,
)
from cellmorph.preprocess.arrays import widen_uint16_bits
from cellmorph.preprocess.tiling import resize_uint8_in_float


def test_illumination_correction_flattens_a_vignette() -> None:
    rng = np.random.default_rng(0)
    h, w = 96, 120
    yy, xx = np.mgrid[0:h, 0:w]
    vignette = 1.0 - 0.4 * (((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2) / 0.5)
    images = [1000 * vignette * rng.uniform(0.9, 1.1, (h, w)) for _ in range(20)]

    def corner_deficit(imgs) -> float:
        mean = np.mean(imgs, axis=0)
        return abs(mean[:10, :10].mean() / mean[40:56, 50:70].mean() - 1)

    raw = corner_deficit(images)
    for window, tolerance in ((0.4, raw / 2), (0.1, 0.05)):  # Singh's wide median is biased
        func = illumination_function(images, window=window)  # at the corners; narrow is exact
        assert func.shape == (h, w) and func.min() >= 1.0
        assert corner_deficit([correct_illumination(im, func) for im in images]) < tolerance


def test_illumination_function_matches_scikit_image_reference() -> None:
    """Reference: the same recipe with scikit-image's Gaussian-prefiltered resize and the
    percentile of the full-size field (the implementation before torch's resize)."""
    from scipy import ndimage
    from skimage.transform import resize

    rng = np.random.default_rng(2)
    h, w = 256, 320
    yy, xx = np.mgrid[0:h, 0:w]
    field = (1000 * (1.0 - 0.4 * ((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2) / 0.5)
             * rng.uniform(0.5, 1.5, (h, w))).astype(np.float32)
    small = resize(field, (64, 80), order=1, anti_aliasing=True, preserve_range=True)
    smooth = ndimage.median_filter(small, size=25, mode="reflect")
    reference = resize(smooth, (h, w), order=1, preserve_range=True)
    reference = np.maximum(reference / np.percentile(reference, 2.0), 1.0)
    ours = illumination_function([field])
    # within 3 % everywhere (the two antialiasing filters feed the median slightly different
    # small images), and as close to the true vignette as the reference
    assert ours.dtype == np.float32 and np.abs(ours / reference - 1).max() < 0.03
    truth = (yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2

    def distortion(func: np.ndarray) -> float:  # spread of func / true vignette
        ratio = func * (1.0 - 0.4 * truth / 0.5)
        return float(np.abs(ratio / np.median(ratio) - 1).max())

    assert distortion(ours) < distortion(reference) + 0.02


def test_anscombe_and_control_statistics() -> None:
    x = np.random.default_rng(3).uniform(0, 5000, (2, 30, 40)).astype(np.float32)
    # torch's float32 square root is not correctly rounded on every CPU: the result must
    # still be NumPy's to the last bit
    np.testing.assert_array_equal(anscombe(x), 2 * np.sqrt(x + np.float32(3 / 8)))
    rng = np.random.default_rng(1)
    imgs = [rng.normal(5, 2, (3, 8, 9)) for _ in range(4)]
    mean, std = control_statistics(imgs)
    flat = np.concatenate([i.reshape(3, -1) for i in imgs], axis=1)
    np.testing.assert_allclose(mean, flat.mean(1), rtol=1e-5)
    np.testing.assert_allclose(std, flat.std(1), rtol=1e-4)
    z = normalise_to_controls(imgs[0], mean, std)
    np.testing.assert_allclose(z[1], (imgs[0][1] - flat[1].mean()) / flat[1].std(), rtol=1e-4)


def test_rescale_to_uint8() -> None:
    img = np.stack([np.linspace(0, 1, 16).reshape(4, 4), np.linspace(0, 10, 16).reshape(4, 4)])
    whole = rescale_to_uint8(img)
    assert whole.dtype == np.uint8 and whole.max() == 255 and whole[0].max() < 30
    per = rescale_to_uint8(img, per_channel=True)
    assert per[0].max() == 255 and per[1].max() == 255 and per[0].min() == 0
    fixed = rescale_to_uint8(img, low=np.array([0, 0]), high=np.array([2, 20]))
    assert fixed[0].max() == 128 and fixed[1].max() == 128


def test_grid_and_random_tiles() -> None:
    img = np.arange(2 * 8 * 12).reshape(2, 8, 12)
    tiles = grid_tiles(img, 2, 3)
    assert tiles.shape == (6, 2, 4, 4)
    np.testing.assert_array_equal(tiles[4], img[:, 4:8, 4:8])  # row 1, column 1
    a = random_tiles(img, 5, (3, 3), np.random.default_rng(7))
    b = random_tiles(img, 5, (3, 3), np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="larger than the image"):
        random_tiles(img, 1, (9, 3), np.random.default_rng(0))


def test_empty_tile_filter_follows_kensert() -> None:
    tiles = np.zeros((3, 1, 100, 100), np.uint8)
    tiles[1, 0, :2, :10] = 200  # 20 pixels = 0.2 %: dropped ("at most 0.2 %")
    tiles[2, 0, :3, :10] = 200  # 30 pixels = 0.3 %: kept
    np.testing.assert_array_equal(nonempty_tiles(tiles), [False, False, True])


def test_resize_stack_keeps_dtype_and_mean() -> None:
    img = np.full((2, 3, 40, 50), 100, np.uint8)
    out = resize_stack(img, (20, 25))
    assert out.shape == (2, 3, 20, 25) and out.dtype == np.uint8 and (out == 100).all()


@pytest.mark.parametrize("size", [(224, 224), (300, 400)], ids=["down", "up"])
def test_resize_stack_matches_pillow_bilinear(size) -> None:
    """Reference: Pillow's BILINEAR resize (antialiased when shrinking), channel by channel."""
    from PIL import Image

    img = np.random.default_rng(0).integers(0, 256, (3, 256, 320), dtype=np.uint8)
    ours = resize_stack(img, size)
    pillow = np.stack([np.asarray(Image.fromarray(c).resize(size[::-1], Image.BILINEAR,
                                                            reducing_gap=None)) for c in img])
    diff = np.abs(ours.astype(int) - pillow.astype(int))
    assert ours.dtype == np.uint8 and diff.max() <= 1 and (diff > 0).mean() < 0.01
    as_float = resize_stack(img.astype(np.float32), size)
    assert as_float.dtype == np.float32 and np.abs(as_float - ours).max() < 1.01


# Each primitive as a function of one image (the settings bound), over a float32 field.
_FIELD = np.random.default_rng(4).uniform(0, 4000, (3, 48, 60)).astype(np.float32)
_PER_CHANNEL = np.array([10.0, 20.0, 30.0], np.float32)
PRIMITIVES = {
    "correct_illumination": lambda x: correct_illumination(x, 1 + _FIELD / 4000),
    "anscombe": anscombe,
    "normalise_to_controls": lambda x: normalise_to_controls(x, _PER_CHANNEL, _PER_CHANNEL),
    "rescale_to_uint8": lambda x: rescale_to_uint8(x),
    "rescale_to_uint8 per channel": lambda x: rescale_to_uint8(x, per_channel=True),
    "rescale_to_uint8 fixed": lambda x: rescale_to_uint8(x, low=_PER_CHANNEL, high=3000.0),
    "resize_stack float": lambda x: resize_stack(x, (20, 30)),
    "resize_stack uint8": lambda x: resize_stack(rescale_to_uint8(x), (20, 30)),
    "grid_tiles": lambda x: grid_tiles(x, 2, 3),
    "random_tiles": lambda x: random_tiles(x, 4, (16, 16), np.random.default_rng(5)),
}


@pytest.mark.parametrize("name", PRIMITIVES)
def test_tensors_give_numpys_result_to_the_bit(name: str) -> None:
    """The same function on a tensor: a tensor of the very same values (this is what lets a
    GPU run preprocess with the CPU's code)."""
    fn = PRIMITIVES[name]
    expected = fn(_FIELD.copy())
    got = fn(torch.from_numpy(_FIELD.copy()))
    assert isinstance(expected, np.ndarray) and isinstance(got, torch.Tensor)
    assert got.numpy().dtype == expected.dtype
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("name", PRIMITIVES)
def test_the_input_image_is_never_modified(name: str) -> None:
    image = _FIELD.copy()
    PRIMITIVES[name](image)
    PRIMITIVES[name](torch.from_numpy(image))
    np.testing.assert_array_equal(image, _FIELD)


@pytest.mark.parametrize("size", [(224, 224), (300, 400)], ids=["down", "up"])
def test_uint8_resize_of_other_devices_matches_pillow(size) -> None:
    """A GPU has no fixed-point uint8 resize: it goes through float32 and rounds; run here on
    the CPU against the same Pillow reference as the CPU's own path."""
    from PIL import Image

    img = np.random.default_rng(0).integers(0, 256, (3, 256, 320), dtype=np.uint8)
    ours = resize_uint8_in_float(torch.from_numpy(img)[None], size)[0].numpy()
    pillow = np.stack([np.asarray(Image.fromarray(c).resize(size[::-1], Image.BILINEAR,
                                                            reducing_gap=None)) for c in img])
    diff = ours.astype(int) - pillow.astype(int)
    # one grey level at most, and a tenth of one on average (exact float rounding differs
    # from Pillow's fixed-point weights on up to a fifth of the pixels)
    assert ours.dtype == np.uint8 and np.abs(diff).max() <= 1 and abs(diff.mean()) < 0.1


def test_16_bit_fields_travel_as_their_bits() -> None:
    """uint16 fields go to a GPU as int16 bits and are widened there: every value survives,
    those above 32767 included."""
    values = np.array([0, 1, 32767, 32768, 40000, 65535], np.uint16)
    bits = torch.from_numpy(values.view(np.int16))
    np.testing.assert_array_equal(widen_uint16_bits(bits).numpy(), values.astype(np.int32))
    on_cpu = to_device(values, "cpu")
    assert on_cpu.dtype == torch.uint16 and on_cpu.data_ptr() == values.ctypes.data  # a view
