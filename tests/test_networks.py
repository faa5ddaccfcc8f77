"""Architecture checks against the CycleGAN paper (appendix 7.2) and its code; tiny shapes, CPU only."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cyclegan.checkpoint import load_generator
from cyclegan.config import DiscriminatorConfig, GeneratorConfig, build_config, estimate_parameters, replace
from cyclegan.errors import ConfigError
from cyclegan.networks import (
    DISCRIMINATORS,
    GENERATORS,
    AnimeGANv2Generator,
    AttentionGenerator,
    BlurDownsample,
    BlurUpsample,
    FeatureProjections,
    MobileResnetGenerator,
    NLayerDiscriminator,
    PixelDiscriminator,
    ResnetGenerator,
    UnetGenerator,
    binomial_filter,
    build_discriminator,
    build_generator,
    count_macs,
    count_parameters,
    distill_channels,
    distill_features,
    init_weights,
)
from cyclegan.networks.blocks import ResnetBlock, UpsampleBlock, norm_layer, uses_bias
from cyclegan.training import train


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------------------------
# Parameter counts (these pin the architecture to the paper's)


def test_resnet9_parameter_count_matches_paper():
    net = build_generator(GeneratorConfig(name="resnet", ngf=64, n_blocks=9, norm="instance"))
    assert count_parameters(net) == 11_378_179


def test_resnet6_parameter_count():
    # Outside the residual blocks (conv weight + bias each; instance norm has no parameters):
    #   c7s1-64          3*64*49   + 64  =   9,472
    #   d128            64*128*9   + 128 =  73,856
    #   d256           128*256*9   + 256 = 295,168
    #   u128 (transp.) 256*128*9   + 128 = 295,040
    #   u64 (transp.)  128*64*9    + 64  =  73,792
    #   c7s1-3          64*3*49    + 3   =   9,411
    #                                      -------
    #                                      756,739
    # Each residual block = 2 * (256*256*9 + 256) = 1,180,160, and 756,739 + 9 * 1,180,160 gives the
    # paper's 11,378,179 above. With 6 blocks: 756,739 + 6 * 1,180,160 = 7,837,699.
    net = build_generator(GeneratorConfig(name="resnet", ngf=64, n_blocks=6))
    assert count_parameters(net) == 756_739 + 6 * 2 * (256 * 256 * 9 + 256) == 7_837_699


def test_resize_upsampling_has_same_parameter_count_as_transpose():
    # Conv2d(k3) and ConvTranspose2d(k3) between the same channels hold the same weights.
    t = ResnetGenerator(ngf=8, n_blocks=2, upsample="transpose")
    r = ResnetGenerator(ngf=8, n_blocks=2, upsample="resize")
    assert count_parameters(t) == count_parameters(r)
    assert any(isinstance(m, nn.Upsample) for m in r.modules())
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in r.modules())


def test_patchgan_parameter_count_matches_paper():
    net = build_discriminator(DiscriminatorConfig(name="patch", ndf=64, n_layers=3, norm="instance"))
    assert count_parameters(net) == 2_764_737


def test_count_parameters_counts_only_trainable():
    net = NLayerDiscriminator(ndf=4)
    total = count_parameters(net)
    first = net.stages[0][0]
    first.weight.requires_grad_(False)
    assert count_parameters(net) == total - first.weight.numel()


# ----------------------------------------------------------------------------------------------
# Shapes and ranges


def test_patchgan_output_is_30x30_at_256():
    # Spatial size does not depend on ndf, so a tiny ndf keeps this fast.
    net = NLayerDiscriminator(ndf=4, n_layers=3)
    with torch.no_grad():
        out = net(torch.randn(1, 3, 256, 256))
    assert out.shape == (1, 1, 30, 30)


@pytest.mark.parametrize(("h", "w", "n_layers"), [(64, 96, 3), (32, 32, 2), (128, 64, 4)])
def test_patchgan_output_shape_general(h, w, n_layers):
    net = NLayerDiscriminator(ndf=2, n_layers=n_layers)
    with torch.no_grad():
        out = net(torch.randn(2, 3, h, w))
    f = 2**n_layers
    assert out.shape == (2, 1, h // f - 2, w // f - 2)


def test_patchgan_channels_cap_at_8ndf():
    net = NLayerDiscriminator(ndf=2, n_layers=5)
    widths = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [2, 4, 8, 16, 16, 16, 1]


def test_pixel_discriminator_keeps_spatial_size():
    net = build_discriminator(DiscriminatorConfig(name="pixel", ndf=4))
    with torch.no_grad():
        out = net(torch.randn(2, 3, 17, 23))
    assert out.shape == (2, 1, 17, 23)


def _check_generator(net: nn.Module, size: int, batch: int = 2) -> None:
    net.eval()
    # A wide input range makes the [-1, 1] check mean something (Tanh must be the last layer).
    x = torch.randn(batch, 3, size, size) * 3
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1
    assert size % net.size_multiple == 0


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_resnet_generator_shape_and_range(upsample):
    net = build_generator(GeneratorConfig(name="resnet", ngf=4, n_blocks=2, upsample=upsample))
    assert net.size_multiple == 4
    _check_generator(net, 32)


def test_resnet_generator_non_square():
    net = ResnetGenerator(ngf=4, n_blocks=1)
    with torch.no_grad():
        y = net(torch.randn(1, 3, 20, 36))
    assert y.shape == (1, 3, 20, 36)


@pytest.mark.parametrize(("name", "size"), [("unet_128", 128), ("unet_256", 256)])
@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_unet_generator_shape_and_range(name, size, upsample):
    net = build_generator(GeneratorConfig(name=name, ngf=2, upsample=upsample))
    assert net.size_multiple == size
    _check_generator(net, size, batch=1)


def test_unet_depth_and_channels():
    # unet_128: 7 stride-2 encoder convs with widths ngf, 2ngf, 4ngf, 8ngf x 4.
    net = UnetGenerator(num_downs=7, ngf=2)
    down = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    up = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in down] == [2, 4, 8, 16, 16, 16, 16]
    assert all(m.stride == (2, 2) and m.kernel_size == (4, 4) for m in down + up)
    assert len(up) == 7
    assert isinstance(list(net.modules())[-1], nn.Tanh)
    assert count_parameters(UnetGenerator(num_downs=8, ngf=2)) > count_parameters(net)


def test_unet_dropout_only_in_inner_8ngf_decoder_levels():
    # unet_256 has 8 levels: outermost, ngf, 2ngf, 4ngf levels, then 3 x 8ngf + innermost; dropout
    # goes in the 3 non-innermost 8ngf levels.
    net = build_generator(GeneratorConfig(name="unet_256", ngf=2, dropout=0.5))
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 3 and all(d.p == 0.5 for d in drops)
    assert not any(isinstance(m, nn.Dropout) for m in UnetGenerator(num_downs=8, ngf=2).modules())


def test_resnet_dropout_in_every_block():
    net = ResnetGenerator(ngf=4, n_blocks=3, dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 3


def test_dropout_does_not_change_state_dict_keys():
    # Dropout has no parameters; Identity in its place keeps the submodule indices identical, so
    # a checkpoint loads regardless of the dropout setting.
    for name in ("resnet", "unet_128"):
        a = build_generator(GeneratorConfig(name=name, ngf=2, n_blocks=1))
        b = build_generator(GeneratorConfig(name=name, ngf=2, n_blocks=1, dropout=0.5))
        assert a.state_dict().keys() == b.state_dict().keys()


def test_resnet_block_is_residual():
    block = ResnetBlock(channels=4)
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize("mode", ["transpose", "resize"])
def test_upsample_block_doubles_size(mode):
    up = UpsampleBlock(in_channels=4, out_channels=2, mode=mode)
    assert up(torch.randn(1, 4, 5, 7)).shape == (1, 2, 10, 14)


# ----------------------------------------------------------------------------------------------
# Norms and bias


def test_norm_layer_kinds():
    inst = norm_layer("instance", 8)
    assert isinstance(inst, nn.InstanceNorm2d) and not inst.affine and not inst.track_running_stats
    bn = norm_layer("batch", 8)
    assert isinstance(bn, nn.BatchNorm2d) and bn.affine
    assert isinstance(norm_layer("none", 8), nn.Identity)
    with pytest.raises(ConfigError):
        norm_layer("layer", 8)
    assert uses_bias("instance") and uses_bias("none") and not uses_bias("batch")


def _convs(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


@pytest.mark.parametrize("name", ["resnet", "unet_128"])
def test_batch_norm_generator_has_no_bias_on_normalised_convs(name):
    net = build_generator(GeneratorConfig(name=name, ngf=2, n_blocks=1, norm="batch"))
    convs = _convs(net)
    # Only the output conv (no norm after it, Tanh instead) keeps a bias.
    assert sum(m.bias is not None for m in convs) == 1
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    net_inst = build_generator(GeneratorConfig(name=name, ngf=2, n_blocks=1, norm="instance"))
    assert all(m.bias is not None for m in _convs(net_inst))


def test_batch_norm_discriminator_has_no_bias_on_normalised_convs():
    net = NLayerDiscriminator(ndf=2, n_layers=3, norm="batch")
    # First conv (no norm) and last conv (score map) keep their bias.
    assert [m.bias is not None for m in _convs(net)] == [True, False, False, False, True]
    pix = PixelDiscriminator(ndf=2, norm="batch")
    assert [m.bias is not None for m in _convs(pix)] == [True, False, True]


def test_norm_none_builds_without_norm_layers():
    for net in (
        ResnetGenerator(ngf=2, n_blocks=1, norm="none"),
        UnetGenerator(num_downs=5, ngf=2, norm="none"),
        NLayerDiscriminator(ndf=2, norm="none"),
    ):
        assert not any(isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d)) for m in net.modules())
        assert all(m.bias is not None for m in _convs(net))


# ----------------------------------------------------------------------------------------------
# Initialisation


def test_normal_init_std():
    conv = nn.Conv2d(256, 256, kernel_size=3)
    init_weights(conv, "normal", 0.02)
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert conv.weight.mean().abs().item() < 1e-3
    assert torch.count_nonzero(conv.bias) == 0


def test_init_kinds_and_batch_norm():
    net = nn.Sequential(nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64), nn.Linear(64, 64))
    for kind in ("normal", "xavier", "kaiming", "orthogonal"):
        for p in net.parameters():
            nn.init.constant_(p, 7.0)
        assert init_weights(net, kind, 0.02) is net
        conv, bn, lin = net
        assert torch.count_nonzero(conv.bias) == 0 and torch.count_nonzero(lin.bias) == 0
        assert torch.count_nonzero(bn.bias) == 0
        assert (bn.weight - 1).abs().max() < 0.2 and bn.weight.std() > 0
        assert not torch.any(conv.weight == 7.0)
    # kaiming ignores the gain: std = sqrt(2 / fan_in)
    init_weights(net, "kaiming", 0.02)
    assert net[0].weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    # orthogonal with gain 1: rows of the flattened weight are orthonormal
    init_weights(net, "orthogonal", 1.0)
    w = net[2].weight
    assert torch.allclose(w @ w.T, torch.eye(64), atol=1e-4)
    with pytest.raises(ConfigError):
        init_weights(net, "uniform", 0.02)


def test_build_applies_init():
    net = build_generator(GeneratorConfig(ngf=32, n_blocks=1), init="normal", init_gain=0.02)
    w = net.transformer[0].block[1].weight
    assert w.std().item() == pytest.approx(0.02, rel=0.05)
    net = build_discriminator(DiscriminatorConfig(ndf=32), init="normal", init_gain=0.1)
    w = net.stages[2][0].weight
    assert w.std().item() == pytest.approx(0.1, rel=0.05)


# ----------------------------------------------------------------------------------------------
# Registries


def test_registry_names():
    assert set(GENERATORS) == {"resnet", "unet_128", "unet_256", "attention", "animeganv2", "mobile_resnet",
                               "animeganv2_tf", "whitebox"}
    assert set(DISCRIMINATORS) == {"patch", "pixel", "dual", "vanilla_cnn"}


@pytest.mark.parametrize("name", ["resnet", "unet_128", "unet_256", "animeganv2", "mobile_resnet"])
def test_every_generator_name_builds(name):
    net = build_generator(GeneratorConfig(name=name, ngf=2, n_blocks=1))
    assert isinstance(net, nn.Module) and isinstance(net.size_multiple, int)


@pytest.mark.parametrize("name", ["patch", "pixel"])
def test_every_discriminator_name_builds(name):
    net = build_discriminator(DiscriminatorConfig(name=name, ndf=2))
    assert isinstance(net, nn.Module) and callable(net.features)


def test_unknown_names_raise():
    with pytest.raises(KeyError, match="unknown generator"):
        build_generator(GeneratorConfig(name="vit"))
    with pytest.raises(KeyError, match="unknown discriminator"):
        build_discriminator(DiscriminatorConfig(name="global"))


# ----------------------------------------------------------------------------------------------
# Gradients and features


def _assert_all_grads(net: nn.Module) -> None:
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize(
    "net",
    [
        pytest.param(lambda: ResnetGenerator(ngf=4, n_blocks=2, upsample="resize"), id="resnet"),
        pytest.param(lambda: UnetGenerator(num_downs=5, ngf=2, norm="batch"), id="unet-batch"),
        pytest.param(lambda: UnetGenerator(num_downs=5, ngf=2, dropout=0.5), id="unet-dropout"),
    ],
)
def test_gradient_reaches_every_generator_parameter(net):
    g = net()
    g.train()
    g(torch.randn(2, 3, 32, 32)).square().mean().backward()
    _assert_all_grads(g)


@pytest.mark.parametrize(
    "net",
    [
        pytest.param(lambda: NLayerDiscriminator(ndf=4, n_layers=3), id="patch"),
        pytest.param(lambda: NLayerDiscriminator(ndf=4, n_layers=2, norm="batch"), id="patch-batch"),
        pytest.param(lambda: PixelDiscriminator(ndf=4), id="pixel"),
    ],
)
def test_gradient_reaches_every_discriminator_parameter_and_input(net):
    d = net()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    (d(x) - 1).square().mean().backward()
    _assert_all_grads(d)
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    ("net", "n_features"),
    [
        pytest.param(NLayerDiscriminator(ndf=4, n_layers=3), 5, id="patch"),
        pytest.param(NLayerDiscriminator(ndf=4, n_layers=1), 3, id="patch-1"),
        pytest.param(PixelDiscriminator(ndf=4), 3, id="pixel"),
    ],
)
def test_features_end_with_forward_output(net, n_features):
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = net.features(x)
        out = net(x)
    assert isinstance(feats, list) and len(feats) == n_features
    assert torch.equal(feats[-1], out)
    # Intermediates are multi-channel activation maps, the last is the 1-channel score map.
    assert all(f.dim() == 4 and f.shape[0] == 2 for f in feats)
    assert all(f.shape[1] > 1 for f in feats[:-1]) and feats[-1].shape[1] == 1


def test_features_are_differentiable():
    d = NLayerDiscriminator(ndf=4, n_layers=2)
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    sum(f.abs().mean() for f in d.features(x)).backward()
    _assert_all_grads(d)


# ----------------------------------------------------------------------------------------------
# Sizes that cannot be built: estimated on the meta device, refused with one line


def test_parameter_estimate_matches_the_paper_networks():
    # Counted on the meta device (no memory), equal to the built networks' counts above.
    counts = estimate_parameters(build_config().model)
    assert counts == {"generator": 11_378_179, "discriminator": 2_764_737}


def test_parameter_estimate_counts_a_gradient_free_vq_codebook():
    # With EMA updates the codebook is a buffer, not a parameter, but it is memory all the same.
    cfg = build_config(sets=["model.generator.name=attention", "model.generator.vq_codebook_size=1000",
                             "model.generator.vq_dim=64"])
    plain = estimate_parameters(replace(cfg, **{"model.generator.vq_codebook_size": 0}).model)
    assert estimate_parameters(cfg.model)["generator"] - plain["generator"] >= 1000 * 64


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (["model.generator.ngf=131072"], "model.generator.ngf 131072: the generator would have "),
        (["model.discriminator.ndf=131072"], "model.discriminator.ndf 131072: the discriminator would have "),
        (["model.generator.name=attention", "model.generator.vq_codebook_size=100000000"],
         "the generator would have "),
        # Past int64 element counts: even the meta device cannot describe it.
        (["model.generator.ngf=1000000000000000000"], "model.generator"),
    ],
)
def test_absurd_network_sizes_are_refused_before_building(sets, fragment):
    with pytest.raises(ConfigError) as e:
        build_config(sets=sets)
    message = str(e.value)
    assert fragment in message and "\n" not in message and len(message) < 300, message


def test_the_largest_sane_generator_still_validates():
    # ResNet-9 at ngf 512 is 727M parameters (2.9 GB): big, but a real network.
    assert build_config(sets=["model.generator.ngf=512"]).model.generator.ngf == 512


@pytest.mark.parametrize("error", [RuntimeError("DefaultCPUAllocator: can't allocate memory\nline 2"),
                                   torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB"),
                                   MemoryError()])
def test_an_allocation_failure_while_building_is_a_one_line_config_error(monkeypatch, error):
    def boom(cfg):
        raise error

    monkeypatch.setitem(GENERATORS, "resnet", boom)
    monkeypatch.setitem(DISCRIMINATORS, "patch", boom)
    with pytest.raises(ConfigError, match=r"^model.generator: not enough memory to build generator resnet "
                                          r"with ngf 64") as e:
        build_generator(GeneratorConfig())
    assert "\n" not in str(e.value)
    # Still a MemoryError: a load path's memory guard (export.model_memory_guard) names the checkpoint.
    assert isinstance(e.value, MemoryError)
    with pytest.raises(ConfigError,
                       match=r"^model.discriminator: not enough memory to build discriminator patch"):
        build_discriminator(DiscriminatorConfig())


def test_other_errors_while_building_are_not_disguised_as_memory(monkeypatch):
    def bug(cfg):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setitem(GENERATORS, "resnet", bug)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        build_generator(GeneratorConfig())


# ----------------------------------------------------------------------------------------------
# Anti-aliased resampling (CUT's default generator) and the AnimeGANv2 generator


def test_binomial_filters_are_normalised_pascal_rows():
    assert torch.equal(binomial_filter(3), torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
    assert torch.equal(binomial_filter(4)[0], torch.tensor([1.0, 3, 3, 1]) / 64)
    for size in range(1, 8):
        assert float(binomial_filter(size).sum()) == 1.0


def test_antialiased_resnet_keeps_the_parameter_count_and_stores_no_filters():
    plain = build_generator(GeneratorConfig(name="resnet", ngf=64, n_blocks=9))
    blurred = build_generator(GeneratorConfig(name="resnet", ngf=64, n_blocks=9, antialias="both"))
    # A stride-1 conv3x3 has the weights of the stride-2 one; a conv3x3 those of the transposed conv3x3.
    assert count_parameters(blurred) == count_parameters(plain) == 11_378_179
    shapes = {name: tuple(b.shape) for name, b in blurred.named_buffers()}
    assert shapes == {"encoder.7.filt": (128, 1, 3, 3), "encoder.11.filt": (256, 1, 3, 3),
                      "decoder.0.0.0.filt": (256, 1, 4, 4), "decoder.1.0.0.filt": (128, 1, 4, 4)}
    # The filters are constants of the config: checkpoints stay weights only.
    assert not any(key.endswith("filt") for key in blurred.state_dict())
    strides = [m.stride for m in blurred.encoder if isinstance(m, nn.Conv2d)]
    assert strides == [(1, 1), (1, 1), (1, 1)]


@pytest.mark.parametrize("mode", ["down", "up", "both"])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7])
def test_antialiased_resnet_keeps_the_image_size(mode, size):
    net = ResnetGenerator(ngf=4, n_blocks=1, antialias=mode, antialias_filter=size, antialias_up_filter=size)
    assert net(torch.rand(2, 3, 20, 28) * 2 - 1).shape == (2, 3, 20, 28)


def test_blur_layers_resample_a_constant_image_to_the_same_constant():
    x = torch.full((1, 2, 8, 12), 0.3)
    assert torch.allclose(BlurDownsample(channels=2, size=3)(x), torch.full((1, 2, 4, 6), 0.3))
    for size in (3, 4):
        assert torch.allclose(BlurUpsample(channels=2, size=size)(x), torch.full((1, 2, 16, 24), 0.3))


def test_blur_downsample_is_the_blur_then_every_second_pixel():
    x = torch.rand(1, 1, 8, 8)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    blurred = F.conv2d(padded, binomial_filter(3)[None, None])  # [1, 1, 8, 8]
    assert torch.allclose(BlurDownsample(channels=1, size=3)(x), blurred[:, :, ::2, ::2])


def test_antialiased_nce_features_tap_the_conv_before_the_blur():
    net = ResnetGenerator(ngf=4, n_blocks=5, antialias="both")
    feats = net.nce_features(torch.rand(1, 3, 16, 16))
    assert [tuple(f.shape[1:]) for f in feats] == [(3, 16, 16), (8, 16, 16), (16, 8, 8), (16, 4, 4),
                                                   (16, 4, 4)]


def test_antialias_config_is_validated():
    build_config(overrides={"model.generator.antialias": "both", "model.generator.antialias_filter": 5})
    with pytest.raises(ConfigError, match="model.generator.antialias"):
        build_config(overrides={"model.generator.antialias": "yes"})
    with pytest.raises(ConfigError, match="antialias_up_filter"):
        build_config(overrides={"model.generator.antialias": "up", "model.generator.antialias_up_filter": 8})
    with pytest.raises(ConfigError,
                       match="model.generator.antialias: used by generators resnet; not by unet_128"):
        build_config(overrides={"model.generator.name": "unet_128", "model.generator.antialias": "down"})
    with pytest.raises(ConfigError, match="antialias_filter: sizes the downsampling blur"):
        build_config(overrides={"model.generator.antialias": "up", "model.generator.antialias_filter": 5})
    with pytest.raises(ConfigError, match="leave it transpose"):
        build_config(overrides={"model.generator.antialias": "both", "model.generator.upsample": "resize"})


def test_animeganv2_parameter_count_and_shapes():
    net = build_generator(GeneratorConfig(name="animeganv2"))
    assert isinstance(net, AnimeGANv2Generator)
    # The released face_paint_512_v2 / paprika / celeba_distill generator.
    assert count_parameters(net) == 2_143_552
    assert net.size_multiple == 4
    assert net(torch.rand(1, 3, 8, 12) * 2 - 1).shape == (1, 3, 8, 12)  # two multiples: the smallest input
    out = net(torch.rand(2, 3, 36, 20) * 2 - 1)
    assert out.shape == (2, 3, 36, 20) and float(out.abs().max()) <= 1.0


def test_animeganv2_width_scales_with_ngf_and_needs_an_even_ngf():
    small = build_generator(GeneratorConfig(name="animeganv2", ngf=16))
    assert small.to_rgb.weight.shape == (3, 8, 1, 1)
    assert count_parameters(small) < count_parameters(build_generator(GeneratorConfig(name="animeganv2")))
    with pytest.raises(ConfigError, match="even ngf"):
        build_config(overrides={"model.generator.name": "animeganv2", "model.generator.ngf": 15})
    with pytest.raises(ConfigError, match="multiple of 4 for generator animeganv2"):
        build_config(overrides={"model.generator.name": "animeganv2", "data.crop_size": 30,
                                "data.load_size": 30})


def test_animeganv2_trains_in_a_cyclegan_recipe(tiny_config, tmp_path):
    cfg = tiny_config(**{"model.generator.name": "animeganv2", "model.generator.ngf": 8, "train.max_steps": 2,
                         "train.epochs": 1})
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.step == 2
    net, saved = load_generator(tmp_path / "run")
    assert isinstance(net, AnimeGANv2Generator) and saved.model.generator.name == "animeganv2"


@pytest.mark.parametrize("gcfg", [GeneratorConfig(name="animeganv2", ngf=8),
                                  GeneratorConfig(name="resnet", ngf=4, n_blocks=1, antialias="both",
                                                  antialias_up_filter=3)])
def test_new_generators_script_for_torchscript_export(gcfg):
    net = build_generator(gcfg).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still supported
        scripted = torch.jit.script(net)
    x = torch.rand(2, 3, 20, 28) * 2 - 1
    with torch.no_grad():
        assert torch.equal(scripted(x), net(x))


# ----------------------------------------------------------------------------------------------
# Distillation students (GAN Compression's mobile ResNet), their features, and the MAC counter


def test_mac_counter_counts_resnet9_at_256_and_the_students_are_over_10x_smaller():
    resnet = count_macs(build_generator(GeneratorConfig(name="resnet", ngf=64, n_blocks=9)))
    # Per output pixel x kernel x channels (transposed convs per input pixel): c7s1-64 and c7s1-3
    # 2 x 49*64*3*256^2, d128 + d256 + both upsamplings 4 x 9*64*128*128^2 (the same product), and
    # 9 blocks x 2 x 9*256*256*64^2. GAN Compression's profiler counts the two transposed convs over
    # their output positions (4x), hence its 56.8 G.
    expected = 2 * 49 * 64 * 3 * 256**2 + 4 * 9 * 64 * 128 * 128**2 + 9 * 2 * 9 * 256 * 256 * 64**2
    assert resnet == expected == 49_551_507_456
    for name in ("mobile_resnet", "animeganv2"):
        student = count_macs(build_generator(GeneratorConfig(name=name, ngf=16)))
        assert resnet / student > 10, name
    # Half the side, a quarter of the work; batch scales linearly.
    net = build_generator(GeneratorConfig(name="mobile_resnet", ngf=8, n_blocks=2))
    assert count_macs(net, height=64, width=64, batch=2) == count_macs(net, height=128, width=128) // 2


def test_mobile_resnet_blocks_are_depthwise_separable_and_it_counts_its_parameters():
    net = build_generator(GeneratorConfig(name="mobile_resnet", ngf=16, n_blocks=9))
    assert isinstance(net, MobileResnetGenerator) and net.size_multiple == 4
    depthwise = [m for m in net.transformer.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    pointwise = [m for m in net.transformer.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(depthwise) == len(pointwise) == 18 and all(m.groups == 64 for m in depthwise)
    # Outside the blocks: the ResNet-9 table at ngf 16 (see test_resnet6_parameter_count); each block
    # 2 x (depthwise 64*9 + 64, pointwise 64*64 + 64).
    outside = (3 * 16 * 49 + 16) + (16 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 32 * 9 + 32) \
        + (32 * 16 * 9 + 16) + (16 * 3 * 49 + 3)
    assert count_parameters(net) == outside + 9 * 2 * (64 * 9 + 64 + 64 * 64 + 64) == 137_347
    x = torch.rand(2, 3, 20, 28) * 2 - 1
    assert net(x).shape == (2, 3, 20, 28)


def test_mobile_resnet_group_norm_is_instance_norm():
    # The student swaps InstanceNorm2d for GroupNorm(C groups): the same function, a faster CPU kernel.
    net = build_generator(GeneratorConfig(name="mobile_resnet", ngf=4, n_blocks=2)).eval()
    assert not any(isinstance(m, nn.InstanceNorm2d) for m in net.modules())
    reference = build_generator(GeneratorConfig(name="mobile_resnet", ngf=4, n_blocks=2)).eval()
    reference.load_state_dict(net.state_dict())
    for module in list(reference.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.GroupNorm):
                setattr(module, name, nn.InstanceNorm2d(child.num_channels))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), rtol=1e-5, atol=1e-5)


def test_mobile_resnet_scripts_for_torchscript_export():
    net = build_generator(GeneratorConfig(name="mobile_resnet", ngf=4, n_blocks=2)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(net)
    x = torch.rand(1, 3, 16, 20) * 2 - 1
    with torch.no_grad():
        assert torch.equal(scripted(x), net(x))


@pytest.mark.parametrize(("gcfg", "channels"), [
    (GeneratorConfig(name="resnet", ngf=4, n_blocks=9), [16, 16, 16, 16]),
    (GeneratorConfig(name="resnet", ngf=4, n_blocks=1), [16, 16, 16, 16]),
    (GeneratorConfig(name="mobile_resnet", ngf=6, n_blocks=6), [24, 24, 24, 24]),
    (GeneratorConfig(name="animeganv2", ngf=8), [16, 32, 32, 16]),
])
def test_distill_features_match_forward_and_sit_at_quarter_resolution(gcfg, channels):
    net = build_generator(gcfg).eval()
    x = torch.rand(2, 3, 24, 32) * 2 - 1
    with torch.no_grad():
        out, feats = distill_features(net, x)
        assert torch.equal(out, net(x))  # the taps reproduce forward exactly: one pass, no drift
    assert [tuple(f.shape) for f in feats] == [(2, c, 6, 8) for c in channels]
    assert distill_channels(net) == channels
    projections = FeatureProjections(student_channels=channels, teacher_channels=[256] * 4)
    assert [tuple(p.shape) for p in projections(feats)] == [(2, 256, 6, 8)] * 4


def test_resnet_taps_are_gan_compressions_mapping_layers():
    # 9 blocks: the encoder output, then after blocks 3, 6 and 9 (GAN Compression's model.9/12/15/18).
    net = build_generator(GeneratorConfig(name="resnet", ngf=2, n_blocks=9)).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        h = net.encoder(x)
        expected = [h]
        for i, block in enumerate(net.transformer, start=1):
            h = block(h)
            if i in (3, 6, 9):
                expected.append(h)
        _, feats = distill_features(net, x)
    assert all(torch.equal(a, b) for a, b in zip(feats, expected))


def test_generators_without_taps_refuse_distill_features():
    net = build_generator(GeneratorConfig(name="attention", ngf=2, n_blocks=1))
    assert isinstance(net, AttentionGenerator)  # a ResnetGenerator subclass with its own forward
    with pytest.raises(ConfigError, match="exposes no distillation features"):
        distill_features(net, torch.zeros(1, 3, 16, 16))
