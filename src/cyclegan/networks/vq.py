"""Vector-quantisation bottleneck (VQ-VAE: van den Oord, Vinyals & Kavukcuoglu, NeurIPS 2017).

The ``attention`` generator can put a VQ block between its encoder and its residual blocks
so that animal photos and Pokemon sprites, which have no direct pixel correspondence, meet in a small
discrete vocabulary of features. Every encoder vector is replaced by its nearest codebook entry;

- gradients pass the non-differentiable lookup with the straight-through estimator (paper sec. 3.2):
  ``z + (e - z).detach()`` is ``e`` forwards and the identity backwards;
- the commitment loss ``||z - sg(e)||^2`` keeps the encoder close to the codes it picks (paper eq. 3,
  weighted by beta = ``loss.lambda_vq`` in the training step);
- the codebook follows exponential moving averages of the vectors assigned to each code (paper
  appendix A.1; Razavi et al. 2019), with Laplace smoothing of the counts so an unused code never
  divides by zero; ``ema_decay=0`` instead learns it by gradient with the codebook loss
  ``||sg(z) - e||^2``;
- the codebook is initialised from the first training batch's encoder vectors (a common data-dependent
  start; random codes far from the encoder's output range would mostly never be picked);
- the perplexity ``exp(H(code usage))`` of each batch is returned so training can log codebook use:
  1 means every vector maps to one code (collapse), ``num_codes`` means uniform use.

Under data-parallel training (``torchrun``) the replicas keep one codebook: rank 0's data-dependent
initialisation is broadcast, and the EMA statistics are summed over processes before each update,
so every replica moves its codes as one process would with the global batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class VQOutput(NamedTuple):
    quantized: Tensor  # [B, D, H, W], straight-through: forward = codes, backward = identity
    indices: Tensor  # [B, H, W] int64 code index per position
    commitment: Tensor  # scalar ||z - sg(e)||^2 (mean), for the encoder
    codebook_loss: Tensor  # scalar ||sg(z) - e||^2 when the codebook is learned by gradient, else 0
    perplexity: Tensor  # scalar, detached: exp of the entropy of this batch's code usage


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation of ``[B, dim, H, W]`` feature maps against ``num_codes`` codes."""

    def __init__(self, *, num_codes: int, dim: int, ema_decay: float = 0.99, eps: float = 1e-5) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"num_codes and dim must be >= 1, got {num_codes} and {dim}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.num_codes, self.dim = num_codes, dim
        self.ema_decay, self.eps = ema_decay, eps
        codes = torch.randn(num_codes, dim)  # replaced by data on the first training batch
        if ema_decay > 0:
            # Buffers, not parameters: the optimiser must not touch an EMA codebook.
            self.register_buffer("codebook", codes)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", codes.clone())
        else:
            self.codebook = nn.Parameter(codes)
        # Saved with the weights, so a resumed or reloaded model never re-initialises its codes.
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # Reading the flag is a host-device sync; once it has been seen set, stop reading it.
        self._seen_initialized = False

    @property
    def uses_ema(self) -> bool:
        return self.ema_decay > 0

    @torch.no_grad()
    def _init_from_data(self, flat: Tensor) -> None:
        # Distinct encoder vectors when the batch has enough of them; otherwise repeats, jittered so
        # that duplicate codes do not tie (argmin would always pick the first and starve the other).
        n = flat.shape[0]
        if n >= self.num_codes:
            picked = flat[torch.randperm(n, device=flat.device)[: self.num_codes]]
        else:
            picked = flat[torch.randint(0, n, (self.num_codes,), device=flat.device)]
            picked = picked + 1e-3 * flat.std() * torch.randn_like(picked)
        if _distributed():  # one codebook for all replicas: rank 0's picks
            torch.distributed.broadcast(picked, src=0)
        self.codebook.data.copy_(picked)
        if self.uses_ema:
            self.ema_sum.copy_(picked)
            self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, one_hot: Tensor) -> None:
        # A one-hot matmul rather than index_add_: same result, and deterministic on GPUs, which keeps
        # resumed runs bitwise identical.
        counts = one_hot.sum(0)  # [K]
        sums = one_hot.t() @ flat  # [K, D]
        if _distributed():  # each process saw its shard; the sums are those of the global batch
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        decay = self.ema_decay
        self.ema_count.mul_(decay).add_(counts, alpha=1 - decay)
        self.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))

    def forward(self, z: Tensor) -> VQOutput:
        # z: [B, D, H, W] -> quantized [B, D, H, W]
        b, d, h, w = z.shape
        if d != self.dim:
            raise ValueError(f"expected {self.dim} channels, got {d}")
        # Distances and the EMA in float32 even under autocast: bf16 ties would scramble assignments.
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, d)  # [N, D], N = B*H*W
            if self.training and not self._seen_initialized:
                if not bool(self.initialized):
                    self._init_from_data(flat.detach())
                self._seen_initialized = True
            codebook = self.codebook.float()
            distances = (
                flat.detach().pow(2).sum(1, keepdim=True)
                - 2.0 * flat.detach() @ codebook.detach().t()
                + codebook.detach().pow(2).sum(1)
            )  # [N, K]
            indices = distances.argmin(1)  # [N]
            one_hot = F.one_hot(indices, self.num_codes).to(flat.dtype)  # [N, K]
            # The codes this batch was assigned (indexing copies them), then the EMA step: the batch
            # is quantised with the codebook it was matched against, as in VQ-VAE's EMA variant.
            codes = codebook[indices]  # [N, D]; differentiable w.r.t. a learned codebook
            if self.training and self.uses_ema:
                self._ema_update(flat.detach(), one_hot)
            commitment = F.mse_loss(flat, codes.detach())
            if self.uses_ema:
                codebook_loss = flat.new_zeros(())
            else:
                codebook_loss = F.mse_loss(codes, flat.detach())
            probs = one_hot.mean(0).detach()
            perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        codes = codes.view(b, h, w, d).permute(0, 3, 1, 2)
        # Straight-through estimator: forward value = codes, gradient w.r.t. z = identity.
        quantized = z + (codes.to(z.dtype) - z).detach()
        return VQOutput(quantized, indices.view(b, h, w), commitment, codebook_loss, perplexity)
