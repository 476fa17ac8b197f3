"""Batched augmentation: the dihedral group, determinism, photometric bounds."""

from __future__ import annotations

import torch

from cellmorph.training.augment import AugmentConfig, dihedral, draw_dihedral, photometric


def test_eight_distinct_dihedral_transforms() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(8, 1, 1, 1)
    out = dihedral(x, torch.arange(8))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8
    torch.testing.assert_close(out[0], x[0])
    torch.testing.assert_close(out[1], torch.rot90(x[0], 1, (-2, -1)))
    torch.testing.assert_close(out[4], torch.flip(x[0], (-1,)))


def test_seeded_draws_repeat() -> None:
    cfg = AugmentConfig(intensity=0.2, blur=1.5, noise=0.05)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = photometric(x, cfg, torch.Generator().manual_seed(1))
    b = photometric(x, cfg, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert a.min() >= 0 and a.max() <= 1 and not torch.allclose(a, x)
    k1 = draw_dihedral(10, cfg, torch.Generator().manual_seed(3))
    k2 = draw_dihedral(10, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(k1, k2) and k1.max() < 8
    assert (draw_dihedral(5, AugmentConfig(dihedral=False), torch.Generator()) == 0).all()
    assert AugmentConfig().dihedral_only and not cfg.dihedral_only
