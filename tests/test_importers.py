"""cyclegan import: foreign generator files -> model folders, checked against independent forward passes.

Each foreign layout is built here as a state dict with the key names and shapes its original code
stores (random values), and each has a functional forward pass written here from those key names
alone (F.conv2d & co.), independent of our networks. An import passes when our rebuilt generator
agrees with that forward pass.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from cyclegan.checkpoint import file_sha256
from cyclegan.cli import main
from cyclegan.errors import EvaluationError
from cyclegan.evaluate import evaluate_checkpoint
from cyclegan.importers import IMPORT_FORMATS, ForeignWeightsError, import_weights
from cyclegan.importers import api as import_api
from cyclegan.modelfile import load_any_generator
from cyclegan.networks import count_parameters
from cyclegan.serve.models import load_models
from cyclegan.translate import Translator


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
    return torch.randn(*shape) * scale


# ------------------------------------------------------------------------------------------------
# Foreign layouts, as their original code stores them


def _conv(sd: dict, prefix: str, c_out: int, c_in: int, k: int, bias: bool, *,
          transpose: bool = False) -> None:
    sd[f"{prefix}.weight"] = _rand(c_in, c_out, k, k) if transpose else _rand(c_out, c_in, k, k)
    if bias:
        sd[f"{prefix}.bias"] = _rand(c_out)


def _norm(sd: dict, prefix: str, c: int, norm: str, *, pre04: bool = False) -> None:
    if norm == "batch":
        sd[f"{prefix}.weight"] = 1 + _rand(c)
        sd[f"{prefix}.bias"] = _rand(c)
        sd[f"{prefix}.running_mean"] = _rand(c)
        sd[f"{prefix}.running_var"] = 0.5 + torch.rand(c)
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(1234)
    elif norm == "instance" and pre04:  # InstanceNorm kept running statistics before PyTorch 0.4
        sd[f"{prefix}.running_mean"] = torch.zeros(c)
        sd[f"{prefix}.running_var"] = torch.ones(c)


# CUT's get_filter: rows of Pascal's triangle for filter sizes 1..7 (a fact of their code).
CUT_ROWS = {1: [1.0], 2: [1.0, 1], 3: [1.0, 2, 1], 4: [1.0, 3, 3, 1], 5: [1.0, 4, 6, 4, 1],
            6: [1.0, 5, 10, 10, 5, 1], 7: [1.0, 6, 15, 20, 15, 6, 1]}


def _cut_filter(size: int, channels: int, *, up: bool) -> torch.Tensor:
    a = torch.tensor(CUT_ROWS[size])
    filt = a[:, None] * a[None, :]
    filt = filt / filt.sum() * (4 if up else 1)
    return filt[None, None].repeat(channels, 1, 1, 1)


def resnet_state(*, ngf=4, n_blocks=2, norm="instance", dropout=False, pre04=False, blur_down=0, blur_up=0):
    """The authors' ResnetGenerator (blur_*: CUT's anti-aliased variant with that filter size)."""
    sd: dict = OrderedDict()
    bias = norm == "instance"
    _conv(sd, "model.1", ngf, 3, 7, bias)
    _norm(sd, "model.2", ngf, norm, pre04=pre04)
    i = 4
    for s in range(2):
        c_in, c_out = ngf * 2**s, ngf * 2 ** (s + 1)
        _conv(sd, f"model.{i}", c_out, c_in, 3, bias)
        _norm(sd, f"model.{i + 1}", c_out, norm, pre04=pre04)
        if blur_down:
            sd[f"model.{i + 3}.filt"] = _cut_filter(blur_down, c_out, up=False)
            i += 4
        else:
            i += 3
    second = 6 if dropout else 5
    for b in range(n_blocks):
        p = f"model.{i + b}.conv_block"
        _conv(sd, f"{p}.1", 4 * ngf, 4 * ngf, 3, bias)
        _norm(sd, f"{p}.2", 4 * ngf, norm, pre04=pre04)
        _conv(sd, f"{p}.{second}", 4 * ngf, 4 * ngf, 3, bias)
        _norm(sd, f"{p}.{second + 1}", 4 * ngf, norm, pre04=pre04)
    i += n_blocks
    for s in range(2):
        c_in, c_out = ngf * 2 ** (2 - s), ngf * 2 ** (1 - s)
        if blur_up:
            sd[f"model.{i}.filt"] = _cut_filter(blur_up, c_in, up=True)
            _conv(sd, f"model.{i + 1}", c_out, c_in, 3, bias)
            _norm(sd, f"model.{i + 2}", c_out, norm, pre04=pre04)
            i += 4
        else:
            _conv(sd, f"model.{i}", c_out, c_in, 3, bias, transpose=True)
            _norm(sd, f"model.{i + 1}", c_out, norm, pre04=pre04)
            i += 3
    _conv(sd, f"model.{i + 1}", 3, ngf, 7, True)
    return sd


def unet_state(*, levels=7, ngf=2, norm="instance", pre04=False):
    """The authors' UnetGenerator: nested UnetSkipConnectionBlocks under model.model."""
    sd: dict = OrderedDict()
    bias = norm == "instance"
    # channels (outer, inner) per level, outermost first
    chans = [(3, ngf), (ngf, 2 * ngf), (2 * ngf, 4 * ngf),
             (4 * ngf, 8 * ngf)] + [(8 * ngf, 8 * ngf)] * (levels - 4)

    def block(prefix: str, level: int) -> None:
        outer, inner = chans[level - 1]
        seq = f"{prefix}.model"
        if level == 1:
            _conv(sd, f"{seq}.0", inner, 3, 4, bias)
            block(f"{seq}.1", 2)
            _conv(sd, f"{seq}.3", 3, 2 * inner, 4, True, transpose=True)
        elif level == levels:
            _conv(sd, f"{seq}.1", inner, outer, 4, bias)
            _conv(sd, f"{seq}.3", outer, inner, 4, bias, transpose=True)
            _norm(sd, f"{seq}.4", outer, norm, pre04=pre04)
        else:
            _conv(sd, f"{seq}.1", inner, outer, 4, bias)
            _norm(sd, f"{seq}.2", inner, norm, pre04=pre04)
            block(f"{seq}.3", level + 1)
            _conv(sd, f"{seq}.5", outer, 2 * inner, 4, bias, transpose=True)
            _norm(sd, f"{seq}.6", outer, norm, pre04=pre04)

    block("model", 1)
    return sd


def animegan_state():
    """The AnimeGANv2 PyTorch port's Generator (face_paint_512_v2 and friends)."""
    sd: dict = OrderedDict()

    def cnl(p: str, c_in: int, c_out: int, k: int = 3, groups: int = 1, bias: bool = False) -> None:
        sd[f"{p}.1.weight"] = _rand(c_out, c_in // groups, k, k)
        if bias:
            sd[f"{p}.1.bias"] = _rand(c_out)
        sd[f"{p}.2.weight"] = 1 + _rand(c_out)
        sd[f"{p}.2.bias"] = _rand(c_out)

    cnl("block_a.0", 3, 32, 7)
    cnl("block_a.1", 32, 64)
    cnl("block_a.2", 64, 64)
    cnl("block_b.0", 64, 128)
    cnl("block_b.1", 128, 128)
    cnl("block_c.0", 128, 128)
    for j, (c_in, c_out) in enumerate([(128, 256), (256, 256), (256, 256), (256, 256)], start=1):
        p = f"block_c.{j}.layers"
        cnl(f"{p}.0", c_in, 2 * c_in, 1)
        cnl(f"{p}.1", 2 * c_in, 2 * c_in, 3, groups=2 * c_in, bias=True)
        sd[f"{p}.2.weight"] = _rand(c_out, 2 * c_in, 1, 1)
        sd[f"{p}.3.weight"] = 1 + _rand(c_out)
        sd[f"{p}.3.bias"] = _rand(c_out)
    cnl("block_c.5", 256, 128)
    cnl("block_d.0", 128, 128)
    cnl("block_d.1", 128, 128)
    cnl("block_e.0", 128, 64)
    cnl("block_e.1", 64, 64)
    cnl("block_e.2", 64, 32, 7)
    sd["out_layer.0.weight"] = _rand(3, 32, 1, 1)
    return sd


# ------------------------------------------------------------------------------------------------
# Independent forward passes, read off the key names


def _apply_norm(sd, h, prefix, norm):
    if norm == "batch":
        return F.batch_norm(h, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"],
                            sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], training=False, eps=1e-5)
    if norm == "instance":
        return F.instance_norm(h, eps=1e-5)
    return h


def _c(sd, h, prefix, **kw):
    return F.conv2d(h, sd[f"{prefix}.weight"], sd.get(f"{prefix}.bias"), **kw)


def resnet_forward(sd, x, *, norm="instance", n_blocks=2, dropout=False, blur_down=0, blur_up=0):
    h = F.relu(_apply_norm(sd, _c(sd, F.pad(x, (3,) * 4, mode="reflect"), "model.1"), "model.2", norm))
    i = 4
    for _ in range(2):
        if blur_down:
            h = F.relu(_apply_norm(sd, _c(sd, h, f"model.{i}", padding=1), f"model.{i + 1}", norm))
            filt = sd[f"model.{i + 3}.filt"]
            k = filt.shape[-1]
            lo, hi = (k - 1) // 2, math.ceil((k - 1) / 2)
            h = F.conv2d(F.pad(h, (lo, hi, lo, hi), mode="reflect"), filt, stride=2, groups=h.shape[1])
            i += 4
        else:
            h = F.relu(_apply_norm(sd, _c(sd, h, f"model.{i}", stride=2, padding=1), f"model.{i + 1}", norm))
            i += 3
    second = 6 if dropout else 5
    for b in range(n_blocks):
        p = f"model.{i + b}.conv_block"
        y = F.relu(_apply_norm(sd, _c(sd, F.pad(h, (1,) * 4, mode="reflect"), f"{p}.1"), f"{p}.2", norm))
        y = _apply_norm(sd, _c(sd, F.pad(y, (1,) * 4, mode="reflect"), f"{p}.{second}"), f"{p}.{second + 1}",
                        norm)
        h = h + y
    i += n_blocks
    for _ in range(2):
        if blur_up:
            filt = sd[f"model.{i}.filt"]
            k = filt.shape[-1]
            y = F.conv_transpose2d(F.pad(h, (1,) * 4, mode="replicate"), filt, stride=2,
                                   padding=1 + (k - 1) // 2, groups=h.shape[1])[:, :, 1:, 1:]
            if k % 2 == 0:
                y = y[:, :, :-1, :-1]
            h = F.relu(_apply_norm(sd, _c(sd, y, f"model.{i + 1}", padding=1), f"model.{i + 2}", norm))
            i += 4
        else:
            y = F.conv_transpose2d(h, sd[f"model.{i}.weight"], sd.get(f"model.{i}.bias"), stride=2, padding=1,
                                   output_padding=1)
            h = F.relu(_apply_norm(sd, y, f"model.{i + 1}", norm))
            i += 3
    return torch.tanh(_c(sd, F.pad(h, (3,) * 4, mode="reflect"), f"model.{i + 1}"))


def unet_forward(sd, x, *, levels=7, norm="instance"):
    def up(h, prefix):
        return F.conv_transpose2d(F.relu(h), sd[f"{prefix}.weight"], sd.get(f"{prefix}.bias"), stride=2,
                                  padding=1)

    def block(prefix, level, h):
        seq = f"{prefix}.model"
        if level == 1:
            return torch.tanh(up(block(f"{seq}.1", 2, _c(sd, h, f"{seq}.0", stride=2, padding=1)),
                                 f"{seq}.3"))
        # The authors' LeakyReLU is in place: the skip connection carries the activated input.
        skip = F.leaky_relu(h, 0.2)
        if level == levels:
            inner = _c(sd, skip, f"{seq}.1", stride=2, padding=1)
            return torch.cat([skip, _apply_norm(sd, up(inner, f"{seq}.3"), f"{seq}.4", norm)], 1)
        inner = _apply_norm(sd, _c(sd, skip, f"{seq}.1", stride=2, padding=1), f"{seq}.2", norm)
        inner = block(f"{seq}.3", level + 1, inner)
        return torch.cat([skip, _apply_norm(sd, up(inner, f"{seq}.5"), f"{seq}.6", norm)], 1)

    return block("model", 1, x)


def animegan_forward(sd, x):
    def cnl(h, p, k=3, stride=1, pad=None, groups=1):
        pad = pad if pad is not None else (k // 2,) * 4
        h = F.conv2d(F.pad(h, pad, mode="reflect"), sd[f"{p}.1.weight"], sd.get(f"{p}.1.bias"), stride=stride,
                     groups=groups)
        return F.leaky_relu(F.group_norm(h, 1, sd[f"{p}.2.weight"], sd[f"{p}.2.bias"], eps=1e-5), 0.2)

    h = cnl(x, "block_a.0", 7)
    h = cnl(h, "block_a.1", stride=2, pad=(0, 1, 0, 1))
    half = cnl(h, "block_a.2")
    h = cnl(half, "block_b.0", stride=2, pad=(0, 1, 0, 1))
    h = cnl(cnl(h, "block_b.1"), "block_c.0")
    for j in range(1, 5):
        p = f"block_c.{j}.layers"
        y = cnl(h, f"{p}.0", 1)
        y = cnl(y, f"{p}.1", groups=y.shape[1])
        y = F.group_norm(F.conv2d(y, sd[f"{p}.2.weight"]), 1, sd[f"{p}.3.weight"], sd[f"{p}.3.bias"],
                         eps=1e-5)
        h = h + y if y.shape == h.shape else y
    h = cnl(h, "block_c.5")
    h = F.interpolate(h, size=half.shape[-2:], mode="bilinear", align_corners=True)
    h = cnl(cnl(h, "block_d.0"), "block_d.1")
    h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=True)
    h = cnl(cnl(cnl(h, "block_e.0"), "block_e.1"), "block_e.2", 7)
    return torch.tanh(F.conv2d(h, sd["out_layer.0.weight"]))


def _save(sd: dict, path: Path, **kwargs) -> Path:
    torch.save(sd, path, **kwargs)
    return path


def _agrees(out: Path, sd: dict, forward, shape=(2, 3, 32, 48), direction=None, **kwargs) -> None:
    """The imported model (rebuilt from ``out`` alone) computes what the foreign layout computes."""
    loaded = load_any_generator(out, direction=direction)
    x = torch.rand(shape) * 2 - 1
    with torch.inference_mode():
        got, expected = loaded.model(x), forward(sd, x, **kwargs)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=2e-5), float((got - expected).abs().max())


# ------------------------------------------------------------------------------------------------
# official


def test_formats_are_registered():
    assert set(IMPORT_FORMATS) == {"official", "cut", "animeganv2", "animeganv2-tf", "whitebox", "onnx"}


@pytest.mark.parametrize(("n_blocks", "norm", "ngf", "dropout"), [
    (9, "instance", 4, False), (6, "batch", 6, False), (6, "instance", 3, True), (2, "none", 4, False)])
def test_official_resnet_matches_the_authors_forward(tmp_path, n_blocks, norm, ngf, dropout):
    sd = resnet_state(ngf=ngf, n_blocks=n_blocks, norm=norm, dropout=dropout)
    src = _save(sd, tmp_path / "horse2zebra.pth")
    result = import_weights("official", [src], tmp_path / "out")
    assert result.directions == ("a2b",) and result.max_abs_diff == 0.0 and result.dropped == 0
    assert f"{n_blocks} blocks, ngf {ngf}, {norm} norm" in result.architecture
    _agrees(tmp_path / "out", sd, resnet_forward, norm=norm, n_blocks=n_blocks, dropout=dropout)
    # The folder is what `cyclegan export --format safetensors` writes, with provenance.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "generator.safetensors",
                                                                   "meta.json"]
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["imported"]["format"] == "official"
    assert meta["imported"]["sources"] == [{"file": "horse2zebra.pth", "sha256": file_sha256(src)}]
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())["model"]["generator"]
    assert (cfg["name"], cfg["ngf"], cfg["n_blocks"], cfg["norm"]) == ("resnet", ngf, n_blocks, norm)
    assert cfg["dropout"] == (0.5 if dropout else 0.0)


@pytest.mark.parametrize(("levels", "norm"), [(7, "batch"), (8, "instance")])
def test_official_unet_matches_the_authors_forward(tmp_path, levels, norm):
    sd = unet_state(levels=levels, ngf=2, norm=norm)
    import_weights("official", [_save(sd, tmp_path / "facades_label2photo.pth")], tmp_path / "out")
    side = 2**levels
    _agrees(tmp_path / "out", sd, unet_forward, shape=(1, 3, side, 2 * side), levels=levels, norm=norm)
    name = json.loads((tmp_path / "out" / "config.json").read_text())["model"]["generator"]["name"]
    assert name == f"unet_{side}"


def test_module_prefix_from_data_parallel_is_removed(tmp_path):
    sd = resnet_state(ngf=4, n_blocks=2)
    prefixed = OrderedDict((f"module.{k}", v) for k, v in sd.items())
    import_weights("official", [_save(prefixed, tmp_path / "latest_net_G_A.pth")], tmp_path / "out")
    _agrees(tmp_path / "out", sd, resnet_forward)


@pytest.mark.parametrize("kind", ["resnet", "unet"])
def test_pre_0_4_instance_norm_statistics_are_dropped(tmp_path, kind):
    # Zoo files were written by PyTorch 0.3: old serialisation, InstanceNorm running statistics.
    if kind == "resnet":
        sd, forward, kwargs, shape = resnet_state(ngf=4, n_blocks=2, pre04=True), resnet_forward, {}, (1, 3,
                                                                                                       32, 32)
        n_norms = 1 + 2 + 2 * 2 + 2  # stem, downsampling, two per block, upsampling
    else:
        sd, forward, kwargs, shape = unet_state(levels=7, ngf=2, pre04=True), unet_forward, {}, (1, 3, 128,
                                                                                                 128)
        n_norms = 2 * 5 + 1  # two per middle level, one innermost
    src = _save(sd, tmp_path / "style_monet.pth", _use_new_zipfile_serialization=False)
    result = import_weights("official", [src], tmp_path / "out")
    assert result.dropped == 2 * n_norms
    assert "dropped" in result.line()
    _agrees(tmp_path / "out", sd, forward, shape=shape, **kwargs)


def test_batch_norm_files_from_before_pytorch_0_4_1_have_no_batch_counter(tmp_path):
    sd = resnet_state(ngf=4, n_blocks=1, norm="batch")
    old = OrderedDict((k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    import_weights("official", [_save(old, tmp_path / "facades.pth", _use_new_zipfile_serialization=False)],
                   tmp_path / "out")
    _agrees(tmp_path / "out", sd, resnet_forward, norm="batch", n_blocks=1)


def test_g_a_and_g_b_give_a_two_directional_checkpoint(tmp_path):
    sd_a, sd_b = resnet_state(ngf=4, n_blocks=2), resnet_state(ngf=4, n_blocks=2)
    srcs = [_save(sd_b, tmp_path / "latest_net_G_B.pth"), _save(sd_a, tmp_path / "latest_net_G_A.pth")]
    result = import_weights("official", srcs, tmp_path / "ckpt")
    assert result.directions == ("a2b", "b2a")
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["G_A.safetensors", "G_B.safetensors", "config.json", "meta.json"]
    _agrees(tmp_path / "ckpt", sd_a, resnet_forward, direction="a2b")
    _agrees(tmp_path / "ckpt", sd_b, resnet_forward, direction="b2a")


def test_a_lone_g_b_file_translates_b_to_a(tmp_path):
    import_weights("official", [_save(resnet_state(), tmp_path / "200_net_G_B.pth")], tmp_path / "out")
    assert load_any_generator(tmp_path / "out").info.direction == "b2a"


def test_g_a_and_g_b_of_different_architectures_are_refused(tmp_path):
    srcs = [_save(resnet_state(ngf=4), tmp_path / "latest_net_G_A.pth"),
            _save(resnet_state(ngf=6), tmp_path / "latest_net_G_B.pth")]
    with pytest.raises(ForeignWeightsError, match="must share one architecture"):
        import_weights("official", srcs, tmp_path / "out")
    with pytest.raises(ForeignWeightsError, match="G_A.pth and \\*_net_G_B.pth"):
        import_weights("official", [srcs[0], srcs[0]], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# cut


@pytest.mark.parametrize(("down", "up"), [(3, 4), (5, 2), (0, 4), (3, 0)])
def test_cut_antialiased_generator_matches_the_cut_forward(tmp_path, down, up):
    sd = resnet_state(ngf=4, n_blocks=3, blur_down=down, blur_up=up)
    result = import_weights("cut", [_save(sd, tmp_path / "latest_net_G.pth")], tmp_path / "out")
    _agrees(tmp_path / "out", sd, resnet_forward, n_blocks=3, blur_down=down, blur_up=up)
    model = json.loads((tmp_path / "out" / "config.json").read_text())["model"]
    mode = {(True, True): "both", (True, False): "down", (False, True): "up"}[(bool(down), bool(up))]
    assert model["kind"] == "cut" and model["generator"]["antialias"] == mode
    if down:  # the filter sizes are read from the file's filt buffers
        assert model["generator"]["antialias_filter"] == down
    if up:
        assert model["generator"]["antialias_up_filter"] == up
    assert "anti-aliased" in result.architecture


def test_cut_default_generator_parameter_count(tmp_path):
    sd = resnet_state(ngf=64, n_blocks=9, blur_down=3, blur_up=4)
    result = import_weights("cut", [_save(sd, tmp_path / "latest_net_G.pth")], tmp_path / "out")
    assert "11,378,179 parameters" in result.architecture
    assert count_parameters(load_any_generator(tmp_path / "out").model) == 11_378_179


def test_cut_blur_filters_must_hold_the_binomial_values(tmp_path):
    sd = resnet_state(ngf=4, n_blocks=1, blur_down=3, blur_up=4)
    sd["model.7.filt"] = sd["model.7.filt"] * 2
    with pytest.raises(ForeignWeightsError, match="model.7.filt is not the binomial blur filter"):
        import_weights("cut", [_save(sd, tmp_path / "g.pth")], tmp_path / "out")


def test_official_refuses_a_cut_file_and_says_which_format(tmp_path):
    src = _save(resnet_state(ngf=4, blur_down=3, blur_up=4), tmp_path / "latest_net_G.pth")
    with pytest.raises(ForeignWeightsError, match="cyclegan import cut"):
        import_weights("official", [src], tmp_path / "out")


# ------------------------------------------------------------------------------------------------
# animeganv2


def test_animeganv2_matches_the_port_forward(tmp_path):
    sd = animegan_state()
    result = import_weights("animeganv2", [_save(sd, tmp_path / "face_paint_512_v2.pt")], tmp_path / "out")
    assert "2,143,552 parameters" in result.architecture
    _agrees(tmp_path / "out", sd, animegan_forward, shape=(1, 3, 36, 28))
    assert sum(v.numel() for v in sd.values()) == 2_143_552


# ------------------------------------------------------------------------------------------------
# refusals: one line, nothing written


def test_a_file_of_no_known_layout_gets_one_line_naming_expected_and_found(tmp_path):
    src = _save({"encoder.0.weight": torch.zeros(8, 3, 3, 3), "head.bias": torch.zeros(3)},
                tmp_path / "x.pth")
    for fmt in ("official", "cut", "animeganv2"):  # the formats that read PyTorch state dicts
        with pytest.raises(ForeignWeightsError) as info:
            import_weights(fmt, [src], tmp_path / "out")
        msg = str(info.value)
        assert "\n" not in msg and "expected" in msg and ("found 2 tensors: encoder.0.weight [8, 3, 3, "
                                                          "3]") in msg
    src = _save(animegan_state(), tmp_path / "paprika.pt")
    with pytest.raises(ForeignWeightsError, match="looks like a file for format animeganv2"):
        import_weights("official", [src], tmp_path / "out")
    assert not (tmp_path / "out").exists()


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused_without_running_them(tmp_path, capsys):
    sd = resnet_state()
    sd["model.1.weight"] = Payload()
    src = _save(sd, tmp_path / "evil.pth")
    with pytest.raises(ForeignWeightsError,
                       match=r"holds pickled code or objects \(print\), not only tensors; it was not loaded"):
        import_weights("official", [src], tmp_path / "out")
    assert "must never run" not in capsys.readouterr().out


class SystemCall:
    """Pickles as a GLOBAL posix.system call: what a hostile .pth runs under
    torch.load(weights_only=False)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_calling_os_system_is_refused_as_code_without_torchs_advice(tmp_path):
    marker = tmp_path / "pwned"
    sd = resnet_state()
    sd["model.1.weight"] = SystemCall(marker)
    src = _save(sd, tmp_path / "evil.pth")
    res = CliRunner().invoke(main, ["import", "official", str(src), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and res.output.strip().count("\n") == 0, res.output
    assert f"{src}: holds pickled code or objects (posix.system)" in res.output
    assert "was not loaded" in res.output
    for advice in ("weights_only", "arbitrary code", "trusted source", "Re-running"):
        assert advice not in res.output
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_broken_pickle_stream_is_unreadable_without_torchs_advice(tmp_path):
    src = _save(resnet_state(), tmp_path / "g.pth")
    with zipfile.ZipFile(src) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    members[pkl] = b"\x80\x02\xff\xff\xff"  # protocol 2, then no opcode
    with zipfile.ZipFile(tmp_path / "bad.pth", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(ForeignWeightsError) as info:
        import_weights("official", [tmp_path / "bad.pth"], tmp_path / "out")
    assert "not a readable PyTorch" in str(info.value) and "weights_only" not in str(info.value)


def test_a_float64_weight_beyond_float32_range_names_the_tensor_of_the_input_file(tmp_path):
    sd = resnet_state()
    sd["model.4.weight"] = sd["model.4.weight"].double()
    sd["model.4.weight"][0, 0, 0, 0] = 1e300  # finite as float64, inf as float32
    src = _save(sd, tmp_path / "g.pth")
    with pytest.raises(ForeignWeightsError) as info:
        import_weights("official", [src], tmp_path / "out")
    msg = str(info.value)
    assert msg.startswith(f"{src}: tensor model.4.weight holds values that are not finite as float32"), msg
    assert ".import-" not in msg and "diverged" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.pth"]


def _stride0_resnet(*, ngf: int, n_blocks: int) -> dict:
    """The authors' ResNet layout at width ``ngf``, every tensor a stride-0 view of one stored zero."""
    with torch.device("meta"):  # shapes only: the real network would take gigabytes
        shapes = resnet_state(ngf=ngf, n_blocks=n_blocks)
    return OrderedDict((k, torch.zeros(1).expand(v.shape)) for k, v in shapes.items())


def _zip_bomb(path: Path, *, inflated: int) -> Path:
    """A torch.save zip archive plus one deflated member of ``inflated`` zero bytes (about 1 KB per MiB),
    written by hand: a full-flushed deflate block of 1 MiB of zeros, repeated."""
    tiny = _save(resnet_state(), path.with_name("tiny.pth"))
    with zipfile.ZipFile(tiny) as z:
        stored = [(i.filename, z.read(i)) for i in z.infolist()]
    mib = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    body = block * (inflated >> 20) + deflate.flush()
    crc = 0
    for _ in range(inflated >> 20):
        crc = zlib.crc32(mib, crc)
    # The bomb replaces the record of the first tensor, which torch.load inflates whole to read it.
    members = [(name, body, 8, crc, inflated) if name.endswith("/data/0") else (name, data, 0,
                                                                                zlib.crc32(data),
                                                                              len(data))
               for name, data in stored]
    out, central = bytearray(), bytearray()
    for name, data, method, crc32, size in members:
        raw = name.encode()
        central += struct.pack("<4s4H2H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc32, len(data),
                               size, len(raw), 0, 0, 0, 0, 0, len(out)) + raw
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc32, len(data), size,
                           len(raw), 0) + raw + data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))
    return path


PEAK_SCRIPT = """
import resource, sys
from cyclegan.importers import ForeignWeightsError, import_weights
import_weights("official", [sys.argv[1]], sys.argv[2] + "/warm")  # a real import: torch and our code warm
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for i, hostile in enumerate(sys.argv[3:]):
    try:
        import_weights("official", [hostile], sys.argv[2] + f"/out{i}")
        print("ACCEPTED", hostile)
    except ForeignWeightsError as e:
        print("REFUSED", e)
    print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, flush=True)
"""


def test_memory_is_bounded_by_the_file_not_by_the_sizes_it_declares(tmp_path):
    """Three small hostile files, each refused with peak memory (ru_maxrss, in a fresh process) at most
    64 MB above a real import's: an ngf-620 file as in the issue (6.8 KB, half its tensors missing), a
    complete ngf-256 file of stride-0 views (declaring 727 MB), and a 1 MB zip whose member inflates
    to 1 GiB."""
    full = _stride0_resnet(ngf=620, n_blocks=9)
    # Every block's first conv (so 9 blocks are inferred), nothing after it: 24 of 48 tensors missing.
    lacking = OrderedDict((k, v) for i, (k, v) in enumerate(full.items()) if i < 6 or "conv_block.1." in k)
    hostile = [  # smallest peak before the fix first: ru_maxrss only grows
        _zip_bomb(tmp_path / "bomb.pth", inflated=1 << 30),
        _save(_stride0_resnet(ngf=256, n_blocks=9), tmp_path / "stride0.pth"),
        _save(lacking, tmp_path / "ngf620.pth"),
    ]
    assert [p.stat().st_size < limit for p, limit in zip(hostile, (1_200_000, 20_000, 20_000))] == [True] * 3
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT,
                           str(_save(resnet_state(), tmp_path / "real.pth")),
                           str(tmp_path), *map(str, hostile)], check=False, capture_output=True, text=True,
                           timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    verdicts, peaks = lines[0::2], [int(x.split()[1]) for x in lines[1::2]]
    assert [v.split()[0] for v in verdicts] == ["REFUSED"] * 3, proc.stdout
    assert "would inflate to 1,07" in verdicts[0]
    assert "declare 727,048,204 bytes" in verdicts[1] and "stores only" in verdicts[1]
    assert "9 blocks, ngf 620" in verdicts[2] and "is missing (and 23 more)" in verdicts[2]
    assert max(peaks) < 64 * 1024, peaks  # KB
    print("peak memory above a real import, KB:", peaks)


@pytest.mark.parametrize(("content", "match"), [
    ({"state_dict": {"model.1.weight": torch.zeros(1)}}, "entry 'state_dict' holds a dict"),
    ([torch.zeros(1)], "found a list"),
    ({}, "holds no tensors"),
])
def test_anything_but_a_flat_state_dict_is_refused(tmp_path, content, match):
    with pytest.raises(ForeignWeightsError, match=match):
        import_weights("official", [_save(content, tmp_path / "g.pth")], tmp_path / "out")


def test_junk_and_missing_files_are_one_line(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ForeignWeightsError, match="not a readable PyTorch weights file"):
        import_weights("official", [tmp_path / "junk.pth"], tmp_path / "out")
    with pytest.raises(ForeignWeightsError, match="no such file"):
        import_weights("official", [tmp_path / "nope.pth"], tmp_path / "out")
    with pytest.raises(ForeignWeightsError, match="choose from animeganv2, .*cut, official"):
        import_weights("keras", [tmp_path / "junk.pth"], tmp_path / "out")


def test_missing_extra_and_misshapen_tensors_are_named(tmp_path):
    sd = resnet_state(ngf=4, n_blocks=2)
    broken = OrderedDict(sd)
    del broken["model.12.weight"]  # the first transposed conv, after blocks 10 and 11
    with pytest.raises(ForeignWeightsError, match="tensor model.12.weight is missing"):
        import_weights("official", [_save(broken, tmp_path / "a.pth")], tmp_path / "out")
    extra = OrderedDict(sd, **{"model.99.weight": torch.zeros(2)})
    with pytest.raises(ForeignWeightsError, match="unexpected tensor model.99.weight"):
        import_weights("official", [_save(extra, tmp_path / "b.pth")], tmp_path / "out")
    bent = OrderedDict(sd)
    bent["model.4.weight"] = torch.zeros(8, 4, 4, 4)
    with pytest.raises(ForeignWeightsError,
                       match=r"model.4.weight has shape \[8, 4, 4, 4\], expected \[8, 4, 3, 3\]"):
        import_weights("official", [_save(bent, tmp_path / "c.pth")], tmp_path / "out")
    bad = OrderedDict(sd)
    bad["model.1.bias"] = torch.full((4,), float("nan"))
    with pytest.raises(ForeignWeightsError, match="model.1.bias holds values that are not finite as float32"):
        import_weights("official", [_save(bad, tmp_path / "d.pth")], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_a_mismatch_in_the_written_model_fails_the_import(tmp_path, monkeypatch):
    real = import_api.load_any_generator

    def perturbed(*args, **kwargs):
        loaded = real(*args, **kwargs)
        with torch.no_grad():
            next(loaded.model.parameters()).add_(1e-3)
        return loaded

    monkeypatch.setattr(import_api, "load_any_generator", perturbed)
    with pytest.raises(ForeignWeightsError, match="differs from the converted one"):
        import_weights("official", [_save(resnet_state(), tmp_path / "g.pth")], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.pth"]


def test_out_is_never_overwritten_without_overwrite_nor_a_users_folder(tmp_path):
    src = _save(resnet_state(ngf=4), tmp_path / "g.pth")
    import_weights("official", [src], tmp_path / "out")
    with pytest.raises(ForeignWeightsError, match="already exists; pass --overwrite"):
        import_weights("official", [src], tmp_path / "out")
    src2 = _save(resnet_state(ngf=6), tmp_path / "g2.pth")
    import_weights("official", [src2], tmp_path / "out", overwrite=True)
    assert "ngf 6" in json.loads((tmp_path / "out" / "meta.json").read_text())["imported"]["architecture"]
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"...")
    with pytest.raises(ForeignWeightsError, match="not a cyclegan model folder"):
        import_weights("official", [src], mine, overwrite=True)
    assert (mine / "holiday.jpg").read_bytes() == b"..."
    with pytest.raises(ForeignWeightsError, match="the file being imported"):
        import_weights("official", [src], tmp_path, overwrite=True)


# ------------------------------------------------------------------------------------------------
# the imported folders work everywhere a checkpoint does


def _image(path: Path, size=(40, 28)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_cli_import_then_translate_and_export_onnx(tmp_path):
    pytest.importorskip("onnxruntime")  # the onnx extra is part of dev; CI has it
    sd = resnet_state(ngf=4, n_blocks=2)
    src = _save(sd, tmp_path / "horse2zebra.pth")
    runner = CliRunner()
    res = runner.invoke(main, ["import", "official", str(src), "--out", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output
    assert "imported official ResNet generator with 2 blocks" in res.output
    img = _image(tmp_path / "horse.png")
    res = runner.invoke(main, ["translate", "--checkpoint", str(tmp_path / "model"), str(img), "--out",
                               str(tmp_path / "zebra.png"), "--precision", "fp32", "--quiet"])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "zebra.png").size == (40, 28)
    res = runner.invoke(main, ["export", "--checkpoint", str(tmp_path / "model"), "--format", "onnx", "--out",
                               str(tmp_path / "model.onnx")])
    assert res.exit_code == 0, res.output
    onnx_model = load_any_generator(tmp_path / "model.onnx")
    x = torch.rand(1, 3, 32, 40) * 2 - 1
    assert onnx_model.kind == "onnx"
    assert torch.allclose(onnx_model.model(x), resnet_forward(sd, x), atol=1e-4)


@pytest.mark.parametrize("legacy", [False, True])
def test_an_official_pth_given_as_a_model_points_to_cyclegan_import(tmp_path, tiny_dataroot, legacy):
    src = _save(resnet_state(), tmp_path / "latest_net_G_A.pth", _use_new_zipfile_serialization=not legacy)
    runs = {
        "distill": ["distill", "--teacher", str(src), "--out", str(tmp_path / "student"), "--max-steps", "1",
                    "--quiet", "--set", f"data.dataroot={tiny_dataroot}"],
        "translate": ["translate", str(tiny_dataroot / "testA"), "--checkpoint", str(src), "--out",
                      str(tmp_path / "translated"), "--quiet"],
    }
    for name, args in runs.items():
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1, (name, res.output)
        line = res.output.strip().splitlines()[-1]
        assert line.startswith(f"error: {src}: PyTorch weights (a state dict), not a model file"), (name,
                                                                                                    line)
        assert f"cyclegan import official|cut|animeganv2 {src} --out FOLDER" in line
        assert "TorchScript" not in res.output
    assert not (tmp_path / "student").exists() and not (tmp_path / "translated").exists()


def test_cli_import_errors_are_one_line_exit_1(tmp_path):
    res = CliRunner().invoke(main,
                             ["import", "official", str(tmp_path / "missing.pth"), "--out",
                              str(tmp_path / "o")])
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0 and res.output.startswith(
        "error: ") and "no such file" in res.output


def test_python_api_serve_and_evaluate_work_on_imported_folders(tmp_path, tiny_dataroot):
    sd = animegan_state()
    import_weights("animeganv2", [_save(sd, tmp_path / "paprika.pt")], tmp_path / "anime")
    translator = Translator.from_checkpoint(tmp_path / "anime", device="cpu")
    out = translator(Image.open(_image(tmp_path / "photo.png", size=(30, 22))))
    assert out.size == (30, 22)
    # evaluate on a one-direction import (a safetensors export folder) and on a G_A + G_B checkpoint
    result = evaluate_checkpoint(tmp_path / "anime", dataroot=tiny_dataroot, use_inception=False,
                                 device="cpu", image_size=32, out=tmp_path / "eval.json")
    assert set(result) >= {"a2b"} and "b2a" not in result
    srcs = [_save(resnet_state(ngf=4), tmp_path / f"latest_net_{n}.pth") for n in ("G_A", "G_B")]
    import_weights("official", srcs, tmp_path / "both")
    result = evaluate_checkpoint(tmp_path / "both", dataroot=tiny_dataroot, use_inception=False, device="cpu",
                                 image_size=32, out=tmp_path / "eval2.json")
    assert "cycle_l1" in result["a2b"] and "cycle_l1" in result["b2a"]
    served = load_models([f"anime={tmp_path / 'anime'}", f"both={tmp_path / 'both'}"], device="cpu")
    assert served["anime"].directions == ["a2b"] and sorted(served["both"].directions) == ["a2b", "b2a"]
    import_weights("official", [srcs[1]], tmp_path / "b_only")
    with pytest.raises(EvaluationError, match="holds only the b2a generator"):
        evaluate_checkpoint(tmp_path / "b_only", dataroot=tiny_dataroot, use_inception=False, device="cpu",
                            image_size=32, out=tmp_path / "eval3.json")
