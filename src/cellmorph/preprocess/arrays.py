"""NumPy arrays and torch tensors behind one preprocessing implementation.

Every preprocessing function takes a NumPy array or a torch tensor and returns the same kind:
NumPy on the CPU (zero-copy through torch), or a tensor on its own device, so that a GPU run
preprocesses its fields on the GPU with the very same code. On the CPU the torch operations
are the NumPy ones in the same order, so the results are equal to the last bit (tested).
"""

from __future__ import annotations

import numpy as np
import torch

Image = np.ndarray | torch.Tensor


def as_tensor(image: Image) -> torch.Tensor:
    """``image`` as a tensor, sharing memory with a NumPy array (copied only when its strides
    are negative, which torch cannot view)."""
    if isinstance(image, torch.Tensor):
        return image
    array = np.asarray(image)
    if any(s < 0 for s in array.strides):
        array = array.copy()
    return torch.from_numpy(array)


def like(result: torch.Tensor, image: Image) -> Image:
    """``result`` as the kind of array ``image`` was: NumPy for NumPy, else the tensor."""
    return result if isinstance(image, torch.Tensor) else result.numpy()


def constant(values, like_tensor: torch.Tensor) -> torch.Tensor:
    """Per-channel or scalar settings (means, percentiles) as float32 on the image's device."""
    return torch.as_tensor(np.asarray(values, np.float32) if not isinstance(values, torch.Tensor)
                           else values, dtype=torch.float32, device=like_tensor.device)


def to_device(image: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """A decoded field as a tensor on ``device`` (on the CPU, a view of the array).

    Fields travel in their decoded dtype (two bytes a pixel for 16-bit images). torch's
    16-bit unsigned type has only limited support off the CPU, so its bits travel as int16
    and are widened back on the device (:func:`widen_uint16_bits`).
    """
    device = torch.device(device)
    tensor = as_tensor(image)
    if device.type == "cpu":
        return tensor
    if tensor.dtype == torch.uint16:
        return widen_uint16_bits(tensor.view(torch.int16).to(device))
    return tensor.to(device)


def widen_uint16_bits(bits: torch.Tensor) -> torch.Tensor:
    """int16 tensor holding the bits of 16-bit unsigned pixels -> their values as int32."""
    return bits.to(torch.int32).bitwise_and_(0xFFFF)
