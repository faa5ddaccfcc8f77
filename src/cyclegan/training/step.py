"""The training step of every model kind: what the kinds share, the table of kinds (``TRAIN_STEPS``)
and the CycleGAN kind (Zhu et al., ICCV 2017), whose every iteration runs

    generator step      adversarial + cycle + identity losses, one Adam step for (G_A, G_B)
    pool                fakes go through the image history pools
    discriminator step  adversarial loss (+ gradient penalty), one Adam step for (D_A, D_B)

A model kind is one ``ModelKind`` registered in ``TRAIN_STEPS`` (``cyclegan`` here, ``cut``/``fastcut``
in ``training.cut``, ``distill`` in ``training.distill``): the networks it builds, which of them are
generators and discriminators, and its ``TrainStep`` subclass (how it steps). ``build_train_step`` does
everything the kinds share once: seeding, device and memory format, checkpointed residual blocks, the
warm start, torch.compile, Adam for each side, the GAN loss, GradScaler, image pools, EMA, DiffAugment
and LeCam anchors; ``TrainStep`` holds the shared parts of an iteration (preparation, the
discriminator loss with its regularisers, backward with gradient averaging). What each kind reads from
the config is declared in ``config.kinds`` under the same name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

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
    tone_loss,
)
from cyclegan.pool import ImagePool
from cyclegan.registry import Registry
from cyclegan.training.models import adam, build_ema, build_networks_on, cyclegan_networks, warm_start

# model.kind -> its ModelKind
TRAIN_STEPS: Registry = Registry("model kind")


class Networks(Protocol):
    """A kind's named networks (``CycleGAN``, ``CUTNets``, ``DistillNets``): attributes by name."""

    def networks(self) -> dict[str, nn.Module]: ...

    def train(self, mode: bool = True) -> None: ...


@dataclass
class TrainStep:
    """Everything one iteration needs, built by ``build_train_step``; a kind's subclass defines
    ``iterate`` (its iteration, returning its losses), ``eval_generators`` and ``sample_rows``."""

    cfg: Config
    models: Networks
    compiled: Networks  # the same modules, possibly wrapped by torch.compile
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    gan: GANLoss
    # discriminator name -> the pool of generated images it sees ("D_A": fakes of domain A)
    pools: dict[str, ImagePool]
    scaler: torch.amp.GradScaler
    device: torch.device
    # Learned weights of the non-adversarial generator terms (loss.adaptive_weighting=uncertainty);
    # their parameters are in opt_g and their values in the training state.
    loss_weights: UncertaintyWeights | None = None
    dist: DistInfo = field(default_factory=DistInfo)
    ema: dict[str, EMA] = field(default_factory=dict)  # generator name -> its moving average
    augment: tuple[str, ...] = ()  # DiffAugment policy applied before every discriminator call
    # discriminator name -> its LeCam anchors (loss.lambda_lecam)
    lecam: dict[str, LeCamEMA] = field(default_factory=dict)

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

    def discriminator_loss(self, judged: list[tuple[str, Tensor, Tensor]], smooth: dict[str, Tensor]
                           ) -> tuple[Tensor, dict[str, Tensor]]:
        """Each (discriminator, real, fake) of ``judged``: its adversarial loss, edge-promoting and LeCam
        terms, then the gradient penalty of each (wgangp, or loss.gradient_penalty). ``smooth``: the
        edge-smoothed style images by domain letter. Returns (the total to minimise, the terms)."""
        m, losses, total = self.compiled, {}, 0
        for name, real, fake in judged:
            net = getattr(m, name)
            real_pred, fake_pred = self._disc(net, real), self._disc(net, fake)
            losses[name] = self.gan.discriminator(real_pred, fake_pred)
            total = total + losses[name] + self.small_data_terms(name, net, real_pred, fake_pred,
                                                                 smooth.get(name[-1]), losses)
        if self.gan.needs_gradient_penalty or self.cfg.loss.gradient_penalty:
            # fp16: penalise the unscaled gradient of the scaled score (one host read of the scale)
            scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
            penalties = []
            for name, real, fake in judged:
                losses[f"gp_{name[-1]}"] = gradient_penalty(getattr(m, name), real, fake, loss_scale=scale)
                penalties.append(losses[f"gp_{name[-1]}"])
            total = total + self.cfg.loss.lambda_gp * sum(penalties[1:], penalties[0])
        return total, losses

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

    def __call__(self, batch: dict[str, Tensor], *, iteration: int = 0) -> dict[str, Tensor]:
        """One iteration of the kind's ``iterate`` on uint8 ``batch`` ({"A", "B": [B, 3, H, W]}, and
        "A_smooth"/"B_smooth" with the edge-promoting loss); its losses, detached. ``iteration``: the
        run's iterations completed before this one (what schedules by iteration read); the first
        ``train.d_warmup_steps`` of them train the discriminators only."""
        losses = self.iterate(batch, train_generators=iteration >= self.cfg.train.d_warmup_steps)
        self.scaler.update()
        return {k: v.detach() for k, v in losses.items()}

    def iterate(self, batch: dict[str, Tensor], *, train_generators: bool = True) -> dict[str, Tensor]:
        """The kind's iteration: both optimiser steps; returns its losses (not yet detached). Without
        ``train_generators`` (the warm-up of ``train.d_warmup_steps``, in which discriminators catch up
        with generators that start from trained weights) the generators make their fakes without
        gradients and nothing of theirs is stepped: no generator loss, optimiser step or EMA update."""
        raise NotImplementedError

    def eval_generators(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def sample_rows(self, fixed: dict[str, Tensor]) -> list[Tensor]:
        raise NotImplementedError

    def checkpoint_networks(self) -> dict[str, nn.Module]:
        return {**self.models.networks(), **{f"{k}_ema": v.module for k, v in self.ema.items()}}

    def _backward_and_step(self, total: Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        average_gradients((p for group in optimizer.param_groups for p in group["params"]), self.dist)
        self.scaler.step(optimizer)

    def _pool(self, name: str, fakes: Tensor) -> Tensor:
        """Fakes for discriminator ``name`` through its image pool. All processes query one pool with
        the global batch, so they keep identical pools."""
        return local_slice(self.pools[name].query(gather_batch(fakes, self.dist)), self.dist)

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


@dataclass
class CycleGANStep(TrainStep):
    """One CycleGAN iteration: generator phase, pools, discriminator phase (module docstring)."""

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
            if loss_cfg.lambda_tone > 0:  # each region's brightness and hue stay (pooled RGB)
                losses["tone_A"] = tone_loss(fake_b, real_a, pool=loss_cfg.color_pool)
                losses["tone_B"] = tone_loss(fake_a, real_b, pool=loss_cfg.color_pool)
                terms["tone"] = loss_cfg.lambda_tone * (losses["tone_A"] + losses["tone_B"])
            if loss_cfg.lambda_fm > 0:  # D's features of fake vs real target (pix2pixHD feature matching)
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
        self, real_a: Tensor, real_b: Tensor, fake_a: Tensor, fake_b: Tensor,
        smooth: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        with autocast(self.device, self.cfg.train.precision):
            judged = [("D_A", real_a, fake_a), ("D_B", real_b, fake_b)]
            total, losses = self.discriminator_loss(judged, smooth or {})
        self._backward_and_step(total, self.opt_d)
        return losses

    def frozen_fakes(self, real_a: Tensor, real_b: Tensor) -> tuple[Tensor, Tensor]:
        """(G_B(B), G_A(A)) without gradients: what the discriminators judge while the generators wait."""
        aux: dict[str, list] = {"G_A": [], "G_B": []}
        with torch.no_grad(), autocast(self.device, self.cfg.train.precision):
            fake_b = self._generate("G_A", real_a, aux)
            fake_a = self._generate("G_B", real_b, aux)
        return fake_a, fake_b

    def iterate(self, batch: dict[str, Tensor], *, train_generators: bool = True) -> dict[str, Tensor]:
        real_a, real_b = self._prepare(batch["A"]), self._prepare(batch["B"])
        if train_generators:
            g_losses, fake_a, fake_b = self.generator_step(real_a, real_b)
        else:
            g_losses, (fake_a, fake_b) = {}, self.frozen_fakes(real_a, real_b)
        fake_a, fake_b = self._pool("D_A", fake_a), self._pool("D_B", fake_b)
        smooth = {d: self._prepare(batch[f"{d}_smooth"]) for d in ("A", "B") if f"{d}_smooth" in batch}
        d_losses = self.discriminator_step(real_a, real_b, fake_a, fake_b, smooth)
        return {**g_losses, **d_losses}

    def eval_generators(self) -> dict[str, nn.Module]:
        return {name: self.generator_for_samples(name) for name in ("G_A", "G_B")}

    def sample_rows(self, fixed: dict[str, Tensor]) -> list[Tensor]:
        """Rows: real A | fake B | reconstructed A | real B | fake A | reconstructed B."""
        g_a, g_b = self.generator_for_samples("G_A"), self.generator_for_samples("G_B")
        real_a, real_b = self._prepare(fixed["A"]), self._prepare(fixed["B"])
        fake_b, fake_a = g_a(real_a), g_b(real_b)
        return [real_a, fake_b, g_b(fake_b), real_b, fake_a, g_a(fake_a)]


def weighted_terms(cfg: Config) -> tuple[str, ...]:
    """Names of the generator terms that ``loss.adaptive_weighting`` weighs (those with lambda > 0)."""
    loss = cfg.loss
    pairs = (("cycle", loss.lambda_cyc), ("idt", loss.lambda_id), ("edge", loss.lambda_edge),
             ("color", loss.lambda_color), ("tone", loss.lambda_tone), ("fm", loss.lambda_fm))
    return tuple(name for name, weight in pairs if weight > 0)


@dataclass(frozen=True)
class ModelKind:
    """What a model kind states; ``build_train_step`` does everything else. Its config options are
    declared under the same name in ``config.kinds``."""

    step: type[TrainStep]  # how it steps
    # cfg, context -> its networks, built in this order right after torch.manual_seed(train.seed)
    networks: Callable[[Config, dict[str, Any]], Networks]
    generators: tuple[str, ...]  # trained translators: EMA copies, checkpointed residual blocks
    discriminators: tuple[str, ...]  # each gets a pool of the fakes it judges and LeCam anchors
    trained_with_generators: tuple[str, ...] = ()  # also in the generators' optimiser (CUT's F, distill's P)
    # cfg, device -> context given to ``networks`` and, as fields, to the step (distill: its teacher)
    prepare: Callable[[Config, torch.device], dict[str, Any]] = lambda cfg, device: {}
    # cfg, networks, context -> None: weights a new run starts from before train.init_from (distill: D)
    inherit: Callable[[Config, Networks, dict[str, Any]], None] = lambda cfg, nets, context: None


def build_train_step(
    cfg: Config, device: torch.device, *, warm_start_nets: bool = True, dist: DistInfo | None = None
) -> TrainStep:
    """Networks, optimisers, pools, losses and their state for one run of ``model.kind``;
    ``warm_start_nets=False`` skips what a new run inherits and ``train.init_from`` (a resumed run
    restores every weight from its own checkpoint); ``dist`` describes the processes sharing each global
    batch (default: this one alone)."""
    kind: ModelKind = TRAIN_STEPS.get_or_raise(cfg.model.kind)
    dist = dist or DistInfo()
    context = kind.prepare(cfg, device)
    torch.manual_seed(cfg.train.seed)
    models = kind.networks(cfg, context)
    build_networks_on(models, cfg, device, generators=kind.generators)
    if warm_start_nets:
        kind.inherit(cfg, models, context)
        if cfg.train.init_from:
            warm_start(models, cfg)
    named = models.networks()
    compiled = models
    if cfg.train.compile:
        compiled = type(models)(**{k: torch.compile(v, mode=cfg.train.compile_mode)
                                   for k, v in named.items()})
    g_side = [n for n in kind.generators + kind.trained_with_generators if n in named]  # P may be absent
    g_params = [p for n in g_side for p in named[n].parameters()]
    loss_weights = None
    if cfg.loss.adaptive_weighting == "uncertainty":
        loss_weights = UncertaintyWeights(names=weighted_terms(cfg)).to(device)
        g_params += list(loss_weights.parameters())  # last, so G's optimiser indices are unchanged
    d_params = [p for n in kind.discriminators for p in named[n].parameters()]
    return kind.step(
        cfg=cfg,
        models=models,
        compiled=compiled,
        opt_g=adam(g_params, cfg, device),
        opt_d=adam(d_params, cfg, device, lr_scale=cfg.optim.d_lr_ratio),
        gan=build_gan_loss(cfg.loss.gan, batch_mean=partial(global_mean, info=dist)),
        # D_A's pool (fakes of A) draws from seed + 1, D_B's from seed + 2, whichever kind
        pools={n: ImagePool(size=cfg.loss.pool_size, seed=cfg.train.seed + 1 + "AB".index(n[-1]))
               for n in kind.discriminators},
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16"),
        device=device,
        loss_weights=loss_weights,
        ema=build_ema(cfg, {n: named[n] for n in kind.generators}),
        augment=parse_policy(cfg.train.diffaug),
        dist=dist,
        lecam=build_lecam(cfg, kind.discriminators, dist),
        **context,
    )


def build_lecam(cfg: Config, names: tuple[str, ...], dist: DistInfo) -> dict[str, LeCamEMA]:
    if cfg.loss.lambda_lecam <= 0:
        return {}
    batch_mean = partial(global_mean, info=dist)
    return {n: LeCamEMA(decay=cfg.loss.lecam_decay, batch_mean=batch_mean) for n in names}


TRAIN_STEPS.register("cyclegan")(ModelKind(step=CycleGANStep, networks=cyclegan_networks,
                                           generators=("G_A", "G_B"), discriminators=("D_A", "D_B")))
