"""One CycleGAN iteration (Zhu et al. 2017), its losses returned as values, and the table of step
builders by ``model.kind``.

Every iteration runs

    generator step      adversarial + cycle + identity losses, one Adam step for (G_A, G_B)
    pool                fakes go through the image history pools
    discriminator step  adversarial loss (+ gradient penalty), one Adam step for (D_A, D_B)

``TRAIN_STEPS`` maps each ``model.kind`` to the function that builds its step (``cyclegan`` here,
``cut``/``fastcut`` in ``training.cut``); ``config.MODEL_KINDS`` lists the same names for validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

from cyclegan import checkpoint as ckpt_io
from cyclegan.config import Config
from cyclegan.devices import autocast
from cyclegan.diffaug import diff_augment, parse_policy
from cyclegan.distributed import DistInfo, average_gradients, gather_batch, global_mean, local_slice
from cyclegan.ema import EMA
from cyclegan.image import to_model_range
from cyclegan.losses import (
    GANLoss,
    LeCamEMA,
    UncertaintyWeights,
    build_gan_loss,
    color_loss,
    cycle_loss,
    edge_loss,
    edge_promote_loss,
    feature_matching_loss,
    gradient_penalty,
    identity_loss,
    lecam_regularizer,
)
from cyclegan.pool import ImagePool
from cyclegan.registry import Registry
from cyclegan.training.models import CycleGAN, adam, build_ema, build_models, warm_start

# model.kind -> fn(cfg, device, *, warm_start_nets, dist) -> TrainStep
TRAIN_STEPS: Registry = Registry("model kind")


@dataclass
class TrainStep:
    """Everything one iteration needs; ``__call__`` runs it and returns detached losses."""

    cfg: Config
    models: CycleGAN
    compiled: CycleGAN  # the same modules, possibly wrapped by torch.compile
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    gan: GANLoss
    pool_a: ImagePool
    pool_b: ImagePool
    scaler: torch.amp.GradScaler
    device: torch.device
    # Learned weights of the non-adversarial generator terms (loss.adaptive_weighting=uncertainty);
    # their parameters are in opt_g and their values in the training state.
    loss_weights: UncertaintyWeights | None = None
    dist: DistInfo = field(default_factory=DistInfo)
    ema: dict[str, EMA] = field(default_factory=dict)  # generator name -> its moving average
    augment: tuple[str, ...] = ()  # DiffAugment policy applied before every discriminator call
    lecam: dict[str, LeCamEMA] = field(default_factory=dict)  # "D_A"/"D_B" -> LeCam anchors (loss.lambda_lecam)

    def small_data_terms(self, name: str, net: nn.Module, real_pred, fake_pred, smooth: Tensor | None,
                         losses: dict[str, Tensor]) -> Tensor:
        """Discriminator ``name``'s edge-promoting and LeCam terms, weighted, recorded in ``losses``."""
        loss_cfg, extra = self.cfg.loss, torch.zeros((), device=self.device)
        if smooth is not None:  # CartoonGAN: edge-smoothed style images are labelled fake
            losses[f"edge_promote_{name}"] = edge_promote_loss(self.gan, self._disc(net, smooth), real_pred)
            extra = extra + loss_cfg.lambda_edge_promote * losses[f"edge_promote_{name}"]
        if name in self.lecam:  # LeCam: anchors first updated with this step's scores, as the authors do
            self.lecam[name].update(real_pred, fake_pred)
            losses[f"lecam_{name}"] = lecam_regularizer(real_pred, fake_pred, self.lecam[name])
            extra = extra + loss_cfg.lambda_lecam * losses[f"lecam_{name}"]
        return extra

    def _disc(self, net: nn.Module, x: Tensor):
        """A discriminator call: real and fake images alike are augmented first (DiffAugment, sec. 3),
        differentiably, so the generator is trained through the augmentation."""
        return net(diff_augment(x, policy=self.augment)) if self.augment else net(x)

    def _update_ema(self) -> None:
        for name, avg in self.ema.items():
            avg.update(getattr(self.models, name))

    def generator_for_samples(self, name: str) -> nn.Module:
        """The averaged generator when EMA is on (what translate will use), else the trained one."""
        return self.ema[name].module if name in self.ema else getattr(self.models, name)

    def eval_generators(self) -> dict[str, nn.Module]:
        return {name: self.generator_for_samples(name) for name in ("G_A", "G_B")}

    def checkpoint_networks(self) -> dict[str, nn.Module]:
        return {**self.models.networks(), **{f"{k}_ema": v.module for k, v in self.ema.items()}}

    def sample_rows(self, fixed: dict[str, Tensor]) -> list[Tensor]:
        """Rows: real A | fake B | reconstructed A | real B | fake A | reconstructed B (seed 000 6.4)."""
        g_a, g_b = self.generator_for_samples("G_A"), self.generator_for_samples("G_B")
        real_a, real_b = self._prepare(fixed["A"]), self._prepare(fixed["B"])
        fake_b, fake_a = g_a(real_a), g_b(real_b)
        return [real_a, fake_b, g_b(fake_b), real_b, fake_a, g_a(fake_a)]

    def _backward_and_step(self, total: Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        average_gradients((p for group in optimizer.param_groups for p in group["params"]), self.dist)
        self.scaler.step(optimizer)

    def _pool(self, pool: ImagePool, fakes: Tensor) -> Tensor:
        # All processes query one pool with the global batch, so they keep identical pools.
        return local_slice(pool.query(gather_batch(fakes, self.dist)), self.dist)

    def _prepare(self, batch: Tensor) -> Tensor:  # uint8 [B, 3, H, W] -> float [-1, 1] on device
        x = to_model_range(batch.to(self.device, non_blocking=True))
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _generate(self, name: str, x: Tensor, aux: dict[str, list]) -> Tensor:
        """Run generator ``name`` on x; a generator with auxiliary losses (the VQ bottleneck) returns
        them as values, collected per generator in ``aux`` ({name: [aux dict per pass]})."""
        net = getattr(self.compiled, name)
        if getattr(ckpt_io.unwrap(getattr(self.models, name)), "aux_losses", False):
            y, extra = net(x, return_aux=True)
            aux[name].append(extra)
        else:
            y = net(x)
        # Under autocast y is bf16/fp16; handing it on as fp32 gives every network one input dtype,
        # so torch.compile traces each once per grad mode rather than also once per dtype. Exact:
        # autocast rounds it back to the same bf16 values at the next convolution.
        return y.float()

    def generator_step(self, real_a: Tensor, real_b: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        m, loss_cfg = self.compiled, self.cfg.loss
        for d in (self.models.D_A, self.models.D_B):
            d.requires_grad_(False)  # G's step must not accumulate gradients in D
        aux: dict[str, list] = {"G_A": [], "G_B": []}
        with autocast(self.device, self.cfg.train.precision):
            fake_b = self._generate("G_A", real_a, aux)
            fake_a = self._generate("G_B", real_b, aux)
            real_pred_a = self._disc(m.D_A, real_a) if self.gan.generator_needs_real else None
            real_pred_b = self._disc(m.D_B, real_b) if self.gan.generator_needs_real else None
            losses = {
                "G_A_gan": self.gan.generator(self._disc(m.D_B, fake_b), real_pred_b),
                "G_B_gan": self.gan.generator(self._disc(m.D_A, fake_a), real_pred_a),
                "cycle_A": cycle_loss(self._generate("G_B", fake_b, aux), real_a),
                "cycle_B": cycle_loss(self._generate("G_A", fake_a, aux), real_b),
            }
            # Non-adversarial terms, lambda-weighted; only those with lambda > 0 exist, so a learned
            # weight never meets a term fixed at zero (its log-variance would run to -infinity).
            terms: dict[str, Tensor] = {}
            if loss_cfg.lambda_cyc > 0:
                terms["cycle"] = loss_cfg.lambda_cyc * (losses["cycle_A"] + losses["cycle_B"])
            if loss_cfg.lambda_id > 0:
                losses["idt_A"] = identity_loss(self._generate("G_A", real_b, aux), real_b)
                losses["idt_B"] = identity_loss(self._generate("G_B", real_a, aux), real_a)
                terms["idt"] = loss_cfg.lambda_id * (losses["idt_A"] + losses["idt_B"])
            if loss_cfg.lambda_edge > 0:  # outlines stay where they were (Sobel)
                losses["edge_A"] = edge_loss(fake_b, real_a)
                losses["edge_B"] = edge_loss(fake_a, real_b)
                terms["edge"] = loss_cfg.lambda_edge * (losses["edge_A"] + losses["edge_B"])
            if loss_cfg.lambda_color > 0:  # broad hues stay (pooled chroma)
                losses["color_A"] = color_loss(fake_b, real_a, pool=loss_cfg.color_pool)
                losses["color_B"] = color_loss(fake_a, real_b, pool=loss_cfg.color_pool)
                terms["color"] = loss_cfg.lambda_color * (losses["color_A"] + losses["color_B"])
            if loss_cfg.lambda_fm > 0:  # D's features of fake vs real target (pix2pixHD, Wang et al., CVPR 2018, eq. 4)
                d_a, d_b = self.models.D_A, self.models.D_B
                losses["fm_A"] = feature_matching_loss(d_b.features(fake_b)[:-1], d_b.features(real_b)[:-1])
                losses["fm_B"] = feature_matching_loss(d_a.features(fake_a)[:-1], d_a.features(real_a)[:-1])
                terms["fm"] = loss_cfg.lambda_fm * (losses["fm_A"] + losses["fm_B"])
            total = loss_cfg.lambda_gan * (losses["G_A_gan"] + losses["G_B_gan"])
            if self.loss_weights is not None:
                total = total + self.loss_weights(terms)
                losses.update({f"weight_{k}": v for k, v in self.loss_weights.weights().items()})
            elif terms:
                total = total + sum(terms.values())
            # VQ bottleneck: commitment (and, without EMA, codebook) losses of every pass of each
            # generator, averaged over its passes; perplexity of its first pass, the translation.
            for name, suffix in (("G_A", "A"), ("G_B", "B")):
                if aux[name]:
                    passes = aux[name]
                    losses[f"vq_commit_{suffix}"] = sum(p["vq_commitment"] for p in passes) / len(passes)
                    codebook = sum(p["vq_codebook"] for p in passes) / len(passes)
                    total = total + loss_cfg.lambda_vq * losses[f"vq_commit_{suffix}"] + codebook
                    losses[f"vq_perplexity_{suffix}"] = passes[0]["vq_perplexity"]
        self._backward_and_step(total, self.opt_g)
        self._update_ema()
        for d in (self.models.D_A, self.models.D_B):
            d.requires_grad_(True)
        losses["G_total"] = total
        return losses, fake_a.detach(), fake_b.detach()

    def discriminator_step(
        self, real_a: Tensor, real_b: Tensor, fake_a: Tensor, fake_b: Tensor, smooth: dict[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        m, smooth = self.compiled, smooth or {}
        with autocast(self.device, self.cfg.train.precision):
            losses, total = {}, 0
            for name, net, real, fake, domain in (("D_A", m.D_A, real_a, fake_a, "A"), ("D_B", m.D_B, real_b, fake_b, "B")):
                real_pred, fake_pred = self._disc(net, real), self._disc(net, fake)
                losses[name] = self.gan.discriminator(real_pred, fake_pred)
                total = total + losses[name] + self.small_data_terms(name, net, real_pred, fake_pred,
                                                                     smooth.get(domain), losses)
            if self.gan.needs_gradient_penalty or self.cfg.loss.gradient_penalty:
                # fp16: penalise the unscaled gradient of the scaled score (one host read of the scale)
                scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
                losses["gp_A"] = gradient_penalty(m.D_A, real_a, fake_a, loss_scale=scale)
                losses["gp_B"] = gradient_penalty(m.D_B, real_b, fake_b, loss_scale=scale)
                total = total + self.cfg.loss.lambda_gp * (losses["gp_A"] + losses["gp_B"])
        self._backward_and_step(total, self.opt_d)
        return losses

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        real_a, real_b = self._prepare(batch["A"]), self._prepare(batch["B"])
        g_losses, fake_a, fake_b = self.generator_step(real_a, real_b)
        fake_a, fake_b = self._pool(self.pool_a, fake_a), self._pool(self.pool_b, fake_b)
        smooth = {d: self._prepare(batch[f"{d}_smooth"]) for d in ("A", "B") if f"{d}_smooth" in batch}
        d_losses = self.discriminator_step(real_a, real_b, fake_a, fake_b, smooth)
        self.scaler.update()
        return {k: v.detach() for k, v in {**g_losses, **d_losses}.items()}


def weighted_terms(cfg: Config) -> tuple[str, ...]:
    """Names of the generator terms that ``loss.adaptive_weighting`` weighs (those with lambda > 0)."""
    loss = cfg.loss
    pairs = (("cycle", loss.lambda_cyc), ("idt", loss.lambda_id), ("edge", loss.lambda_edge),
             ("color", loss.lambda_color), ("fm", loss.lambda_fm))
    return tuple(name for name, weight in pairs if weight > 0)


def build_train_step(
    cfg: Config, device: torch.device, *, warm_start_nets: bool = True, dist: DistInfo | None = None
) -> TrainStep:
    """Networks, optimisers, pools and loss for one run; ``warm_start_nets=False`` skips
    ``train.init_from`` (a resumed run restores every weight from its own checkpoint); ``dist``
    describes the processes sharing each global batch (default: this one alone)."""
    build = TRAIN_STEPS.get_or_raise(cfg.model.kind)
    return build(cfg, device, warm_start_nets=warm_start_nets, dist=dist or DistInfo())


@TRAIN_STEPS.register("cyclegan")
def build_cyclegan_step(
    cfg: Config, device: torch.device, *, warm_start_nets: bool, dist: DistInfo
) -> TrainStep:
    """The four networks of ``build_models`` (warm-started from ``train.init_from`` unless told not
    to), Adam for the generators (and learned loss weights) and for the discriminators, two pools."""
    models = build_models(cfg, device)
    if warm_start_nets and cfg.train.init_from:
        warm_start(models, cfg)
    compiled = models
    if cfg.train.compile:
        compiled = CycleGAN(
            **{k: torch.compile(v, mode=cfg.train.compile_mode) for k, v in models.networks().items()}
        )
    loss_weights = None
    g_params = list(models.G_A.parameters()) + list(models.G_B.parameters())
    if cfg.loss.adaptive_weighting == "uncertainty":
        loss_weights = UncertaintyWeights(names=weighted_terms(cfg)).to(device)
        g_params += list(loss_weights.parameters())  # last, so G's optimiser indices are unchanged
    return TrainStep(
        cfg=cfg,
        models=models,
        compiled=compiled,
        opt_g=adam(g_params, cfg, device),
        opt_d=adam(list(models.D_A.parameters()) + list(models.D_B.parameters()), cfg, device,
                   lr_scale=cfg.optim.d_lr_ratio),
        gan=build_gan_loss(cfg.loss.gan, batch_mean=partial(global_mean, info=dist)),
        pool_a=ImagePool(size=cfg.loss.pool_size, seed=cfg.train.seed + 1),
        pool_b=ImagePool(size=cfg.loss.pool_size, seed=cfg.train.seed + 2),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16"),
        device=device,
        loss_weights=loss_weights,
        ema=build_ema(cfg, {"G_A": models.G_A, "G_B": models.G_B}),
        augment=parse_policy(cfg.train.diffaug),
        dist=dist,
        lecam=build_lecam(cfg, ("D_A", "D_B"), dist),
    )


def build_lecam(cfg: Config, names: tuple[str, ...], dist: DistInfo) -> dict[str, LeCamEMA]:
    if cfg.loss.lambda_lecam <= 0:
        return {}
    return {n: LeCamEMA(decay=cfg.loss.lecam_decay, batch_mean=partial(global_mean, info=dist)) for n in names}
