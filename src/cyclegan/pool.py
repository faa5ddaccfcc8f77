"""History of generated images for the discriminator (Shrivastava et al. 2017; CycleGAN paper sec. 4).

Updating D with a mix of current and earlier fakes keeps it from over-fitting to the generator's
latest mode, a guard against mode collapse (Shrivastava et al., CVPR 2017, sec. 2.3).
"""

from __future__ import annotations

import torch
from torch import Tensor


class ImagePool:
    """Holds up to ``size`` generated images. ``query`` returns a batch the same shape as its input:
    while the pool fills, the new images themselves; afterwards each image is, with probability 1/2,
    swapped for a random stored one (which the new image replaces)."""

    def __init__(self, *, size: int = 50, seed: int = 0):
        self.size = size
        self.images: list[Tensor] = []
        # A private generator: the pool's draws must not shift the global RNG, so runs resume bitwise.
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def query(self, images: Tensor) -> Tensor:  # [B, C, H, W] -> [B, C, H, W]
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
                continue
            if torch.rand((), generator=self.generator).item() < 0.5:
                idx = int(torch.randint(len(self.images), (), generator=self.generator))
                out.append(self.images[idx].clone())
                self.images[idx] = image.clone()
            else:
                out.append(image)
        # stack returns the default layout; keep the caller's (channels_last on the fast path).
        channels_last = images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last)
        stacked = torch.stack(out)
        return stacked.contiguous(memory_format=torch.channels_last) if channels_last else stacked

    def clear(self) -> None:
        """Forget the stored images: the batches changed size (train.resolution_schedule), and a
        discriminator must not be shown fakes of another size."""
        self.images = []

    def state_dict(self) -> dict:
        stored = torch.stack([i.cpu() for i in self.images]) if self.images else torch.empty(0)
        return {"size": self.size, "images": stored, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict, *, device: torch.device | str = "cpu") -> None:
        self.size = int(state["size"])
        self.images = [img.to(device) for img in state["images"]] if state["images"].numel() else []
        self.generator.set_state(state["generator"])
