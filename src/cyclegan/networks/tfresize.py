"""TensorFlow 1's bilinear resize, for generators imported from TF-1 checkpoints.

TF-1's ``tf.image.resize_images`` / ``tf.image.resize_bilinear`` (align_corners=False and, before
TF 2, no half-pixel centres) map output pixel ``i`` to input position ``i * in / out``: for an exact
2x that is input pixel ``i / 2``, so even outputs copy the input and odd ones average it with the
next pixel (the last one repeated at the edge). Neither of PyTorch's bilinear modes does this
(align_corners=False samples at half-pixel centres, align_corners=True stretches the corners), and the
difference is several levels on trained weights, so the imported generators upsample with this.
"""

from __future__ import annotations

import torch


def _double(x: torch.Tensor, dim: int) -> torch.Tensor:
    n = x.size(dim)
    following = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim=dim)
    between = x + (following - x) * 0.5  # TF's lerp: a + (b - a) * 0.5
    return torch.stack([x, between], dim=dim + 1).flatten(dim, dim + 1)


def upsample2x_tf1(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, 2H, 2W], as TF-1's bilinear resize to twice the size computes it."""
    return _double(_double(x, 2), 3)
