"""Distillation (``model.kind distill``): a small student generator learns to reproduce a trained one.

After GAN Compression (Li, Lin, Ding, Liu, Zhu and Han, CVPR 2020, sec. 3.1). The run's ``G_A`` is the
student (``model.generator``, e.g. ``mobile_resnet``), so translate, export, serve and video treat the
result like any one-sided model. The teacher (``distill.teacher``) is loaded frozen, in eval mode, on
the run's device, and runs under the run's autocast precision. Each iteration:

    forward             teacher(A) without gradients; student(A); both with their intermediate
                        features (``networks.distill_features``) when distill.lambda_feature > 0
    discriminator step  D_B on real images against student(A) (through the image pool)
    generator step      lambda_gan x adversarial
                        + distill.lambda_distill x L1(student(A), teacher(A))
                        + distill.lambda_feature x sum_t MSE(P_t(student feature t), teacher feature t)

``P`` holds the learned 1x1 projections (student channels -> teacher channels, GAN Compression's f_t),
trained with the student and saved in the checkpoint like CUT's ``F``; translate never loads them.

What D_B sees as real (``distill.real``): domain-B images (``b``, GAN Compression's unpaired setting: the
adversarial loss keeps the student's outputs on the real target distribution, where a student that only
imitated the teacher would inherit its artefacts), or, with no B images at hand, the teacher's outputs
(``teacher``): then the discriminator only sharpens the imitation. D_B starts from the teacher's own
discriminator of the target domain when the teacher checkpoint has one of the same architecture
(``distill.inherit_discriminator``; GAN Compression sec. 3.1 "inheriting the teacher discriminator").

A resume is bitwise: the teacher is deterministic, and the run records the SHA-256 of its weights
(``distill.teacher_sha256``) and refuses to continue with a teacher whose weights changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyclegan.checkpoint import load_checkpoint_config, load_into, resolve_checkpoint
from cyclegan.config import Config, GeneratorConfig, LossConfig, build_config
from cyclegan.data import resolve_domains
from cyclegan.devices import autocast
from cyclegan.errors import CheckpointError, ConfigError, DataError
from cyclegan.modelfile import EXPORTED_WEIGHTS, load_any_generator
from cyclegan.networks import (
    FeatureProjections,
    build_discriminator,
    build_generator,
    distill_channels,
    distill_features,
)
from cyclegan.sources import is_source_spec, resolve_source
from cyclegan.training.models import NamedNetworks
from cyclegan.training.rundir import resolve_run_config
from cyclegan.training.step import TRAIN_STEPS, ModelKind, TrainStep

# The student when --student is not given, and each student's default width. At ngf 16 the mobile
# ResNet has 52x fewer multiply-adds than ResNet-9 (0.95 G vs 49.6 G at 256x256) and the AnimeGANv2
# generator 29x fewer (1.7 G); at these widths the full-resolution layers and the memory-bound norms,
# not the MACs, set the time (measured speeds: the documentation's Benchmarks page).
DEFAULT_STUDENT = "mobile_resnet"
STUDENT_NGF = {"mobile_resnet": 16, "animeganv2": 16}


# ----------------------------------------------------------------------------------------------
# The teacher


def teacher_fingerprint(net: nn.Module) -> str:
    """SHA-256 over the names and bytes of ``net``'s state dict: the same for the same weights in any
    file format, different as soon as one weight differs."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_teacher(cfg: Config, device: torch.device) -> nn.Module:
    """The frozen teacher generator of ``cfg.distill`` on ``device``, checked against the fingerprint the
    run recorded when it started."""
    distill_cfg = cfg.distill
    loaded = load_any_generator(distill_cfg.teacher, direction=distill_cfg.direction, device=device)
    if not isinstance(loaded.model, nn.Module):
        raise ConfigError(f"distill.teacher {distill_cfg.teacher}: an ONNX model cannot teach (its layers "
                          "cannot be run by PyTorch); give the run, checkpoint or a safetensors export "
                          "instead")
    teacher = loaded.model.eval()
    for param in teacher.parameters():  # one by one: a TorchScript module refuses requires_grad_
        param.requires_grad_(False)
    if distill_cfg.teacher_sha256 is not None and teacher_fingerprint(teacher) != distill_cfg.teacher_sha256:
        raise CheckpointError(
            f"distill.teacher {distill_cfg.teacher}: its weights changed since this run started (SHA-256 "
            f"{distill_cfg.teacher_sha256[:12]}... recorded); resume with the same teacher or start a new run"
        )
    multiple = int(getattr(teacher, "size_multiple", 1))
    if cfg.data.crop_size % multiple:
        raise ConfigError(
            f"data.crop_size ({cfg.data.crop_size}) must be a multiple of {multiple} for the teacher")
    if cfg.train.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    return teacher


def teacher_discriminator(cfg: Config) -> tuple[Path, str] | None:
    """(teacher checkpoint, network name) of the teacher's discriminator of the student's target domain
    when it has one of ``model.discriminator``'s architecture, else None (an export, another D)."""
    try:
        ckpt = resolve_checkpoint(resolve_source(cfg.distill.teacher, direction=cfg.distill.direction))
    except CheckpointError:
        return None  # a single-file export: no discriminator
    name = "D_B" if cfg.distill.direction == "a2b" else "D_A"  # D_B judges domain B, the target of a2b
    if (ckpt / EXPORTED_WEIGHTS).is_file() or not (ckpt / f"{name}.safetensors").is_file():
        return None
    if load_checkpoint_config(ckpt).model.discriminator != cfg.model.discriminator:
        return None
    return ckpt, name


# ----------------------------------------------------------------------------------------------
# The networks and the step


class FeatureTap(nn.Module):
    """``net``'s output and, when ``features``, its distillation features in one pass: the module that
    torch.compile wraps (calling ``distill_features`` on a compiled generator would bypass it)."""

    def __init__(self, net: nn.Module, *, features: bool) -> None:
        super().__init__()
        self.net, self.features = net, features

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return distill_features(self.net, x) if self.features else (self.net(x), [])


@dataclass
class DistillNets(NamedNetworks):
    G_A: nn.Module  # the student, A -> B
    D_B: nn.Module  # real B (or the teacher's outputs) vs the student's outputs
    # student -> teacher feature projections; None without the feature loss
    P: FeatureProjections | None = None


@dataclass
class DistillStep(TrainStep):
    """One distillation iteration (see the module docstring); shares preparation, pools, EMA and the
    distributed gradient averaging of ``TrainStep``. ``compiled`` holds the (possibly compiled) D_B."""

    teacher: nn.Module | None = None  # frozen, eval, no gradients
    teacher_tap: nn.Module | None = None  # FeatureTap(teacher), possibly compiled
    student_tap: nn.Module | None = None  # FeatureTap(G_A), possibly compiled

    def __post_init__(self) -> None:
        features = self.models.P is not None
        self.teacher_tap = FeatureTap(self.teacher, features=features)
        self.student_tap = FeatureTap(self.models.G_A, features=features)
        if self.cfg.train.compile:
            self.teacher_tap = torch.compile(self.teacher_tap, mode=self.cfg.train.compile_mode)
            self.student_tap = torch.compile(self.student_tap, mode=self.cfg.train.compile_mode)

    def iterate(self, batch: dict[str, Tensor], *, train_generators: bool = True) -> dict[str, Tensor]:
        distill_cfg, m = self.cfg.distill, self.compiled
        real_a = self._prepare(batch["A"])  # [B, 3, S, S]
        with autocast(self.device, self.cfg.train.precision):
            with torch.no_grad():
                t_out, t_feats = self.teacher_tap(real_a)
            with torch.set_grad_enabled(train_generators):  # the warm-up: fakes without gradients
                s_out, s_feats = self.student_tap(real_a)
            # one input dtype for D and the losses (TrainStep._generate explains why)
            t_out, s_out = t_out.float(), s_out.float()
        real = self._prepare(batch["B"]) if distill_cfg.real == "b" else t_out

        # -- discriminator step (with the regularisers every kind has: TrainStep.discriminator_loss)
        pooled = self._pool("D_B", s_out.detach())
        with autocast(self.device, self.cfg.train.precision):
            d_loss, d_terms = self.discriminator_loss([("D_B", real, pooled)], {})
        self._backward_and_step(d_loss, self.opt_d)
        d_logged = {"D_B": d_loss, **{k: v for k, v in d_terms.items() if k != "D_B"}}
        if not train_generators:
            return d_logged

        # -- generator step: the student and the projections
        self.models.D_B.requires_grad_(False)
        with autocast(self.device, self.cfg.train.precision):
            real_pred = self._disc(m.D_B, real) if self.gan.generator_needs_real else None
            losses = {"G_gan": self.gan.generator(self._disc(m.D_B, s_out), real_pred),
                      "distill_l1": F.l1_loss(s_out, t_out)}
            total = (self.cfg.loss.lambda_gan * losses["G_gan"]
                     + distill_cfg.lambda_distill * losses["distill_l1"])
            if self.models.P is not None:
                # GAN Compression eq. 3: squared error per layer (mean over elements), summed over layers
                projected = self.models.P(s_feats)
                losses["feature"] = sum(F.mse_loss(p.float(), t.float()) for p, t in zip(projected, t_feats))
                total = total + distill_cfg.lambda_feature * losses["feature"]
        self._backward_and_step(total, self.opt_g)
        self._update_ema()
        self.models.D_B.requires_grad_(True)
        losses.update(G_total=total, **d_logged)
        return losses

    def eval_generators(self) -> dict[str, nn.Module]:
        return {"G_A": self.generator_for_samples("G_A")}

    def sample_rows(self, fixed: dict[str, Tensor]) -> list[Tensor]:
        """Rows: real A | teacher(A) | student(A) (the student's EMA weights when EMA is on)."""
        real_a = self._prepare(fixed["A"])
        return [real_a, self.teacher(real_a), self.generator_for_samples("G_A")(real_a)]


def _distill_networks(cfg: Config, context: dict[str, Any]) -> DistillNets:
    """Student, projections (when distill.lambda_feature > 0), D_B, in this order."""
    m = cfg.model
    student = build_generator(m.generator, init=m.init, init_gain=m.init_gain)
    projections = None
    if cfg.distill.lambda_feature > 0:
        projections = FeatureProjections(student_channels=distill_channels(student),
                                         teacher_channels=distill_channels(context["teacher"]))
    discriminator = build_discriminator(m.discriminator, init=m.init, init_gain=m.init_gain)
    return DistillNets(G_A=student, D_B=discriminator, P=projections)


def _inherit_discriminator(cfg: Config, nets: DistillNets, context: dict[str, Any]) -> None:
    if cfg.distill.inherit_discriminator and (found := teacher_discriminator(cfg)) is not None:
        load_into(nets.D_B, found[0], found[1])


# The frozen teacher is loaded first (and checked against the run's fingerprint); D_B starts from the
# teacher's on a new run.
TRAIN_STEPS.register("distill")(ModelKind(
    step=DistillStep, networks=_distill_networks, generators=("G_A",), discriminators=("D_B",),
    trained_with_generators=("P",), prepare=lambda cfg, device: {"teacher": load_teacher(cfg, device)},
    inherit=_inherit_discriminator,
))


# ----------------------------------------------------------------------------------------------
# The config of a distillation run (``cyclegan distill``)


def _absolute(path: str | os.PathLike) -> str:
    return str(Path(path).expanduser().resolve())


def distill_run_config(
    out: Path,
    *,
    teacher: str | os.PathLike | None = None,
    resume: bool = False,
    data_a: str | os.PathLike | None = None,
    data_b: str | os.PathLike | None = None,
    student: str | None = None,
    student_ngf: int | None = None,
    direction: str = "a2b",
    overrides: dict | None = None,
    sets=(),
) -> Config:
    """The config of a new distillation run, or of a resumed one (its saved config plus ``overrides``).

    A new run takes from the teacher's config its data (unless ``data_a``), discriminator, GAN loss, pool,
    optimiser and training settings; the student is ``student`` (default mobile_resnet) at ``student_ngf``
    (default per student, ``STUDENT_NGF``). Data: ``data_a`` alone makes the teacher's outputs D_B's real
    images; with ``data_b`` they are those images; neither: the teacher's training data of its
    ``direction`` (its dataroot, so ``evaluate`` finds the test split). ``overrides`` and ``sets`` apply last.
    """
    if resume:
        for name, value in (("--data-a", data_a), ("--data-b", data_b), ("--student", student),
                            ("--student-ngf", student_ngf)):
            if value is not None:
                raise ConfigError(
                    f"{name}: a resumed run keeps its own; change it with --set or start a new run")
        extra = dict(overrides or {})
        if teacher is not None:  # the teacher moved: the fingerprint check makes sure it is the same one
            extra["distill.teacher"] = _teacher_spec(teacher)
        return resolve_run_config(out, resume=True, overrides=extra, sets=sets)
    if teacher is None:
        raise ConfigError("--teacher: a new distillation run needs its teacher (a run, checkpoint or export)")
    spec = _teacher_spec(teacher)
    loaded = load_any_generator(spec, direction=direction, device="cpu")
    if not isinstance(loaded.model, nn.Module):
        raise ConfigError(f"--teacher {teacher}: an ONNX model cannot teach; give the run, checkpoint or a "
                          "safetensors export")
    teacher_cfg = loaded.info.config
    tree = (teacher_cfg or Config()).to_dict()
    name = student or DEFAULT_STUDENT
    ngf = student_ngf or STUDENT_NGF.get(name, GeneratorConfig().ngf)
    tree["model"].update(kind="distill", generator=dataclasses.asdict(GeneratorConfig(name=name, ngf=ngf)))
    # The teacher's GAN loss and pool (its discriminator is inherited); no cycle, identity or style terms.
    tree["loss"] = {**dataclasses.asdict(LossConfig()),
                    **{k: tree["loss"][k] for k in ("gan", "lambda_gan", "pool_size") if k in tree["loss"]}}
    tree["train"].update(init_from=None, max_steps=0, max_minutes=0.0)
    tree["preset"] = None
    real = "b"
    if data_a is not None:
        tree["data"].update(dataroot=None, data_a=_absolute(data_a), data_b=_absolute(data_b or data_a),
                            npz_key_a=None, npz_key_b=None)
        real = "b" if data_b is not None else "teacher"
    elif data_b is not None:
        raise DataError("--data-b needs --data-a (the images the student learns to translate)")
    elif teacher_cfg is None:
        raise DataError(f"--teacher {teacher}: records no training data; give --data-a DIR")
    elif direction == "b2a":  # the student's input is the teacher's domain B
        folder_a, folder_b = resolve_domains(teacher_cfg.data, "train")
        tree["data"].update(dataroot=None, data_a=str(folder_b), data_b=str(folder_a),
                            npz_key_a=teacher_cfg.data.npz_key_b, npz_key_b=teacher_cfg.data.npz_key_a)
    tree["distill"] = {**dataclasses.asdict(Config().distill), "teacher": spec, "direction": direction,
                       "teacher_sha256": teacher_fingerprint(loaded.model), "real": real}
    return build_config(base=tree, overrides=overrides, sets=sets)


def _teacher_spec(teacher: str | os.PathLike) -> str:
    """A teacher path made absolute (the run resumes from any directory); pretrained:/hf: sources as given."""
    text = os.fspath(teacher)
    return text if is_source_spec(text) and not Path(text).exists() else _absolute(text)
