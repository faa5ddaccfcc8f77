"""The CycleGAN training loop (Zhu et al. 2017), in one function with named phases.

Naming: ``G_A`` translates A->B and ``G_B`` translates B->A; ``D_A`` judges domain-A images (real A
against G_B's fakes) and ``D_B`` judges domain-B images. Every iteration runs

    generator step      adversarial + cycle + identity losses, one Adam step for (G_A, G_B)
    pool                fakes go through the image history pools
    discriminator step  adversarial loss (+ gradient penalty), one Adam step for (D_A, D_B)

and between iterations: logging (every ``log_every``; the only host sync), ``latest`` snapshots
(every ``save_latest_every``), and at epoch ends the sample grid, LR update and epoch checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from cyclegan import checkpoint as ckpt_io
from cyclegan import distributed as dist_env
from cyclegan.config import Config, build_config, load_config_json
from cyclegan.data import (
    UnpairedImages,
    UnpairedSampler,
    gather_training_files,
    make_loader,
    small_image_warning,
    split_validation,
)
from cyclegan.devices import apply_threads, autocast, precision_warning, resolve_device
from cyclegan.diffaug import diff_augment, parse_policy
from cyclegan.distributed import DistInfo, average_gradients, gather_batch, global_mean, local_slice
from cyclegan.ema import EMA
from cyclegan.errors import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    CycleGANError,
    DataError,
    RunDirError,
    TrainingDivergedError,
    add_followup,
    plain_reason,
)
from cyclegan.fileio import write_text_atomic
from cyclegan.image import make_grid, save_image_atomic, to_model_range, to_uint8
from cyclegan.losses import (
    GANLoss,
    UncertaintyWeights,
    build_gan_loss,
    color_loss,
    cycle_loss,
    edge_loss,
    feature_matching_loss,
    gradient_penalty,
    identity_loss,
)
from cyclegan.networks import build_discriminator, build_generator
from cyclegan.pool import ImagePool
from cyclegan.schedules import learning_rate

# ----------------------------------------------------------------------------------------------
# Models, optimisers, devices


@dataclass
class CycleGAN:
    G_A: nn.Module  # A -> B
    G_B: nn.Module  # B -> A
    D_A: nn.Module  # real A vs G_B(B)
    D_B: nn.Module  # real B vs G_A(A)

    def networks(self) -> dict[str, nn.Module]:
        return {"G_A": self.G_A, "G_B": self.G_B, "D_A": self.D_A, "D_B": self.D_B}

    def train(self, mode: bool = True) -> None:
        for net in self.networks().values():
            net.train(mode)


def build_models(cfg: Config, device: torch.device) -> CycleGAN:
    """Build the four networks; weights depend only on ``train.seed``."""
    torch.manual_seed(cfg.train.seed)
    m = cfg.model
    nets = CycleGAN(
        G_A=build_generator(m.generator, init=m.init, init_gain=m.init_gain),
        G_B=build_generator(m.generator, init=m.init, init_gain=m.init_gain),
        D_A=build_discriminator(m.discriminator, init=m.init, init_gain=m.init_gain),
        D_B=build_discriminator(m.discriminator, init=m.init, init_gain=m.init_gain),
    )
    memory_format = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    for net in nets.networks().values():
        net.to(device=device, memory_format=memory_format)
    if cfg.train.grad_checkpointing:
        for g in (nets.G_A, nets.G_B):
            if not hasattr(g, "checkpoint_blocks"):
                raise ConfigError(f"train.grad_checkpointing: generator {m.generator.name} does not support it")
            g.checkpoint_blocks = True
    return nets


def _adam(params, cfg: Config, device: torch.device) -> torch.optim.Adam:
    # Fused Adam is one kernel per step on CUDA; elsewhere the default (foreach) implementation.
    return torch.optim.Adam(
        params, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2), fused=device.type == "cuda"
    )


# ----------------------------------------------------------------------------------------------
# One iteration


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
            if loss_cfg.lambda_edge > 0:  # seed 004 task 2: outlines stay where they were
                losses["edge_A"] = edge_loss(fake_b, real_a)
                losses["edge_B"] = edge_loss(fake_a, real_b)
                terms["edge"] = loss_cfg.lambda_edge * (losses["edge_A"] + losses["edge_B"])
            if loss_cfg.lambda_color > 0:  # seed 004 task 2: broad hues stay
                losses["color_A"] = color_loss(fake_b, real_a, pool=loss_cfg.color_pool)
                losses["color_B"] = color_loss(fake_a, real_b, pool=loss_cfg.color_pool)
                terms["color"] = loss_cfg.lambda_color * (losses["color_A"] + losses["color_B"])
            if loss_cfg.lambda_fm > 0:  # seed 004 "Feature loss": D's features of fake vs real target
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
        self, real_a: Tensor, real_b: Tensor, fake_a: Tensor, fake_b: Tensor
    ) -> dict[str, Tensor]:
        m = self.compiled
        with autocast(self.device, self.cfg.train.precision):
            losses = {
                "D_A": self.gan.discriminator(self._disc(m.D_A, real_a), self._disc(m.D_A, fake_a)),
                "D_B": self.gan.discriminator(self._disc(m.D_B, real_b), self._disc(m.D_B, fake_b)),
            }
            total = losses["D_A"] + losses["D_B"]
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
        d_losses = self.discriminator_step(real_a, real_b, fake_a, fake_b)
        self.scaler.update()
        return {k: v.detach() for k, v in {**g_losses, **d_losses}.items()}


def weighted_terms(cfg: Config) -> tuple[str, ...]:
    """Names of the generator terms that ``loss.adaptive_weighting`` weighs (those with lambda > 0)."""
    loss = cfg.loss
    pairs = (("cycle", loss.lambda_cyc), ("idt", loss.lambda_id), ("edge", loss.lambda_edge),
             ("color", loss.lambda_color), ("fm", loss.lambda_fm))
    return tuple(name for name, weight in pairs if weight > 0)


def warm_start(models: CycleGAN, cfg: Config) -> list[str]:
    """Copy the networks named in ``train.init_nets`` from the run or checkpoint ``train.init_from``.

    Seed 001 (sec. 5.1) stabilised training on a small dataset with "a pre-trained discriminator";
    this starts D_A/D_B (or any of the four) from an earlier run's weights. The architectures must
    match; the optimiser state is not copied.
    """
    ckpt = ckpt_io.resolve_checkpoint(cfg.train.init_from)
    names = [n.strip() for n in cfg.train.init_nets.split(",")]
    nets = models.networks()
    for name in names:
        if name not in nets:
            raise ConfigError(f"train.init_nets: a {cfg.model.kind} model has no {name} (it has {', '.join(nets)})")
        ckpt_io.load_into(nets[name], ckpt, name)
    return names


def build_train_step(
    cfg: Config, device: torch.device, *, warm_start_nets: bool = True, dist: DistInfo | None = None
) -> TrainStep:
    """Networks, optimisers, pools and loss for one run; ``warm_start_nets=False`` skips
    ``train.init_from`` (a resumed run restores every weight from its own checkpoint); ``dist``
    describes the processes sharing each global batch (default: this one alone)."""
    dist = dist or DistInfo()
    if cfg.model.kind in ("cut", "fastcut"):
        from cyclegan.cut import build_cut_step

        return build_cut_step(cfg, device, warm_start_nets=warm_start_nets, dist=dist)
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
        opt_g=_adam(g_params, cfg, device),
        opt_d=_adam(list(models.D_A.parameters()) + list(models.D_B.parameters()), cfg, device),
        gan=build_gan_loss(cfg.loss.gan, batch_mean=partial(global_mean, info=dist)),
        pool_a=ImagePool(size=cfg.loss.pool_size, seed=cfg.train.seed + 1),
        pool_b=ImagePool(size=cfg.loss.pool_size, seed=cfg.train.seed + 2),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16"),
        device=device,
        loss_weights=loss_weights,
        ema=build_ema(cfg, {"G_A": models.G_A, "G_B": models.G_B}),
        augment=parse_policy(cfg.train.diffaug),
        dist=dist,
    )


def build_ema(cfg: Config, generators: dict[str, nn.Module]) -> dict[str, EMA]:
    if not cfg.train.ema_decay:
        return {}
    return {name: EMA(net, decay=cfg.train.ema_decay) for name, net in generators.items()}


# ----------------------------------------------------------------------------------------------
# Run directory


RUN_ARTEFACTS = ("config.json", "log.jsonl", "metrics.jsonl", "samples", "checkpoints", "tensorboard")

# Changing these on --resume would change what the saved weights or data order mean.
RESUME_FIXED = ("model", "train.batch_size", "train.seed", "data.max_dataset_size", "data.val_fraction",
                "data.crop_size", "loss.gan", "loss.pool_size")


def resolve_run_config(
    out: Path,
    *,
    resume: bool,
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: dict | None = None,
    sets=(),
) -> Config:
    """The config of a new run, or of a resumed one: its saved ``config.json`` plus any new flags."""
    base = None
    if resume:
        saved = Path(out) / "config.json"
        if not saved.is_file():
            raise RunDirError(f"{out}: nothing to resume (no config.json; is this a run directory?)")
        base = load_config_json(saved).to_dict()
        # --max-steps bounds one invocation (a smoke run, a time slice), not the run: a plain
        # --resume after `--max-steps N` continues to the configured epochs.
        base["train"]["max_steps"] = 0
        base["train"]["max_minutes"] = 0.0
    # Data folders are stored absolute so a run resumes from any working directory.
    overrides = {
        key: (str(Path(value).expanduser().resolve()) if key in DATA_PATH_KEYS and value else value)
        for key, value in (overrides or {}).items()
    }
    return build_config(base=base, preset=preset, config_file=config_file, overrides=overrides, sets=sets)


DATA_PATH_KEYS = ("data.dataroot", "data.data_a", "data.data_b")


def check_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Every refusal ``prepare_run_dir`` can make, without touching anything: ``train`` calls this
    first, then checks the data, and only then lets ``prepare_run_dir`` delete an old run."""
    if resume:
        if not (out / "config.json").is_file():
            raise RunDirError(f"{out}: nothing to resume (no config.json; is this a run directory?)")
        ckpt_io.resume_checkpoint(out)  # raises with a clear message when there is none
        return
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            if not ckpt_io.run_checkpoints(out, resumable=True):  # --resume would only fail
                raise RunDirError(f"{out}: run directory is not empty and holds no checkpoint to resume; "
                                  "use --overwrite to start over")
            raise RunDirError(
                f"{out}: run directory is not empty; use --resume to continue it or --overwrite to start over"
            )
        strangers = [p.name for p in out.iterdir() if p.name not in RUN_ARTEFACTS]
        if strangers:
            raise RunDirError(
                f"{out}: holds files that are not run artefacts ({', '.join(sorted(strangers)[:3])}); "
                "refusing to overwrite it, choose another --out"
            )


def resume_hint(out: Path) -> str:
    """What to tell the user after a stop: how to continue, or (nothing saved) how to start again."""
    if ckpt_io.run_checkpoints(out, resumable=True):
        return f"checkpoint saved; continue with: cyclegan train --out {out} --resume"
    return f"no checkpoint was saved; start again with --overwrite (cyclegan train --out {out} ... --overwrite)"


def prepare_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    check_run_dir(out, resume=resume, overwrite=overwrite)
    if resume:
        return
    if out.is_dir() and any(out.iterdir()):  # check_run_dir allowed it: --overwrite, run artefacts only
        for name in RUN_ARTEFACTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"{out}: cannot create the run directory ({e.strerror or e})") from None


def _dotted(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(_dotted(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def check_resume_compatible(saved: Config, requested: Config, where: Path) -> None:
    a, b = _dotted(saved.to_dict()), _dotted(requested.to_dict())
    for key in a:
        if any(key == f or key.startswith(f + ".") for f in RESUME_FIXED) and a[key] != b.get(key):
            raise CheckpointError(
                f"{where}: incompatible with the checkpoint: {key} was {a[key]!r}, now {b.get(key)!r} "
                "(start a new run to change it)"
            )


class JsonlLog:
    """Append-only JSON-lines log, plus TensorBoard scalars when available."""

    def __init__(self, path: Path, tensorboard_dir: Path | None):
        self.path = path
        self.tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(tensorboard_dir))
            except ImportError:
                self.tb = None

    def write(self, record: dict) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if self.tb is not None and "step" in record:
                for k, v in record.items():
                    if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                        self.tb.add_scalar(k, v, record["step"])
        except OSError as e:  # a full disk: one line naming the log, not a traceback
            raise RunDirError(f"{self.path}: could not write the training log ({plain_reason(e)})") from None

    def close(self) -> None:
        if self.tb is not None:
            try:
                self.tb.close()
            except OSError as e:
                raise RunDirError(f"{self.path.parent / 'tensorboard'}: could not write ({plain_reason(e)})") from None


# ----------------------------------------------------------------------------------------------
# Samples


@torch.no_grad()
def sample_grid(step: TrainStep, fixed: dict[str, Tensor]):
    """The sample grid of ``step.sample_rows`` on the fixed images, networks in eval mode."""
    step.models.train(False)
    try:
        with autocast(step.device, step.cfg.train.precision):
            rows = step.sample_rows(fixed)
        return make_grid([to_uint8(r.float()).cpu() for r in rows])
    finally:
        step.models.train(True)


def save_sample(grid, path: Path) -> None:
    """Write a sample grid; a full disk is one line naming the file, not a traceback."""
    try:
        save_image_atomic(grid, path)
    except OSError as e:
        raise RunDirError(f"{path}: could not write the sample grid ({plain_reason(e)})") from None


# ----------------------------------------------------------------------------------------------
# State for resume


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def training_state(step: TrainStep, *, global_step: int, epoch: int, epoch_step: int) -> dict:
    return {
        "step": global_step,
        "epoch": epoch,
        "epoch_step": epoch_step,
        # epoch_step counts global batches: resuming with another process count would skip or
        # repeat data, so the count is recorded and checked.
        "world_size": step.dist.world_size,
        "opt_g": step.opt_g.state_dict(),
        "opt_d": step.opt_d.state_dict(),
        "scaler": step.scaler.state_dict(),
        "pool_a": step.pool_a.state_dict(),
        "pool_b": step.pool_b.state_dict(),
        "rng": _rng_state(),
        **({"loss_weights": step.loss_weights.state_dict()} if step.loss_weights is not None else {}),
    }


def restore_training_state(step: TrainStep, ckpt: Path) -> dict:
    for name, net in step.checkpoint_networks().items():
        ckpt_io.load_into(net, ckpt, name)
    state = ckpt_io.load_state(ckpt)
    try:
        # A loadable but foreign state.pt (a list, missing counters) must be a CheckpointError too.
        for key in ("step", "epoch", "epoch_step"):
            if not isinstance(state[key], int):
                raise TypeError(f"{key} is not an integer")
        saved_world = state.get("world_size", 1)
        if saved_world != step.dist.world_size:
            raise CheckpointError(
                f"{ckpt}: trained with {saved_world} process(es), resumed with {step.dist.world_size}; "
                "resume with the same torchrun --nproc-per-node (and --nnodes)"
            )
        step.opt_g.load_state_dict(state["opt_g"])
        step.opt_d.load_state_dict(state["opt_d"])
        if state.get("scaler"):
            step.scaler.load_state_dict(state["scaler"])
        step.pool_a.load_state_dict(state["pool_a"], device=step.device)
        step.pool_b.load_state_dict(state["pool_b"], device=step.device)
        if step.loss_weights is not None:
            step.loss_weights.load_state_dict(state["loss_weights"])
        _set_rng_state(state["rng"])
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as e:
        raise CheckpointError(f"{ckpt / 'state.pt'}: does not match this run ({type(e).__name__}: {e})") from None
    return state


# ----------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM

# SIGTERM is how Slurm, docker stop, Kubernetes and systemd ask a job to end (SIGKILL follows after
# a grace period): it gets what Ctrl-C gets, a checkpoint and a stop record.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """A first Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current iteration and save;
    a second one aborts (KeyboardInterrupt carrying ``signum``)."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None  # the signal that asked for the stop
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.requested:
            interrupt = KeyboardInterrupt()
            interrupt.signum = signum  # the CLI exits 128 + signum
            raise interrupt
        self.requested, self.signum = True, signum
        again = "Ctrl-C again" if signum == signal.SIGINT else "send it again"
        print(f"\nstopping ({signal.Signals(signum).name}): finishing this iteration and saving a checkpoint "
              f"({again} to abort)", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


def _ignore_stop_signals(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group, and systemd sends SIGTERM to every process of the
    # service: workers leave both to the main process, which saves.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


# ----------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    status: str  # "finished" | "max_steps" | "time_limit" | "interrupted" | "aborted" | "diverged" (stop record)
    last_log: dict = field(default_factory=dict)
    # "interrupted": the signal that asked for the stop (SIGINT or SIGTERM; SIGINT when another
    # process of a torchrun job received it); the CLI exits 128 + this number
    stop_signal: int | None = None


def train(
    cfg: Config,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> TrainResult:
    """Train (or resume) a CycleGAN into run directory ``out``. See the module docstring.

    Under ``torchrun`` every process runs this function on its shard of each batch; only rank 0
    writes the run directory (log, samples, checkpoints, metrics).
    """
    out = Path(out)
    tcfg = cfg.train
    info = dist_env.from_environment()
    main = info.is_main
    # Refuse first, then check device and data, and only then clear an old run (--overwrite) or
    # create the directory: a typo in --dataroot must not cost the user their previous run.
    check_run_dir(out, resume=resume, overwrite=overwrite)
    if tcfg.init_from and not resume:  # a wrong --init-from must fail before --overwrite clears a run
        ckpt_io.resolve_checkpoint(tcfg.init_from)
    device = resolve_device(tcfg.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    apply_threads(tcfg.num_threads)  # 0: PyTorch's default, capped at the CPUs a container grants

    # -- data: every file is checked before any training work
    files = gather_training_files(cfg.data, batch_size=tcfg.batch_size)
    val_a = val_b = None
    if cfg.data.val_fraction:
        files.a, val_a = split_validation(files.a, cfg.data.val_fraction, seed=tcfg.seed)
        files.b, val_b = split_validation(files.b, cfg.data.val_fraction, seed=tcfg.seed)
    # Every refusal comes before prepare_run_dir, which may clear an old run (--overwrite).
    sampler = UnpairedSampler(n_a=len(files.a), n_b=len(files.b), seed=tcfg.seed, rank=info.rank,
                              world_size=info.world_size, batch_size=tcfg.batch_size)
    steps_per_epoch = sampler.epoch_size // (tcfg.batch_size * info.world_size)
    if min(len(files.a), len(files.b)) == 0 or steps_per_epoch == 0:
        raise DataError(
            f"too few training images ({len(files.a)} A, {len(files.b)} B after data.val_fraction "
            f"{cfg.data.val_fraction}) for a global batch of {tcfg.batch_size * info.world_size}"
        )
    dist_env.init(info, device)
    if main:
        prepare_run_dir(out, resume=resume, overwrite=overwrite)
        if files.skipped:
            names = "; ".join(f"{p} ({why})" for p, why in files.skipped)
            echo(f"warning: skipped {len(files.skipped)} unreadable image(s): {names}")
        if (slow := precision_warning(device, tcfg.precision)) is not None:
            echo(f"warning: {slow}")
        if not resume and (small := small_image_warning(files, cfg.data)) is not None:
            echo(f"warning: {small}")
    dist_env.barrier(info)
    dataset = UnpairedImages(files.a, files.b, cfg.data)
    loader = make_loader(
        dataset,
        sampler,
        batch_size=tcfg.batch_size,
        num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_memory and device.type == "cuda",
    )
    loader.worker_init_fn = _ignore_stop_signals if loader.num_workers > 0 else None

    # -- model, optimisers, state
    step_fn = build_train_step(cfg, device, warm_start_nets=not resume, dist=info)
    global_step, epoch, epoch_step = 0, 1, 0
    if resume:
        ckpt = ckpt_io.resume_checkpoint(out)
        check_resume_compatible(ckpt_io.load_checkpoint_config(ckpt), cfg, ckpt)
        try:
            state = restore_training_state(step_fn, ckpt)
        except CorruptCheckpointError as e:
            # A save killed after renaming the new version in leaves the previous one beside it.
            if (prev := ckpt_io.previous_version(ckpt)) is None:
                raise
            if main:
                echo(f"warning: {e}; resuming from {prev} instead")
            ckpt = prev
            check_resume_compatible(ckpt_io.load_checkpoint_config(ckpt), cfg, ckpt)
            state = restore_training_state(step_fn, ckpt)
        global_step, epoch, epoch_step = state["step"], state["epoch"], state["epoch_step"]
        if main:
            echo(f"resuming from {ckpt.relative_to(out)} (step {global_step})")

    # -- evaluation (--eval-every): built once, so real-image features are computed once
    evaluator, best = None, None
    if tcfg.eval_every and main:
        from cyclegan.evaluate import TrainingEvaluator, best_from_metrics_log, is_improvement

        evaluator = TrainingEvaluator(cfg, device=device, files_a=val_a, files_b=val_b,
                                      inception_weights=tcfg.inception_weights)
        echo(f"eval: {evaluator.note}")
        if resume:
            best = best_from_metrics_log(out / "metrics.jsonl", metric=evaluator.selection_metric)

    log = None
    if main:
        write_text_atomic(out / "config.json", cfg.to_json())
        (out / "samples").mkdir(exist_ok=True)
        log = JsonlLog(out / "log.jsonl", out / "tensorboard" if tcfg.tensorboard else None)
        log.write({"event": "resume" if resume else "start", "step": global_step, "epoch": epoch,
                   "device": str(device), "world_size": info.world_size, "images_a": len(files.a),
                   "images_b": len(files.b), "time": time.time()})
        if evaluator is not None:
            log.write({"event": "eval_setup", **evaluator.describe()})
    fixed = dataset.fixed_batch(cfg.data.n_samples)
    if main and not resume:
        save_sample(sample_grid(step_fn, fixed), out / "samples" / "epoch_0000.png")

    writer = ckpt_io.CheckpointWriter(background=tcfg.async_checkpoint)

    # Step of the newest checkpoints/latest written (or found on resume): what a divergence keeps.
    latest_step = ckpt_io.checkpoint_step(out / "checkpoints" / "latest") if resume else None

    def snapshot(name: str, *, collective: bool = True) -> None:
        nonlocal latest_step
        # Never save weights from a window whose losses are not finite (one host read per save,
        # which copies the weights to the host anyway); all processes take part unless only the
        # main process saves (``best``).
        if sums:
            names = list(sums)
            stacked = torch.stack([sums[k] for k in names]).float()
            values = (dist_env.mean_over_processes(stacked, info) if collective else stacked).tolist()
            check_finite(dict(zip(names, values)), first=global_step - window_steps + 1, last=global_step)
        if name == "latest":
            latest_step = global_step
        if main:
            # Resume needs the training state only in latest; epoch and best snapshots are for
            # translating and comparing, about a quarter of the size without it (README, "The run directory").
            with_state = name == "latest" or tcfg.epoch_checkpoint_state
            writer.save(
                out / "checkpoints" / name,
                config=cfg,
                networks=step_fn.checkpoint_networks(),
                state=training_state(step_fn, global_step=global_step, epoch=epoch, epoch_step=epoch_step)
                if with_state else None,
                meta={"step": global_step, "epoch": epoch, "epoch_step": epoch_step},
            )

    def prune_epoch_checkpoints() -> None:
        if main and tcfg.keep_epochs:
            writer.wait()  # the newest epoch checkpoint must be on disk to count
            old = sorted((out / "checkpoints").glob("epoch_[0-9]*"))[: -tcfg.keep_epochs]
            for p in old:
                shutil.rmtree(p, ignore_errors=True)

    def evaluate(finished_epoch: int) -> None:
        nonlocal best
        if evaluator is None:
            return
        record = evaluator(step_fn.eval_generators(), step=global_step, epoch=finished_epoch)
        log.write({"event": "eval", **record})
        try:
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise RunDirError(f"{out / 'metrics.jsonl'}: could not write ({plain_reason(e)})") from None
        if is_improvement(record, best):
            best = record["selection_value"]
            snapshot("best", collective=False)

    def check_finite(values: dict[str, float], *, first: int, last: int) -> None:
        """Stop when a loss of the window of steps first..last is NaN or infinite: the weights are
        broken from then on, and saving them would replace the last good checkpoint."""
        bad = [f"{k} {v}" for k, v in values.items() if not math.isfinite(v)]
        if not bad:
            return
        kept = (f"checkpoints/latest holds step {latest_step}" if latest_step is not None
                else "no checkpoint was written yet")
        raise TrainingDivergedError(
            f"training diverged: loss {', '.join(bad[:4])} over steps {first}-{last}; stopped without saving "
            f"these weights ({kept}); try a lower --lr or --precision fp32"
        )

    # -- logging state: losses summed on device, read back once per log_every iterations
    sums: dict[str, Tensor] = {}
    window_steps, window_start, data_time = 0, time.perf_counter(), 0.0
    last_log: dict = {}

    def flush_log() -> None:
        nonlocal sums, window_steps, window_start, last_log, data_time
        if not window_steps:
            return
        names = list(sums)
        means = dist_env.mean_over_processes(torch.stack([sums[k] for k in names]).float(), info)
        values = means.div(window_steps).tolist()
        check_finite(dict(zip(names, values)), first=global_step - window_steps + 1, last=global_step)
        elapsed = time.perf_counter() - window_start
        record = {"step": global_step, "epoch": epoch, **dict(zip(names, values)),
                  "lr": step_fn.opt_g.param_groups[0]["lr"],
                  "img_per_s": window_steps * tcfg.batch_size * info.world_size / max(elapsed, 1e-9),
                  # share of wall time spent waiting for data: > 0.1 means the loader is the bottleneck
                  "data_time_share": min(1.0, data_time / max(elapsed, 1e-9))}
        if main:
            log.write(record)
        last_log = record
        if bar is not None:
            bar.set_postfix({k: f"{record[k]:.3f}" for k in ("G_total", "D_A", "D_B") if k in record}
                            | {"img/s": f"{record['img_per_s']:.1f}"}, refresh=False)
        sums, window_steps, window_start, data_time = {}, 0, time.perf_counter(), 0.0

    total_steps = steps_per_epoch * tcfg.epochs
    if tcfg.max_steps:
        total_steps = min(total_steps, tcfg.max_steps)
    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=min(global_step, total_steps), unit="it", dynamic_ncols=True,
                   file=sys.stderr)

    status = "finished"
    if tcfg.max_steps and global_step >= tcfg.max_steps:
        status = "max_steps"  # resumed at or past the limit: nothing to do, not one step more
    started = time.monotonic()
    error: BaseException | None = None
    try:
        with StopFlag() as stop:
            while epoch <= tcfg.epochs and status == "finished":
                lr = learning_rate(cfg, epoch, world_size=info.world_size)
                for opt in (step_fn.opt_g, step_fn.opt_d):
                    for group in opt.param_groups:
                        group["lr"] = lr
                sampler.set_epoch(epoch, start=epoch_step * tcfg.batch_size)
                if epoch_step < steps_per_epoch:
                    batches = iter(loader)
                    while True:
                        # -- data: time spent waiting for the loader (host time, no device sync)
                        wait = time.perf_counter()
                        batch = next(batches, None)
                        data_time += time.perf_counter() - wait
                        if batch is None:
                            break
                        # -- generator step, pool, discriminator step
                        losses = step_fn(batch)
                        global_step += 1
                        epoch_step += 1
                        for k, v in losses.items():
                            sums[k] = sums[k] + v if k in sums else v.clone()
                        window_steps += 1
                        if bar is not None:
                            bar.update(1)
                        # -- logging
                        is_log_step = global_step % tcfg.log_every == 0
                        if is_log_step:
                            flush_log()
                        # -- snapshot
                        if global_step % tcfg.save_latest_every == 0:
                            snapshot("latest")
                        if tcfg.max_steps and global_step >= tcfg.max_steps:
                            status = "max_steps"
                        # Wall-clock budget: ranks may disagree on time, so they agree at log steps.
                        elif tcfg.max_minutes and (is_log_step or not info.enabled) and _past_budget(
                                started, tcfg.max_minutes, info, device):
                            status = "time_limit"
                        # Processes must stop at the same iteration; they agree at log steps.
                        if stop.requested if not info.enabled else (is_log_step and _any_process(stop, info, device)):
                            status = "interrupted"
                        if status != "finished":
                            break
                # -- end of epoch: samples, epoch checkpoint, evaluation
                if epoch_step >= steps_per_epoch:
                    if main and (epoch % tcfg.sample_every == 0 or epoch == tcfg.epochs):
                        save_sample(sample_grid(step_fn, fixed), out / "samples" / f"epoch_{epoch:04d}.png")
                    finished_epoch = epoch
                    epoch, epoch_step = epoch + 1, 0
                    if finished_epoch % tcfg.save_epoch_every == 0 or finished_epoch == tcfg.epochs:
                        snapshot(f"epoch_{finished_epoch:04d}")
                        prune_epoch_checkpoints()
                    if tcfg.eval_every and (finished_epoch % tcfg.eval_every == 0 or finished_epoch == tcfg.epochs):
                        evaluate(finished_epoch)
                    if main:
                        log.write({"event": "epoch_end", "epoch": finished_epoch, "step": global_step,
                                   "time": time.time()})
                    dist_env.barrier(info)
            flush_log()
            if main and status != "finished" and epoch_step:
                save_sample(sample_grid(step_fn, fixed), out / "samples" / f"step_{global_step:07d}.png")
            snapshot("latest")
            writer.wait()  # the run ends when its last checkpoint is on disk
            dist_env.barrier(info)
    except BaseException as e:
        status, error = "diverged" if isinstance(e, TrainingDivergedError) else "aborted", e
        raise
    finally:
        # The first error is the one reported; anything failing while closing the run (a pending
        # checkpoint write, the stop record on a full disk) is reported after it, never in its place.
        if bar is not None:
            bar.close()  # first, so every message below starts on a line of its own
        problems: list[str] = []
        failed = writer.close(raise_errors=False)
        raise_failed = failed is not None and error is None
        if raise_failed:
            status, error = "aborted", failed
        elif failed is not None:
            problems.append(str(failed))
        if log is not None:
            try:
                log.write({"event": "stop", "status": status, "step": global_step, "time": time.time()})
            except RunDirError as e:
                problems.append(f"{e} (the stop record is missing)")
            except OSError as e:
                problems.append(f"{log.path}: could not write the stop record ({plain_reason(e)})")
            try:
                log.close()
            except (RunDirError, OSError) as e:
                problems.append(str(e) if isinstance(e, RunDirError) else f"{log.path}: {plain_reason(e)}")
        dist_env.shutdown(info, clean=error is None)
        for line in problems if main else ():
            if isinstance(error, (CycleGANError, KeyboardInterrupt)):
                add_followup(error, line)  # the CLI prints it after the error's own line
            else:  # no error (finished, stop record lost) or a bug whose traceback follows
                echo(f"warning: {line}")
        if raise_failed:
            raise failed
    stop_signal = (stop.signum or signal.SIGINT) if status == "interrupted" else None
    return TrainResult(run_dir=out, step=global_step, epoch=epoch, status=status, last_log=last_log,
                       stop_signal=stop_signal)


def _past_budget(started: float, minutes: float, info: DistInfo, device: torch.device) -> bool:
    over = torch.tensor([1.0 if time.monotonic() - started >= 60.0 * minutes else 0.0], device=device)
    return bool(dist_env.mean_over_processes(over, info).item() > 0)


def _any_process(stop: StopFlag, info: DistInfo, device: torch.device) -> bool:
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=device)
    return bool(dist_env.mean_over_processes(flag, info).item() > 0)
