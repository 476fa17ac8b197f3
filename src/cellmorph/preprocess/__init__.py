"""Preprocessing primitives: stateless functions, image first (scikit-image style).

Shared by profiling and fine-tuning. Arrays are (channels, height, width) unless stated;
each function takes a NumPy array or a torch tensor on any device and returns the same kind
(:mod:`cellmorph.preprocess.arrays`), so a GPU run preprocesses on its GPU with the same code.
"""

from cellmorph.preprocess.arrays import to_device
from cellmorph.preprocess.illumination import correct_illumination, illumination_function
from cellmorph.preprocess.intensity import (
    anscombe,
    control_statistics,
    normalise_to_controls,
    rescale_to_uint8,
)
from cellmorph.preprocess.tiling import grid_tiles, nonempty_tiles, random_tiles, resize_stack

__all__ = [
    "anscombe", "control_statistics", "correct_illumination", "grid_tiles",
    "illumination_function", "nonempty_tiles", "normalise_to_controls", "random_tiles",
    "rescale_to_uint8", "resize_stack", "to_device",
]
