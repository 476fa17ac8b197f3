"""Activation maximisation: the image that excites one filter of one layer most.

The image is parametrised in a decorrelated Fourier space (spectrum scaled by 1/f, colours
decorrelated) and, at every step, randomly jittered, scaled and rotated before the network
sees it: the regularised recipe of the published feature-visualisation work (Olah et al.
2017, Distill), which gives readable images instead of high-frequency noise.

Written here rather than taken from a package: torch-lucent is abandoned (it pins an old
kornia and downgrades torch), and horama has no rotation, draws from the global random
state and always shows progress bars; the loop itself is short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cellmorph.errors import CellmorphError

# The square root of ImageNet's colour correlation (Lucid): decorrelated colours.
_COLOUR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU)


@dataclass
class ActMax:
    """One visualised filter: the image (H, W, 3) in [0, 1] and the activation it reaches."""

    layer: str
    channel: int
    image: np.ndarray
    start_activation: float  # the filter's mean activation on the starting image
    final_activation: float


def default_layers(model: nn.Module, n: int = 2) -> list[str]:
    """The last post-activation module inside each of the model's last ``n`` feature stages
    (a filter's activation there is non-negative, so "more" means "more of the feature")."""
    infos = getattr(model, "feature_info", None)
    if not infos:
        raise CellmorphError(f"{type(model).__name__} has no feature_info; name the layers")
    names = [f["module"] for f in infos][-n:]
    out = []
    for name in names:
        stage = model.get_submodule(name)
        inner = [sub for sub, m in stage.named_modules() if isinstance(m, _ACTIVATIONS)]
        out.append(f"{name}.{inner[-1]}" if inner else name)
    return out


class _Image(nn.Module):
    """A (3, size, size) image from a learnable, frequency-scaled Fourier spectrum."""

    def __init__(self, size: int, generator: torch.Generator, decay: float = 1.0) -> None:
        super().__init__()
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        freq = torch.sqrt(fx**2 + fy**2).clamp(min=1.0 / size)
        self.register_buffer("scale", size / freq**decay)
        shape = (3, size, size // 2 + 1, 2)
        self.spectrum = nn.Parameter(torch.randn(shape, generator=generator))
        self.size = size

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum)
        spectrum = (spectrum - spectrum.mean()) / (spectrum.abs().std() + 1e-4) * self.scale
        x = torch.fft.irfft2(spectrum, s=(self.size, self.size))
        x = (x - x.mean()) / (x.std() + 1e-4)
        x = torch.einsum("cd,dhw->chw", _COLOUR_SQRT.to(x.device) * 4.0, x)
        return torch.sigmoid(x)


def _transform(x: torch.Tensor, generator: torch.Generator, jitter: int, scale: float,
               degrees: float) -> torch.Tensor:
    """Random jitter, scale and rotation of a (N, 3, H, W) batch (one affine warp)."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    s = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * jitter / x.shape[-1])
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / s
    theta[:, 0, 1] = -torch.sin(angle) / s
    theta[:, 1, 0] = torch.sin(angle) / s
    theta[:, 1, 1] = torch.cos(angle) / s
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)


@torch.no_grad()
def active_channels(model: nn.Module, layer: str, k: int, *, mean: tuple[float, ...],
                    std: tuple[float, ...], size: int = 128, seed: int = 0,
                    device: torch.device | str = "cpu") -> list[int]:
    """The first ``k`` channels of ``layer`` that respond to the starting image and vary over
    it (a silent or constant filter has no gradient to climb)."""
    model = model.eval().to(device)
    captured: list[torch.Tensor] = []
    hook = model.get_submodule(layer).register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        x = _Image(size, torch.Generator().manual_seed(seed)).to(device)()[None]
        model((x - torch.tensor(mean, device=device).view(1, 3, 1, 1))
              / torch.tensor(std, device=device).view(1, 3, 1, 1))
    finally:
        hook.remove()
    maps = captured[-1][0].flatten(1)
    # correction=0: a 1x1 map (a small input deep in the network) has a spread of 0, not NaN
    alive = (maps.mean(1) > 1e-6) & (maps.std(1, correction=0) > 1e-4)
    return [int(c) for c in torch.nonzero(alive).flatten()[:k]]


def maximise(model: nn.Module, layer: str, channel: int, *, mean: tuple[float, ...],
             std: tuple[float, ...], size: int = 128, steps: int = 128, lr: float = 0.05,
             batch: int = 4, seed: int = 0, device: torch.device | str = "cpu") -> ActMax:
    """Optimise an image to maximise the mean activation of ``channel`` at ``layer``."""
    model = model.eval().to(device)
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise CellmorphError(f"{type(model).__name__} has no layer {layer!r}") from None
    captured: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda m, i, o: captured.append(o))
    generator = torch.Generator().manual_seed(seed)
    image = _Image(size, generator).to(device)
    norm_mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    norm_std = torch.tensor(std, device=device).view(1, 3, 1, 1)
    for p in model.parameters():
        p.requires_grad_(False)

    def activation(x: torch.Tensor) -> torch.Tensor:
        captured.clear()
        model((x - norm_mean) / norm_std)
        out = captured[-1]
        if channel >= out.shape[1]:
            raise CellmorphError(f"layer {layer!r} has {out.shape[1]} channels, not "
                                 f"{channel + 1}")
        return out[:, channel].mean()

    try:
        with torch.no_grad():
            start = float(activation(image()[None]))
        opt = torch.optim.Adam(image.parameters(), lr=lr)
        for _ in range(steps):
            x = image()[None].expand(batch, -1, -1, -1)
            loss = -activation(_transform(x, generator, jitter=max(1, size // 16), scale=0.1,
                                          degrees=10.0))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            final_image = image()
            final = float(activation(final_image[None]))
    finally:
        hook.remove()
    return ActMax(layer, channel, final_image.permute(1, 2, 0).cpu().numpy(), start, final)
