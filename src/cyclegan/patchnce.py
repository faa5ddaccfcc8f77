"""PatchNCE: the contrastive loss of CUT / FastCUT (Park, Efros, Zhang and Zhu, ECCV 2020).

Instead of a second generator and a cycle, CUT keeps content by asking that each patch of the
translated image be recognisable as the patch at the same place in the input, among the other
patches of that input: the generator's own encoder embeds both images, a small MLP per layer
projects sampled locations, and an InfoNCE loss (temperature 0.07) pulls corresponding locations
together. Locations are sampled once from the source features and reused for the translated
features, so positives are exactly aligned.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def nce_layer_channels(*, ngf: int) -> list[int]:
    """Channels of ``ResnetGenerator.nce_features``: RGB, two downsamplings, two residual blocks."""
    return [3, 2 * ngf, 4 * ngf, 4 * ngf, 4 * ngf]


class PatchSampleMLP(nn.Module):
    """One 2-layer MLP (C -> nc -> nc, ReLU) per encoder layer, applied to sampled locations (CUT's F)."""

    def __init__(self, *, channels: Sequence[int], nc: int = 256):
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, nc), nn.ReLU(inplace=True), nn.Linear(nc, nc)) for c in channels
        )

    def forward(
        self, features: Sequence[Tensor], *, num_patches: int, patch_ids: Sequence[Tensor] | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """features: per layer [B, C_l, H_l, W_l]. Returns per layer [B * P_l, nc] unit vectors and the
        sampled flat location indices [P_l] (pass them back in to sample the same places)."""
        out, ids_out = [], []
        for i, (feat, mlp) in enumerate(zip(features, self.mlps)):
            b, c, h, w = feat.shape
            flat = feat.permute(0, 2, 3, 1).reshape(b, h * w, c)  # [B, HW, C]
            if patch_ids is not None:
                ids = patch_ids[i]
            else:
                ids = torch.randperm(h * w, device=feat.device)[: min(num_patches, h * w)]
            sampled = flat[:, ids, :].reshape(-1, c)  # [B * P, C]
            out.append(F.normalize(mlp(sampled), dim=1))
            ids_out.append(ids)
        return out, ids_out


def patch_nce_loss(query: Tensor, key: Tensor, *, batch_size: int, temperature: float = 0.07) -> Tensor:
    """InfoNCE over patches, negatives from the same image (CUT eq. 2 and 5).

    query: [B * P, C] embeddings of the translated image; key: [B * P, C] of the source image, the
    positive of query row i being key row i. Returns the mean over the B * P patches of
    -log(exp(q.k+ / t) / (exp(q.k+ / t) + sum over the P - 1 other patches k- of exp(q.k- / t))).
    """
    key = key.detach()  # the source embedding is the fixed target of the contrast
    n, c = query.shape
    positives = (query * key).sum(dim=1, keepdim=True)  # [N, 1]
    q = query.view(batch_size, -1, c)
    k = key.view(batch_size, -1, c)
    p = q.shape[1]
    negatives = torch.bmm(q, k.transpose(1, 2))  # [B, P, P]; the diagonal holds the positives
    # Mask the positive out of the negatives with a large negative logit (exp(-10 / 0.07) ~ 0).
    eye = torch.eye(p, device=query.device, dtype=torch.bool)[None]
    negatives = negatives.masked_fill(eye, -10.0).view(n, p)
    logits = torch.cat([positives, negatives], dim=1) / temperature  # [N, 1 + P]
    target = torch.zeros(n, dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target)
