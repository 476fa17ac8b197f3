"""Preprocessing primitives, checked against direct numpy computations."""

from __future__ import annotations

import numpy as np
import pytest

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
)


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


def test_anscombe_and_control_statistics() -> None:
    x = np.array([[[0.0, 5.0]]])
    np.testing.assert_allclose(anscombe(x), 2 * np.sqrt(x + 3 / 8), rtol=1e-6)
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
