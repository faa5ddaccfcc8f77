"""The config schema: typed, frozen dataclasses whose defaults are the CycleGAN paper's settings, and
the closed sets of values of the fields every run reads. It imports nothing from the project, so the
parts name these classes in their type hints without reaching the rest of ``config``.

The keys of ``model.generator`` and ``model.discriminator`` beyond ``name`` and ``ngf`` / ``ndf`` are
the options of one network or another: each network declares the ones it reads (and their allowed
values and rules) in the options class registered beside it (``networks/``); ``config.kinds`` declares
which ``loss.*`` and ``distill.*`` keys each model kind reads. This file keeps them flat because that
is the config.json format."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

INITS = ("normal", "xavier", "kaiming", "orthogonal")
PREPROCESS = ("resize_and_crop", "scale_width", "scale_width_and_crop", "crop", "none")
LR_SCALING = ("none", "sqrt", "linear")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
# The networks of a CycleGAN checkpoint, the ones train.init_nets may name.
NETWORK_NAMES = ("G_A", "G_B", "D_A", "D_B")


@dataclass(frozen=True)
class GeneratorConfig:
    """The generator (``model.generator.*``): a name of ``GENERATORS`` and its options."""

    name: str = "resnet"  # a key of networks.GENERATORS (`cyclegan train --help` lists them)
    ngf: int = 64  # width of the first layer; every generator scales with it
    # -- options of some generators (each generator's options class says which it reads and why)
    n_blocks: int = 9  # resnet, attention, mobile_resnet: residual blocks (paper: 9 at 256px, 6 at 128px)
    norm: str = "instance"  # resnet, unet_*, attention, mobile_resnet
    dropout: float = 0.0  # resnet, unet_*, attention, mobile_resnet
    upsample: str = "transpose"  # resnet, unet_*, attention, mobile_resnet: transpose | resize
    antialias: str = "none"  # resnet: none | down | up | both (networks.generators.ResnetOptions)
    antialias_filter: int = 3
    antialias_up_filter: int = 4
    se_reduction: int = 16  # attention (networks.attention.AttentionOptions)
    cbam_every: int = 2
    self_attention: bool = True
    vq_codebook_size: int = 0
    vq_dim: int = 64
    vq_ema_decay: float = 0.99


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The discriminator (``model.discriminator.*``): a name of ``DISCRIMINATORS`` and its options."""

    name: str = "patch"  # a key of networks.DISCRIMINATORS
    ndf: int = 64
    # -- options of some discriminators (networks.discriminators: PatchOptions, PixelOptions, ...)
    n_layers: int = 3  # patch, dual, vanilla_cnn; 3 = the 70x70 PatchGAN
    norm: str = "instance"
    spectral_norm: bool = False  # patch, pixel (dual always has it)


@dataclass(frozen=True)
class ModelConfig:
    """What is trained (``model.*``): the model kind and its networks."""

    # cyclegan: two generators, two discriminators, cycle loss (Zhu et al. 2017). cut / fastcut: one
    # generator A -> B, one discriminator, PatchNCE instead of the cycle (Park et al., ECCV 2020).
    # distill: one generator A -> B (the student) trained to reproduce a trained one (see DistillConfig).
    kind: str = "cyclegan"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    init: str = "normal"
    init_gain: float = 0.02


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are loaded and augmented (``data.*``)."""

    dataroot: str | None = None  # folder with trainA/trainB (or trainB_<style>) and testA/testB
    data_a: str | None = None  # any folder of domain-A images (recursive); overrides dataroot
    data_b: str | None = None
    load_size: int = 286
    crop_size: int = 256
    preprocess: str = "resize_and_crop"
    flip: bool = True
    max_dataset_size: int = 0  # 0 = use every image
    num_workers: int = 4
    pin_memory: bool = True
    n_samples: int = 4  # images per domain in the fixed sample grid
    val_fraction: float = 0.0  # hold out this share of each training domain for --eval-every
    # data_a / data_b may also be .npz files of uint8 [N, H, W, 3] images (`cyclegan prep pack`);
    # the array name inside, when the file holds several (unset: "images" or the only array).
    npz_key_a: str | None = None
    npz_key_b: str | None = None


@dataclass(frozen=True)
class LossConfig:
    """The adversarial loss and the weight of every other term (``loss.*``)."""

    gan: str = "lsgan"  # registry key: lsgan | vanilla | hinge | wgangp
    lambda_gan: float = 1.0
    lambda_cyc: float = 10.0
    lambda_id: float = 5.0  # absolute weight on the identity L1 (= paper's 0.5 x lambda_cyc); 0 disables
    lambda_gp: float = 10.0  # gradient penalty weight, used by wgangp and when gradient_penalty is on
    # gradient penalty (Gulrajani et al., NeurIPS 2017, eq. 3) with any loss.gan, not only wgangp
    gradient_penalty: bool = False
    pool_size: int = 50  # 0 disables the image pool
    lambda_fm: float = 0.0  # feature matching: L1 between D's features of real and generated images
    lambda_edge: float = 0.0  # L1 between Sobel edge maps of a generator's input and output
    lambda_color: float = 0.0  # L1 between low-resolution chroma of a generator's input and output
    color_pool: int = 4  # average-pooling factor for the colour and tone losses (blurs away texture)
    # L1 between output and input, both RGB average-pooled by color_pool: each region keeps its
    # brightness and hue (no inverted or drifting tones), texture and outlines stay free. Unlike
    # lambda_id it costs no generator pass. 0 = off.
    lambda_tone: float = 0.0
    lambda_vq: float = 0.25  # VQ commitment weight (beta of VQ-VAE); used when the generator quantises
    # none | uncertainty: learned homoscedastic-uncertainty weights on the non-adversarial generator
    # terms (Kendall, Gal & Cipolla, CVPR 2018); the lambdas above become their initial scales.
    adaptive_weighting: str = "none"
    # -- CUT / FastCUT (model.kind cut | fastcut; Park et al. 2020, sec. 3 and appendix)
    lambda_nce: float = 1.0  # PatchNCE weight: CUT 1, FastCUT 10
    nce_idt: bool = True  # PatchNCE identity loss on B -> G(B) (CUT yes, FastCUT no)
    nce_temperature: float = 0.07
    nce_patches: int = 256  # locations sampled per layer
    nce_mlp_dim: int = 256  # width of each layer's projection MLP
    flip_equivariance: bool = False  # FastCUT: G(flip(x)) must equal flip(G(x)) in feature space
    # -- small style sets (issue 15)
    # CartoonGAN's edge-promoting loss (Chen et al., CVPR 2018): the style domain's discriminator also
    # sees edge-smoothed copies of the style images, labelled fake, so crisp outlines become part of
    # the style. 0 = off; 1 weighs the copies like generated images.
    lambda_edge_promote: float = 0.0
    edge_promote_direction: str = "b"  # b: D_B (toward domain B) | a: D_A | both; CUT/FastCUT: b only
    # Folder of smoothed copies (`cyclegan prep edge-smooth`, same relative names as the style folder);
    # unset: made once and cached in the run folder.
    edge_smooth_dir: str | None = None
    lambda_lecam: float = 0.0  # LeCam regularisation of D (Tseng et al., CVPR 2021); 0 = off
    lecam_decay: float = 0.99  # decay of the moving averages of D(real) and D(fake) it anchors to


@dataclass(frozen=True)
class OptimConfig:
    """Adam, the learning rate, its policy and its scaling with the batch (``optim.*``)."""

    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_policy: str = "linear"  # registry key: linear | cosine | cosine_restarts | step | constant
    # linear: the last N epochs decay linearly to 0; unset = half of train.epochs (paper: 100 + 100)
    decay_epochs: int | None = None
    step_epochs: int = 50  # step: multiply by step_gamma every N epochs
    step_gamma: float = 0.1
    # How lr grows with the global batch (batch_size x processes) relative to the paper's batch 1:
    # none (the paper's code keeps 2e-4 at any batch), sqrt (the square-root rule derived for Adam
    # by Malladi et al., NeurIPS 2022), linear (Goyal et al. 2017, derived for SGD).
    lr_scaling: str = "none"
    # The discriminators' learning rate as a multiple of the generators' at every point of the schedule:
    # two time-scale updates (TTUR, Heusel et al., NeurIPS 2017: D faster than G, e.g. 4 with lr 1e-4)
    d_lr_ratio: float = 1.0
    # cosine_restarts (SGDR, Loshchilov & Hutter 2017): cycles of t_0, t_0 * t_mult, ... epochs, each
    # annealing from lr to eta_min (the attention-cyclegan preset: 10, 2, 1e-5)
    t_0: int = 10
    t_mult: int = 2
    eta_min: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """How long, on which device and precision, and what a run writes (``train.*``)."""

    epochs: int = 200
    max_steps: int = 0  # stop after this many iterations (0 = no limit); for smoke runs
    max_minutes: float = 0.0  # stop (and save) after this much wall-clock training time (0 = no limit)
    batch_size: int = 1
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    # torch.compile mode: default | reduce-overhead (CUDA graphs: cuts per-kernel launch cost, which
    # dominates at batch 1) | max-autotune
    compile_mode: str = "default"
    log_every: int = 50  # iterations between log lines; logging is the only host sync
    save_latest_every: int = 100  # iterations between checkpoints/latest (the most a crash loses)
    save_epoch_every: int = 5  # epochs between checkpoints/epoch_NNNN
    keep_epochs: int = 0  # keep only the last K epoch checkpoints (0 = keep all)
    # Epoch and best checkpoints also keep the training state (optimisers, pools: three quarters of the
    # paper recipe's checkpoint) only when asked; latest always has it, and resume needs only that.
    epoch_checkpoint_state: bool = False
    # Write checkpoints on a background thread: the loop waits only for the copy to host memory
    # (a synchronous write of the paper's 324 MB checkpoint took 0.6 s on the dev VM).
    async_checkpoint: bool = True
    sample_every: int = 1  # epochs between sample grids
    # also a sample grid every this many minutes of training (0 = off): a time-budgeted run
    # (--max-minutes) shows its progress whatever its epoch length
    sample_every_minutes: float = 0.0
    # At the end of a run (finished, --max-steps or --max-minutes), its A -> B generator translates the
    # first N held-aside images (the dataroot's testA/, else the data.val_fraction split) at full size
    # into <run>/final/: what the run can do on images it never trained on. 0 = off.
    final_translations: int = 0
    tensorboard: bool = True  # also log to <run>/tensorboard when the tensorboard package is installed
    eval_every: int = 0  # epochs between test-split metrics (FID/KID/IS/GMS/cycle); 0 = never
    # --eval-every also scores with the domain classifier (trained on the training images, cached;
    # cyclegan.evaluate.classifier), refused below this held-out accuracy
    eval_classifier: bool = False
    classifier_min_accuracy: float = 0.8
    inception_weights: str | None = None  # FID Inception weights file (default: torch hub cache)
    grad_checkpointing: bool = False  # recompute residual-block activations in backward (less memory)
    # CPU intra-op threads (0 = PyTorch's default capped at the CPUs this process may use)
    num_threads: int = 0
    # Warm start: copy these networks' weights from an earlier run or checkpoint before the first
    # step of a new run (e.g. a pre-trained discriminator to steady a small-data run); ignored on --resume.
    init_from: str | None = None
    init_nets: str = "D_A,D_B"  # comma-separated subset of G_A, G_B, D_A, D_B
    # The first N iterations of a run step only its discriminators (generators frozen): a generator
    # started from trained weights (init_from) meets a discriminator that has caught up, not a random one.
    d_warmup_steps: int = 0
    # Growing resolution (cyclegan.resolution): "SIZE:UNTIL,..." trains on random SIZE-px crops of
    # each batch until iteration UNTIL, sizes growing, then at data.crop_size; "" = off.
    resolution_schedule: str = ""
    # Exponential moving average of the generators' weights (StyleGAN-style); 0 = off. Samples,
    # translate and evaluate use the averaged generator when a checkpoint has one.
    ema_decay: float = 0.0
    # DiffAugment (Zhao et al. 2020) before every discriminator call: "" or a comma-separated
    # subset of color, translation, cutout.
    diffaug: str = ""


@dataclass(frozen=True)
class DistillConfig:
    """model.kind distill: the run's G_A (model.generator, the student) learns to reproduce a trained
    generator (the teacher), as in GAN Compression (Li et al., CVPR 2020, sec. 3.1): L1 to the teacher's
    output, MSE between the teacher's intermediate features and the student's through learned 1x1
    projections, and the adversarial loss (loss.lambda_gan) against D_B. The defaults are its
    horse2zebra settings (lambda_recon 10, lambda_distill 0.01)."""

    teacher: str | None = None  # run, checkpoint, safetensors export or TorchScript file (or pretrained:/hf:)
    direction: str = "a2b"  # which of the teacher's generators: a2b (G_A) or b2a (G_B)
    # SHA-256 of the teacher's weights when the run started; a resume refuses a teacher that changed since
    teacher_sha256: str | None = None
    lambda_distill: float = 10.0  # L1 between the student's and the teacher's outputs
    lambda_feature: float = 0.01  # MSE between projected student features and teacher features; 0 = off
    # b: D_B's real images are domain-B images (GAN Compression); teacher: the teacher's outputs (no B data)
    real: str = "b"
    # Start D_B from the teacher's discriminator of the target domain when it has one of model.discriminator's
    # architecture (GAN Compression sec. 3.1, "inheriting the teacher discriminator").
    inherit_discriminator: bool = True


@dataclass(frozen=True)
class Config:
    """A whole run's settings, resolved by ``build_config`` and checked once by ``validate``; a run's
    ``config.json`` holds one."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    preset: str | None = None

    def to_dict(self) -> dict:
        """The config as nested plain dicts (what ``config.json`` holds)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The config as the JSON text of ``config.json``."""
        # allow_nan=False: NaN / Infinity are not JSON; validate refuses them, so this never fires
        # for a validated config, and a config that skipped validation cannot write an invalid file.
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False)


def dotted(tree: dict, prefix: str = "") -> dict:
    """A nested config dict as one level of dotted keys (``{"loss.lambda_id": 5.0, ...}``): the names
    ``--set`` takes, and how a run, its preset and a request are compared key by key."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
