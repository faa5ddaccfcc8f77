"""A domain-classification score that needs no pretrained weights (issue 18).

A small CNN is trained from scratch to tell the two training domains apart (horse vs zebra); a
translation A -> B is then judged by the share of translated test images it assigns to domain B
(``target_share``) and by the Frechet distance between its penultimate features of the translations
and of the real domain-B test images (``classifier_fd``, the FID formula in this network's feature
space). It is what users without internet get instead of FID, and it answers the question FID does
not: did the translation change the domain?

Besides the two domains the classifier has a third class, "neither": training images damaged the
way an unconverged generator damages its outputs (heavy blur, noise, checkerboard patterns). Without
it, a two-way classifier must call every image one of the domains, and the blurry, noisy outputs of
the first training minutes are "zebra" as often as not (high-frequency junk looks like stripes to
it); with it, a translation counts only once it looks like a clean image of the target domain.

Unlike FID, whose Inception network is the same everywhere, the numbers are comparable only within
one data set and one trained classifier (its version, image size and seed): a different classifier
draws a different boundary. The held-out accuracy on real images says how far the score can be
trusted; ``cyclegan.evaluate.classifier`` refuses a classifier below a threshold.

This module holds the pure parts: the network, its training on uint8 tensors (a held-out split, a
fixed seed, the caller's RNG state untouched) and the scores. Loading images, caching the trained
network and the threshold are the evaluate package's job.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cyclegan.image import to_model_range
from cyclegan.metrics.fid import feature_statistics, frechet_distance

__all__ = [
    "CLASSIFIER_VERSION",
    "ClassifierNet",
    "ClassifierReport",
    "ClassifierSettings",
    "DomainClassifier",
    "classifier_frechet_distance",
    "classify",
    "neither_share",
    "target_share",
    "train_domain_classifier",
]

# Bump when the network, its training or its preprocessing changes: cached classifiers of another
# version are not reused, and scores of different versions are not comparable.
# 2: the "neither" class; 3: a quarter of the training images in grayscale; 4: an ensemble
CLASSIFIER_VERSION = 4
DOMAINS = ("A", "B")  # class index 0 = domain A, 1 = domain B
NEITHER = len(DOMAINS)  # class index 2: a damaged image of either domain
N_CLASSES = NEITHER + 1


class ClassifierNet(nn.Module):
    """One member: four conv stages, global average pooling, a linear head: [B, 3, S, S] in [-1, 1] ->
    logits [B, 3] (domain A, domain B, neither).

    Stage i: 3x3 conv (stride 2 in the first, which halves the cost of the largest maps) -> batch norm
    -> ReLU -> 3x3 conv -> batch norm -> ReLU -> 2x2 max pool, widths w, 2w, 4w, 8w; 8w = 256
    features at w = 32. About 1.2M parameters, about 0.1 GMAC per 64x64 image, so training on a few
    thousand images takes minutes on two CPU cores. Fully convolutional: any S >= 2 works.
    """

    def __init__(self, *, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i in range(4):
            out = width * 2**i
            layers += [
                nn.Conv2d(channels, out, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),  # ceil: a 1x1 map stays 1x1, so small images work
            ]
            channels = out
        self.body = nn.Sequential(*layers)  # [B, 3, S, S] -> [B, 8w, S/32, S/32]
        self.feature_dim = channels
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(channels, N_CLASSES)

    def features(self, x: Tensor) -> Tensor:
        """[B, 3, S, S] in [-1, 1] -> penultimate features [B, 8w] (globally pooled, after ReLU)."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))  # [B, 3]


class DomainClassifier(nn.Module):
    """An ensemble of ClassifierNets trained alike from different seeds on the same split; they are
    judged by their mean probabilities. One network's verdict on an image unlike any it was trained
    on (the blurry, patterned outputs of a generator early in training) is close to arbitrary, and
    differently seeded networks disagree on it (one called 63% of a run's translations zebras,
    another 28%); the mean of three is steadier."""

    def __init__(self, *, width: int = 32, members: int = 3) -> None:
        super().__init__()
        self.members = nn.ModuleList(ClassifierNet(width=width) for _ in range(members))
        self.feature_dim = self.members[0].feature_dim

    def probabilities(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """[B, 3, S, S] in [-1, 1] -> (mean class probabilities [B, 3], each member's features [B, 8w])."""
        feats = [m.features(x) for m in self.members]
        probs = torch.stack([torch.softmax(m.head(f), dim=1) for m, f in zip(self.members, feats)])
        return probs.mean(0), feats


@dataclass(frozen=True)
class ClassifierSettings:
    """How the classifier is trained; all of it goes into the cache key."""

    width: int = 32
    members: int = 3  # networks in the ensemble (seeds seed, seed + 1, ...; one split)
    epochs: int = 12
    # ... but at least this many optimiser steps: a small data set gets more epochs (40 images per
    # domain are one or two batches an epoch, too few steps to learn anything in 12 epochs)
    min_steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    held_out: float = 0.1  # share of each domain kept out of training to measure accuracy
    # damaged copies ("neither") per batch, as a share of its real images
    neither_share: float = 0.5
    grayscale: float = 0.25  # share of training images shown without colour
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClassifierReport:
    """The held-out result of one training: ``accuracy`` is the balanced accuracy (the mean of the
    per-domain accuracies, so the larger domain cannot carry it)."""

    accuracy: float
    accuracy_a: float
    accuracy_b: float
    neither_accuracy: float  # damaged held-out images called "neither"
    n_train_a: int
    n_train_b: int
    n_held_out_a: int
    n_held_out_b: int
    size: int
    epochs: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _check_images(images: Tensor, name: str) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: expected uint8 [N, 3, S, S], got {images.dtype} {list(images.shape)}")


def _split(n: int, held_out: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A seeded permutation of range(n) -> (train indices, held-out indices); both non-empty."""
    order = torch.randperm(n, generator=generator)
    k = min(max(1, round(n * held_out)), n - 1)
    return order[k:], order[:k]


def _augment(x: Tensor, generator: torch.Generator, grayscale: float = 0.0) -> Tensor:
    """Random horizontal flips and shifts of up to S/16 pixels (reflection-padded) per image:
    translations keep the pose and framing of their source, and the classifier must not key on them.
    A ``grayscale`` share of the images lose their colour (ITU-R 601 luma), so that colour alone
    cannot name a domain: a generator that only desaturates a horse has not made a zebra. Only a
    share: colour is part of what tells many domains apart (apples and oranges)."""
    b, _, s, _ = x.shape
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    gray = torch.rand(b, generator=generator) < grayscale
    if bool(gray.any()):
        luma = (x.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        luma = luma.round().clamp(0, 255).to(torch.uint8).expand_as(x)
        x = torch.where(gray[:, None, None, None], luma, x)
    pad = max(1, s // 16)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy:dy + s, dx:dx + s] for i, (dy, dx) in enumerate(offsets)])


# The damage an unconverged generator does to its outputs, at a strength that makes an image of
# neither domain. (Milder damage as an augmentation of the domain classes was tried and dropped: on
# horse2zebra a softened zebra is a grey blob, and grey blobs then passed as zebras.)
DAMAGE = {"blur": (4.0, 8.0), "noise": (20.0, 60.0), "checker": (20.0, 60.0), "checker_blur": 2.0}


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return float(torch.empty(1).uniform_(low, high, generator=generator))


def _soften(img: Tensor, factor: float) -> Tensor:
    """Area downscale by ``factor`` and bilinear back: [1, 3, S, S] float."""
    s = img.shape[-1]
    if factor <= 1.0:
        return img
    small = F.interpolate(img, size=max(1, round(s / factor)), mode="area")
    return F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)


def _damage(x: Tensor, generator: torch.Generator) -> Tensor:
    """Damaged copies of uint8 [b, 3, S, S] images, each one kind at random (ranges in DAMAGE): heavy
    blur (area downscale by 4-8 and bilinear back), Gaussian noise (sigma 20-60 levels), a
    checkerboard of period 2 or 4 with random signs per channel over a 2x blur (transposed-convolution
    artefacts), or blur and noise together."""
    r = DAMAGE
    b, _, s, _ = x.shape
    out = x.float()
    kinds = torch.randint(0, 4, (b,), generator=generator).tolist()
    for i, kind in enumerate(kinds):
        img = out[i:i + 1]
        if kind in (0, 3):  # blur
            img = _soften(img, _uniform(*r["blur"], generator))
        if kind in (1, 3):  # noise
            img = img + _uniform(*r["noise"], generator) * torch.randn(img.shape, generator=generator)
        if kind == 2:  # checkerboard
            img = _soften(img, r["checker_blur"])
            period = 2 if torch.rand(1, generator=generator) < 0.5 else 4
            yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
            pattern = torch.where(((yy // (period // 2)) + (xx // (period // 2))) % 2 == 0, 1.0, -1.0)
            signs = torch.where(torch.rand(3, 1, 1, generator=generator) < 0.5, 1.0, -1.0)
            img = img + _uniform(*r["checker"], generator) * signs * pattern
        out[i:i + 1] = img
    return out.round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def classify(
    model: DomainClassifier, images: Tensor, *, batch_size: int = 64
) -> tuple[np.ndarray, list[np.ndarray]]:
    """uint8 [N, 3, S, S] -> (mean probabilities [N, 3] of domain A, domain B and neither, each
    member's features [N, 8w]), float64.

    Runs in eval mode on the model's device and restores its mode afterwards."""
    _check_images(images, "images")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        probs, feats = [], []
        for chunk in images.split(batch_size):
            p, f = model.probabilities(to_model_range(chunk.to(device)))
            probs.append(p.double().cpu())
            feats.append([x.double().cpu() for x in f])
    finally:
        model.train(was_training)
    members = len(model.members)
    if not probs:
        return np.zeros((0, N_CLASSES)), [np.zeros((0, model.feature_dim))] * members
    return torch.cat(probs).numpy(), [torch.cat([f[m] for f in feats]).numpy() for m in range(members)]


def target_share(probabilities: np.ndarray, target: str) -> float:
    """Share of images whose most likely class is ``target`` ("A" or "B"); [N, 3] probabilities
    (an image more likely "neither" does not count)."""
    if target not in DOMAINS:
        raise ValueError(f"target must be one of {DOMAINS}, got {target!r}")
    p = np.asarray(probabilities)
    if p.ndim != 2 or p.shape[1] != N_CLASSES or p.shape[0] == 0:
        raise ValueError(f"expected probabilities [N > 0, {N_CLASSES}], got {list(p.shape)}")
    return float((p.argmax(axis=1) == DOMAINS.index(target)).mean())


def neither_share(probabilities: np.ndarray) -> float:
    """Share of images whose most likely class is "neither" (damaged, of no domain); [N, 3] probabilities."""
    p = np.asarray(probabilities)
    if p.ndim != 2 or p.shape[1] != N_CLASSES or p.shape[0] == 0:
        raise ValueError(f"expected probabilities [N > 0, {N_CLASSES}], got {list(p.shape)}")
    return float((p.argmax(axis=1) == NEITHER).mean())


def classifier_frechet_distance(real: list[np.ndarray], fake: list[np.ndarray]) -> float:
    """Frechet distance between the classifier's features of real and of translated images: per
    member ([N, D] against [M, D], as ``classify`` returns them), averaged over the members."""
    if len(real) != len(fake) or not real:
        raise ValueError(f"expected one feature set per member, got {len(real)} and {len(fake)}")
    return float(np.mean([frechet_distance(*feature_statistics(r), *feature_statistics(f))
                          for r, f in zip(real, fake)]))


def _held_out_accuracy(model: DomainClassifier, a: Tensor, b: Tensor, batch_size: int,
                       generator: torch.Generator) -> tuple[float, float, float]:
    """(accuracy on real A, on real B, share of damaged copies of both called "neither")."""
    acc_a = target_share(classify(model, a, batch_size=batch_size)[0], "A")
    acc_b = target_share(classify(model, b, batch_size=batch_size)[0], "B")
    damaged = classify(model, _damage(torch.cat([a, b]), generator), batch_size=batch_size)[0]
    return acc_a, acc_b, float((damaged.argmax(axis=1) == NEITHER).mean())


def _train_member(net: ClassifierNet, x: Tensor, y: Tensor, weight: Tensor, settings: ClassifierSettings,
                  epochs: int, g: torch.Generator, device: torch.device, on_epoch) -> None:
    """One member's training: AdamW, cosine decay to 0, augmented real images plus damaged copies."""
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(y) / settings.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=g)
        total = 0.0
        for idx in order.split(settings.batch_size):
            if len(idx) < 2:  # batch norm needs two samples; the one left over waits for next epoch
                continue
            images, labels = _augment(x[idx], g, settings.grayscale), y[idx]
            k = round(settings.neither_share * len(idx))
            if k:  # damaged copies of some of the batch's images: "neither"
                images = torch.cat([images, _damage(images[:k], g)])
                labels = torch.cat([labels, torch.full((k,), NEITHER, dtype=torch.long)])
            loss = F.cross_entropy(net(to_model_range(images.to(device))), labels.to(device), weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if on_epoch is not None:
            on_epoch(epoch + 1, total / len(y))


def train_domain_classifier(
    images_a: Tensor,
    images_b: Tensor,
    *,
    settings: ClassifierSettings = ClassifierSettings(),
    device: str | torch.device = "cpu",
    on_epoch=None,
) -> tuple[DomainClassifier, ClassifierReport]:
    """Train a DomainClassifier on uint8 [N_a, 3, S, S] (domain A) and [N_b, 3, S, S] (domain B).

    ``settings.held_out`` of each domain (a seeded split) is kept out of training; the report gives
    the balanced accuracy on it after the last epoch (no epoch is chosen by it, so it is an honest
    estimate) for the ensemble's mean probabilities. Each of ``settings.members`` networks is trained
    alike from its own seed; every batch also holds ``settings.neither_share`` as many damaged copies
    of its images, labelled "neither". AdamW with cosine decay to 0, cross-entropy weighted by inverse
    class frequency, flips, small shifts and grayscale as augmentation. Deterministic for a given seed and
    device; the global
    RNG state of the caller is left as it was (a training run's randomness does not depend on
    whether it also trains a classifier). ``on_epoch(member, epoch, epochs, loss)`` reports progress.
    """
    _check_images(images_a, "images_a")
    _check_images(images_b, "images_b")
    if images_a.shape[1:] != images_b.shape[1:]:
        raise ValueError(f"domains differ in shape: {list(images_a.shape[1:])} vs {list(images_b.shape[1:])}")
    for name, imgs in (("A", images_a), ("B", images_b)):
        if imgs.shape[0] < 2:
            raise ValueError(
                f"domain {name} has {imgs.shape[0]} image(s); need at least 2 (train + held out)")
    if not 0.0 < settings.held_out < 1.0:
        raise ValueError(f"held_out must be in (0, 1), got {settings.held_out}")
    start = time.perf_counter()
    device = torch.device(device)
    g = torch.Generator().manual_seed(settings.seed)
    train_a, held_a = _split(images_a.shape[0], settings.held_out, g)
    train_b, held_b = _split(images_b.shape[0], settings.held_out, g)
    x = torch.cat([images_a[train_a], images_b[train_b]])  # uint8 [N, 3, S, S]
    y = torch.cat([torch.zeros(len(train_a), dtype=torch.long), torch.ones(len(train_b), dtype=torch.long)])
    # Inverse-frequency weights: each class counts as much as another whatever the domain sizes.
    n_neither = max(1.0, settings.neither_share * len(y))
    weight = torch.tensor([len(y) / (2.0 * len(train_a)), len(y) / (2.0 * len(train_b)),
                           len(y) / (2.0 * n_neither)], device=device)
    steps_per_epoch = math.ceil(len(y) / settings.batch_size)
    epochs = max(settings.epochs, math.ceil(settings.min_steps / steps_per_epoch))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = DomainClassifier(width=settings.width, members=settings.members).to(device)
        for m, net in enumerate(model.members):
            # Member m: its own initialisation, batch order and augmentation; the same split.
            torch.manual_seed(settings.seed + m)
            net.load_state_dict(ClassifierNet(width=settings.width).state_dict())
            gm = torch.Generator().manual_seed(settings.seed + 1000 * (m + 1))
            _train_member(net, x, y, weight, settings, epochs, gm, device,
                          None if on_epoch is None else (lambda e, loss, m=m: on_epoch(m, e, epochs, loss)))
    model.eval()
    acc_a, acc_b, acc_n = _held_out_accuracy(model, images_a[held_a], images_b[held_b], settings.batch_size,
                                             g)
    report = ClassifierReport(
        accuracy=(acc_a + acc_b) / 2.0, accuracy_a=acc_a, accuracy_b=acc_b, neither_accuracy=acc_n,
        n_train_a=len(train_a), n_train_b=len(train_b), n_held_out_a=len(held_a), n_held_out_b=len(held_b),
        size=int(images_a.shape[-1]), epochs=epochs, seconds=round(time.perf_counter() - start, 3),
    )
    return model, report
