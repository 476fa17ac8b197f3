"""Augmentation on batched tensors (runs wherever the batch is: CPU or GPU).

Every random draw comes from an explicit ``torch.Generator`` so a seed fixes the result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cellmorph.config import AugmentConfig

N_DIHEDRAL = 8


def dihedral(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Apply dihedral transform ``k[i]`` in 0..7 (rotation k%4 x 90 deg, flip if k>=4) to x[i]."""
    out = x.clone()
    for code in torch.unique(k).tolist():
        mask = k == code
        y = torch.rot90(x[mask], code % 4, dims=(-2, -1))
        if code >= 4:
            y = torch.flip(y, dims=(-1,))
        out[mask] = y
    return out


def draw_dihedral(n: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """The dihedral code of each sample of a batch (all 0 when dihedral is off)."""
    if not cfg.dihedral:
        return torch.zeros(n, dtype=torch.long)
    return torch.randint(0, N_DIHEDRAL, (n,), generator=generator)


def photometric(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Intensity jitter, blur and noise on [0, 1] float tiles (N, C, H, W)."""
    n, c = x.shape[:2]
    if cfg.intensity > 0:
        gain = 1 + (torch.rand(n, c, 1, 1, generator=generator) * 2 - 1) * cfg.intensity
        x = x * gain.to(x.device)
    if cfg.blur > 0:
        sigma = float(torch.rand(1, generator=generator)) * cfg.blur
        if sigma > 0.3:
            x = _gaussian_blur(x, sigma)
    if cfg.noise > 0:
        noise = torch.randn(x.shape, generator=generator) * cfg.noise
        x = x + noise.to(x.device)
    return x.clamp(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    kx = kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kx, groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), ky, groups=c)
