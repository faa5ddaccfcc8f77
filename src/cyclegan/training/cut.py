"""CUT and FastCUT: one-sided translation A -> B with PatchNCE (Park, Efros, Zhang and Zhu, ECCV 2020).

One generator ``G_A`` (A -> B), one discriminator ``D_B``, and per-layer projection MLPs ``F``; no
second generator and no cycle. Content is kept by the PatchNCE loss between the encoder features of
the input and of its translation (``patchnce.py``). Each iteration follows the paper's code order:

    discriminator step  D_B on real B against G_A(A) (through the image pool when pool_size > 0)
    generator step      lambda_gan x adversarial + lambda_nce x PatchNCE(A, G_A(A))
                        [+ PatchNCE(B, G_A(B)), the NCE identity loss, for CUT]

FastCUT (lambda_nce 10, no NCE identity, flip equivariance) trades some quality for speed: its
generator runs on A only, and half of the time on a mirrored A whose features are mirrored back
before the contrast, which asks G to commute with horizontal flips.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from cyclegan.config import Config
from cyclegan.devices import autocast
from cyclegan.diffaug import parse_policy
from cyclegan.distributed import DistInfo, global_mean
from cyclegan.losses import build_gan_loss
from cyclegan.networks import build_discriminator, build_generator
from cyclegan.patchnce import PatchSampleMLP, nce_layer_channels, patch_nce_loss
from cyclegan.pool import ImagePool
from cyclegan.training.models import adam, build_ema, warm_start
from cyclegan.training.step import TRAIN_STEPS, TrainStep


@dataclass
class CUTNets:
    G_A: nn.Module  # A -> B
    D_B: nn.Module  # real B vs G_A(A)
    F: PatchSampleMLP  # PatchNCE projection heads, trained with the generator

    def networks(self) -> dict[str, nn.Module]:
        return {"G_A": self.G_A, "D_B": self.D_B, "F": self.F}

    def train(self, mode: bool = True) -> None:
        for net in self.networks().values():
            net.train(mode)


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

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        loss_cfg, m = self.cfg.loss, self.compiled
        real_a, real_b = self._prepare(batch["A"]), self._prepare(batch["B"])
        n = real_a.shape[0]
        with autocast(self.device, self.cfg.train.precision):
            # One generator pass over A (and B for the NCE identity loss), as the paper's code does.
            real = torch.cat([real_a, real_b]) if loss_cfg.nce_idt else real_a
            flipped = loss_cfg.flip_equivariance and bool(torch.rand(()) < 0.5)
            fake = m.G_A(real.flip(3) if flipped else real).float()  # one input dtype: TrainStep._generate
            fake_b = fake[:n]

        # -- discriminator step
        pooled = self._pool(self.pool_b, fake_b.detach())
        with autocast(self.device, self.cfg.train.precision):
            real_pred, fake_pred = self._disc(m.D_B, real_b), self._disc(m.D_B, pooled)
            d_terms: dict[str, Tensor] = {}
            d_loss = self.gan.discriminator(real_pred, fake_pred)
            smooth = self._prepare(batch["B_smooth"]) if "B_smooth" in batch else None
            d_loss = d_loss + self.small_data_terms("D_B", m.D_B, real_pred, fake_pred, smooth, d_terms)
        self._backward_and_step(d_loss, self.opt_d)

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
        self.scaler.update()
        losses.update(G_total=total, D_B=d_loss, **d_terms)
        return {k: v.detach() for k, v in losses.items()}

    def eval_generators(self) -> dict[str, nn.Module]:
        return {"G_A": self.generator_for_samples("G_A")}

    def sample_rows(self, fixed: dict[str, Tensor]) -> list[Tensor]:
        """Rows: real A | fake B | real B | G(real B) (CUT's identity: a B image should pass through)."""
        g = self.generator_for_samples("G_A")
        real_a, real_b = self._prepare(fixed["A"]), self._prepare(fixed["B"])
        return [real_a, g(real_a), real_b, g(real_b)]


@TRAIN_STEPS.register("cut")
@TRAIN_STEPS.register("fastcut")  # the same step; FastCUT is CUT with the fastcut preset's loss settings
def build_cut_step(
    cfg: Config, device: torch.device, *, warm_start_nets: bool = True, dist: DistInfo | None = None
) -> CUTStep:
    torch.manual_seed(cfg.train.seed)
    m = cfg.model
    nets = CUTNets(
        G_A=build_generator(m.generator, init=m.init, init_gain=m.init_gain),
        D_B=build_discriminator(m.discriminator, init=m.init, init_gain=m.init_gain),
        F=PatchSampleMLP(channels=nce_layer_channels(ngf=m.generator.ngf), nc=cfg.loss.nce_mlp_dim),
    )
    memory_format = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    for net in nets.networks().values():
        net.to(device=device, memory_format=memory_format)
    if cfg.train.grad_checkpointing:
        nets.G_A.checkpoint_blocks = True
    if warm_start_nets and cfg.train.init_from:
        warm_start(nets, cfg)
    compiled = nets
    if cfg.train.compile:
        compiled = CUTNets(**{k: torch.compile(v, mode=cfg.train.compile_mode) for k, v in nets.networks().items()})
    return CUTStep(
        cfg=cfg,
        models=nets,
        compiled=compiled,
        opt_g=adam(list(nets.G_A.parameters()) + list(nets.F.parameters()), cfg, device),
        opt_d=adam(list(nets.D_B.parameters()), cfg, device, lr_scale=cfg.optim.d_lr_ratio),
        gan=build_gan_loss(cfg.loss.gan, batch_mean=partial(global_mean, info=dist or DistInfo())),
        pool_a=ImagePool(size=0),
        pool_b=ImagePool(size=cfg.loss.pool_size, seed=cfg.train.seed + 2),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16"),
        device=device,
        ema=build_ema(cfg, {"G_A": nets.G_A}),
        augment=parse_policy(cfg.train.diffaug),
        dist=dist or DistInfo(),
    )
