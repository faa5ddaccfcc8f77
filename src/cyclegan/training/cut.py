"""CUT and FastCUT: one-sided translation A -> B with PatchNCE (Park, Efros, Zhang and Zhu, ECCV 2020).

One generator ``G_A`` (A -> B), one discriminator ``D_B``, and per-layer projection MLPs ``F``; no
second generator and no cycle. Content is kept by the PatchNCE loss between the encoder features of
the input and of its translation (``patchnce.py``). Each iteration follows the paper's code order:

    discriminator step  D_B on real B against G_A(A) (through the image pool when pool_size > 0), with
                        the discriminator regularisers every kind has (gradient penalty, LeCam,
                        edge-promoting: ``TrainStep.discriminator_loss``)
    generator step      lambda_gan x adversarial + lambda_nce x PatchNCE(A, G_A(A))
                        [+ PatchNCE(B, G_A(B)), the NCE identity loss, for CUT]

FastCUT (lambda_nce 10, no NCE identity, flip equivariance) trades some quality for speed: its
generator runs on A only, and half of the time on a mirrored A whose features are mirrored back
before the contrast, which asks G to commute with horizontal flips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cyclegan.config import Config
from cyclegan.devices import autocast
from cyclegan.networks import build_discriminator, build_generator
from cyclegan.patchnce import PatchSampleMLP, nce_layer_channels, patch_nce_loss
from cyclegan.training.models import NamedNetworks
from cyclegan.training.step import TRAIN_STEPS, ModelKind, TrainStep


@dataclass
class CUTNets(NamedNetworks):
    G_A: nn.Module  # A -> B
    D_B: nn.Module  # real B vs G_A(A)
    F: PatchSampleMLP  # PatchNCE projection heads, trained with the generator


@dataclass
class CUTStep(TrainStep):
    """One CUT / FastCUT iteration; shares preparation, pools, EMA, DiffAugment and the distributed
    gradient averaging of ``TrainStep``."""

    def patch_nce(self, source: Tensor, translated: Tensor, *, flipped: bool) -> Tensor:
        """Mean over encoder layers of PatchNCE(translated patches | same places in source)."""
        g, loss = self.compiled.G_A, self.cfg.loss
        feat_q = g.nce_features(translated)
        if flipped:  # G saw a mirrored input: mirror its features back to line up with the source
            feat_q = [f.flip(3) for f in feat_q]
        feat_k = g.nce_features(source)
        k, ids = self.models.F(feat_k, num_patches=loss.nce_patches)
        q, _ = self.models.F(feat_q, num_patches=loss.nce_patches, patch_ids=ids)
        per_layer = [patch_nce_loss(qi, ki, batch_size=source.shape[0], temperature=loss.nce_temperature)
                     for qi, ki in zip(q, k)]
        return sum(per_layer) / len(per_layer)

    def iterate(self, batch: dict[str, Tensor], *, train_generators: bool = True) -> dict[str, Tensor]:
        loss_cfg, m = self.cfg.loss, self.compiled
        real_a, real_b = self._prepare(batch["A"]), self._prepare(batch["B"])
        n = real_a.shape[0]
        # In the warm-up (train_generators False) the same pass without gradients: D_B sees the fakes
        # a training step would make.
        with autocast(self.device, self.cfg.train.precision), torch.set_grad_enabled(train_generators):
            # One generator pass over A (and B for the NCE identity loss), as the paper's code does.
            real = torch.cat([real_a, real_b]) if loss_cfg.nce_idt else real_a
            flipped = loss_cfg.flip_equivariance and bool(torch.rand(()) < 0.5)
            fake = m.G_A(real.flip(3) if flipped else real).float()  # one input dtype: TrainStep._generate
            fake_b = fake[:n]

        # -- discriminator step
        pooled = self._pool("D_B", fake_b.detach())
        smooth = {"B": self._prepare(batch["B_smooth"])} if "B_smooth" in batch else {}
        with autocast(self.device, self.cfg.train.precision):
            d_loss, d_terms = self.discriminator_loss([("D_B", real_b, pooled)], smooth)
        self._backward_and_step(d_loss, self.opt_d)
        d_logged = {"D_B": d_loss, **{k: v for k, v in d_terms.items() if k != "D_B"}}
        if not train_generators:
            return d_logged

        # -- generator step
        self.models.D_B.requires_grad_(False)
        with autocast(self.device, self.cfg.train.precision):
            real_pred = self._disc(m.D_B, real_b) if self.gan.generator_needs_real else None
            losses = {"G_gan": self.gan.generator(self._disc(m.D_B, fake_b), real_pred)}
            losses["nce"] = self.patch_nce(real_a, fake_b, flipped=flipped)
            nce = losses["nce"]
            if loss_cfg.nce_idt:
                losses["nce_idt"] = self.patch_nce(real_b, fake[n:], flipped=flipped)
                nce = 0.5 * (nce + losses["nce_idt"])
            total = loss_cfg.lambda_gan * losses["G_gan"] + loss_cfg.lambda_nce * nce
        self._backward_and_step(total, self.opt_g)
        self._update_ema()
        self.models.D_B.requires_grad_(True)
        # D_B: the discriminator's total with its regularisers, as this step has always logged it
        losses.update(G_total=total, **d_logged)
        return losses

    def eval_generators(self) -> dict[str, nn.Module]:
        return {"G_A": self.generator_for_samples("G_A")}

    def sample_rows(self, fixed: dict[str, Tensor]) -> list[Tensor]:
        """Rows: real A | fake B | real B | G(real B) (CUT's identity: a B image should pass through)."""
        g = self.generator_for_samples("G_A")
        real_a, real_b = self._prepare(fixed["A"]), self._prepare(fixed["B"])
        return [real_a, g(real_a), real_b, g(real_b)]


def _cut_networks(cfg: Config, context: dict[str, Any]) -> CUTNets:
    m = cfg.model
    return CUTNets(
        G_A=build_generator(m.generator, init=m.init, init_gain=m.init_gain),
        D_B=build_discriminator(m.discriminator, init=m.init, init_gain=m.init_gain),
        F=PatchSampleMLP(channels=nce_layer_channels(ngf=m.generator.ngf), nc=cfg.loss.nce_mlp_dim),
    )


CUT = ModelKind(step=CUTStep, networks=_cut_networks, generators=("G_A",), discriminators=("D_B",),
                trained_with_generators=("F",))
TRAIN_STEPS.register("cut")(CUT)
TRAIN_STEPS.register("fastcut")(CUT)  # the same step; FastCUT is CUT with the fastcut preset's loss settings
