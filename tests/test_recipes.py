"""The recipe presets' parts (attention generator, VQ, dual-head and CNN discriminators, relativistic and
structure losses, warm start) and every new preset end to end, at toy sizes on CPU."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from cyclegan import checkpoint as ckpt_io
from cyclegan.cli import main
from cyclegan.config import DiscriminatorConfig, GeneratorConfig, build_config, list_presets
from cyclegan.errors import CheckpointError, ConfigError
from cyclegan.losses import (
    UncertaintyWeights,
    build_gan_loss,
    chroma,
    color_loss,
    edge_loss,
    feature_matching_loss,
    gradient_penalty,
    sobel_edges,
    uncertainty_weighted,
)
from cyclegan.networks import (
    AttentionGenerator,
    DualHeadDiscriminator,
    VanillaCNNDiscriminator,
    VectorQuantizer,
    build_discriminator,
    build_generator,
)
from cyclegan.networks.attention import CBAM, SelfAttention, SqueezeExcitation
from cyclegan.prep import pack_folder, remove_background
from cyclegan.schedules import learning_rate
from cyclegan.training import build_train_step, train

NEW_PRESETS = ("photo2anime-resnet", "photo2anime-unet", "celeb2cartoon64", "attention-cyclegan",
               "animal2sprite")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _all_grads_flow(net: nn.Module) -> None:
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name}: no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient"


# ----------------------------------------------------------------------------------------------
# Attention generator (SE, CBAM, self-attention)


def test_attention_blocks_shapes_and_gates():
    x = torch.randn(2, 16, 8, 8)
    assert SqueezeExcitation(channels=16, reduction=4)(x).shape == x.shape
    assert CBAM(channels=16, reduction=4)(x).shape == x.shape
    cbam = CBAM(channels=16, reduction=4)
    gate = cbam.channel(x)
    assert gate.shape == (2, 16, 1, 1) and ((gate > 0) & (gate < 1)).all()
    assert cbam.spatial(x).shape == (2, 1, 8, 8)
    # SAGAN's gamma starts at 0: the layer is the identity until it learns otherwise
    attn = SelfAttention(channels=16)
    assert torch.equal(attn(x), x)


def test_attention_generator_layout_shapes_and_gradients():
    net = build_generator(GeneratorConfig(name="attention", ngf=4, n_blocks=5, cbam_every=2, se_reduction=2))
    assert isinstance(net, AttentionGenerator) and net.size_multiple == 4
    # mixed (SE only) and improved (CBAM + SE) blocks alternate, mixed first
    assert [isinstance(b.cbam, CBAM) for b in net.transformer] == [False, True, False, True, False]
    assert all(isinstance(b.se, SqueezeExcitation) for b in net.transformer)
    assert isinstance(net.attention, SelfAttention) and net.quantizer is None and not net.aux_losses
    net.attention.gamma.data.fill_(0.5)  # so the query/key convs receive gradient too
    x = torch.randn(2, 3, 16, 16)
    y = net(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    y.square().mean().backward()
    _all_grads_flow(net)
    plain = build_generator(GeneratorConfig(name="attention", ngf=4, n_blocks=2, cbam_every=0,
                                            self_attention=False))
    assert not any(isinstance(b.cbam, CBAM) for b in plain.transformer)
    assert isinstance(plain.attention, nn.Identity)


def test_attention_generator_with_vq_returns_aux_losses_as_values():
    net = build_generator(GeneratorConfig(name="attention", ngf=4, n_blocks=2, vq_codebook_size=8, vq_dim=4))
    assert net.aux_losses
    x = torch.randn(2, 3, 16, 16)
    assert net(x).shape == x.shape  # plain forward: just the image, for translate/export
    y, aux = net(x, return_aux=True)
    assert set(aux) == {"vq_commitment", "vq_codebook", "vq_perplexity"}
    assert 1.0 <= aux["vq_perplexity"].item() <= 8.0
    (y.square().mean() + aux["vq_commitment"]).backward()
    # the straight-through estimator carries the decoder's gradient back into the encoder
    assert net.encoder[1].weight.grad.abs().sum() > 0
    assert net.pre_vq.weight.grad.abs().sum() > 0


def test_vq_needs_the_attention_generator():
    with pytest.raises(ConfigError, match="vq_codebook_size"):
        build_config(sets=["model.generator.vq_codebook_size=16"])


# ----------------------------------------------------------------------------------------------
# Vector quantiser on a toy codebook


def _toy_vq(decay: float = 0.5) -> VectorQuantizer:
    vq = VectorQuantizer(num_codes=2, dim=2, ema_decay=decay)
    vq.codebook.data.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    if decay:
        vq.ema_sum.copy_(vq.codebook)
        vq.ema_count.fill_(1.0)
    vq.initialized.fill_(True)
    return vq


def _toy_z() -> torch.Tensor:
    # three vectors [1, 0], [9, 10], [0, 1] laid out as [B=1, D=2, H=1, W=3]
    return torch.tensor([[1.0, 0.0], [9.0, 10.0], [0.0, 1.0]]).t().reshape(1, 2, 1, 3)


def test_vq_lookup_commitment_perplexity_by_hand():
    vq = _toy_vq().eval()
    out = vq(_toy_z())
    assert out.indices.flatten().tolist() == [0, 1, 0]
    assert torch.equal(out.quantized.reshape(2, 3).t(), torch.tensor([[0.0, 0.0], [10.0, 10.0], [0.0, 0.0]]))
    # squared distances to the chosen codes: 1, 1, 1 over 6 numbers
    assert out.commitment.item() == pytest.approx(3 / 6)
    p = torch.tensor([2 / 3, 1 / 3])
    assert out.perplexity.item() == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-5)
    assert torch.equal(vq.codebook, torch.tensor([[0.0, 0.0], [10.0, 10.0]]))  # eval: no update


def test_vq_straight_through_gradient_is_identity():
    vq = _toy_vq().eval()
    z = _toy_z().requires_grad_(True)
    w = torch.arange(6.0).reshape(1, 2, 1, 3)
    (vq(z).quantized * w).sum().backward()
    assert torch.equal(z.grad, w)


def test_vq_ema_update_by_hand():
    vq = _toy_vq(decay=0.5).train()
    vq(_toy_z())
    # counts [2, 1], sums [[1, 1], [9, 10]]; EMA with decay 0.5 from counts [1, 1] and the codes
    assert torch.allclose(vq.ema_count, torch.tensor([1.5, 1.0]))
    assert torch.allclose(vq.ema_sum, torch.tensor([[0.5, 0.5], [9.5, 10.0]]))
    # codes = ema_sum / ema_count (Laplace smoothing with eps 1e-5 changes them by < 1e-5)
    assert torch.allclose(vq.codebook, torch.tensor([[1 / 3, 1 / 3], [9.5, 10.0]]), atol=1e-4)


def test_vq_initialises_codes_from_the_first_batch():
    vq = VectorQuantizer(num_codes=4, dim=3).train()
    z = torch.randn(1, 3, 4, 4)
    vq(z)
    assert bool(vq.initialized)
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 3)
    # before its EMA step each code was one of the batch's vectors; after it, still close to them
    nearest = torch.cdist(vq.codebook, vectors).min(1).values
    assert (nearest < 2.0).all()


def test_vq_without_ema_learns_codebook_by_gradient():
    vq = _toy_vq(decay=0.0).train()
    assert isinstance(vq.codebook, nn.Parameter)
    out = vq(_toy_z())
    # ||sg(z) - e||^2 over the same pairs as the commitment
    assert out.codebook_loss.item() == pytest.approx(3 / 6)
    out.codebook_loss.backward()
    assert vq.codebook.grad.abs().sum() > 0


def _vq_replica(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        z = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(1))
        fresh = VectorQuantizer(num_codes=4, dim=2, ema_decay=0.5).train()
        torch.manual_seed(10 + rank)  # different local RNGs: only the broadcast makes them agree
        fresh(z[rank : rank + 1])
        toy = _toy_vq(decay=0.5).train()
        toy(z[rank : rank + 1])
        torch.save({"fresh": fresh.codebook, "toy": toy.codebook}, Path(out) / f"{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_vq_replicas_share_one_codebook_under_data_parallel_training(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_vq_replica, args=(2, port, str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert torch.equal(r0["fresh"], r1["fresh"]) and torch.equal(r0["toy"], r1["toy"])
    # the EMA step of two shards equals one process's step on the whole batch
    single = _toy_vq(decay=0.5).train()
    single(torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(1)))
    assert torch.allclose(r0["toy"], single.codebook, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Discriminators (spectral-norm dual head, vanilla CNN)


def test_dual_head_discriminator_trunk_and_heads_have_the_documented_shapes():
    d = DualHeadDiscriminator(ndf=64, n_layers=3)
    with torch.no_grad():
        trunk = d.trunk(torch.zeros(1, 3, 256, 256))
    assert trunk.shape == (1, 512, 16, 16)  # task 1: [B, 512, 16, 16] at 256px
    task2 = DualHeadDiscriminator(ndf=64, n_layers=2)
    with torch.no_grad():
        assert task2.trunk(torch.zeros(1, 3, 96, 96)).shape == (1, 256, 12, 12)  # task 2 at 96px
    small = build_discriminator(DiscriminatorConfig(name="dual", ndf=4, n_layers=3))
    patch, glob = small(torch.randn(2, 3, 64, 64))
    assert patch.shape == (2, 1, 4, 4) and glob.shape == (2, 1)
    feats = small.features(torch.randn(2, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [4, 8, 16, 32, 1]


def test_dual_head_gradients_reach_both_heads():
    d = build_discriminator(DiscriminatorConfig(name="dual", ndf=4, n_layers=2))
    patch, glob = d(torch.randn(2, 3, 32, 32))
    (patch.mean() + glob.mean()).backward()
    _all_grads_flow(d)


def test_spectral_norm_bounds_the_top_singular_value():
    d = build_discriminator(DiscriminatorConfig(name="dual", ndf=8, n_layers=2))
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    x = torch.randn(2, 3, 32, 32)
    d.train()
    with torch.no_grad():
        for _ in range(30):  # one power iteration per training forward
            d(x)
    d.eval()
    for m in layers:
        w = m.weight.detach().reshape(m.weight.shape[0], -1)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=1e-2)
        # the raw weight, initialised N(0, 0.02) like every other layer, is not normalised itself
        raw = m.parametrizations.weight.original.reshape(m.weight.shape[0], -1)
        assert torch.linalg.matrix_norm(raw, ord=2).item() != pytest.approx(1.0, abs=1e-2)


def test_vanilla_cnn_discriminator_ends_in_one_logit_from_512_channels():
    d = VanillaCNNDiscriminator(ndf=64, n_layers=3)
    fc = d.stages[-1][-1]
    assert isinstance(fc, nn.Linear) and (fc.in_features, fc.out_features) == (512, 1)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) for c in convs)
    small = build_discriminator(DiscriminatorConfig(name="vanilla_cnn", ndf=4, n_layers=3))
    x = torch.randn(2, 3, 32, 32)
    out = small(x)
    assert out.shape == (2, 1)
    feats = small.features(x)
    assert torch.equal(feats[-1], out) and [f.shape[1] for f in feats[:-1]] == [4, 8, 16, 32]
    out.sum().backward()
    _all_grads_flow(small)


# ----------------------------------------------------------------------------------------------
# Losses against hand-computed values


def _sp(x: float) -> float:  # softplus: BCE-with-logits against 1 is softplus(-x), against 0 softplus(x)
    return math.log1p(math.exp(x))


REAL = (torch.tensor([1.0, 3.0]).reshape(2, 1, 1, 1), torch.tensor([[0.5], [1.5]]))
FAKE = (torch.tensor([0.0, 2.0]).reshape(2, 1, 1, 1), torch.tensor([[-1.0], [0.0]]))


def test_relativistic_loss_by_hand():
    gan = build_gan_loss("relativistic")
    assert gan.generator_needs_real
    # real side: patch real - mean(fake) = [0, 2] vs 1 -> MSE 1; global [1, 2] vs 1 -> mean softplus(-x)
    real_side = 0.7 * 1.0 + 0.3 * (_sp(-1) + _sp(-2)) / 2
    # fake side: patch fake - mean(real) = [-2, 0] vs 0 -> MSE 2; global [-2, -1] vs 0 -> mean softplus(x)
    fake_side = 0.7 * 2.0 + 0.3 * (_sp(-2) + _sp(-1)) / 2
    assert gan.discriminator(REAL, FAKE).item() == pytest.approx(0.5 * (real_side + fake_side), rel=1e-6)
    # generator: the mirror image. fake [-2, 0] vs 1 -> MSE 5; global [-2, -1] vs 1; real [0, 2] vs 0 -> 2
    g = 0.5 * (0.7 * 5.0 + 0.3 * (_sp(2) + _sp(1)) / 2 + 0.7 * 2.0 + 0.3 * (_sp(1) + _sp(2)) / 2)
    assert gan.generator(FAKE, REAL).item() == pytest.approx(g, rel=1e-6)


def test_relativistic_on_a_single_head_is_the_mse_part_alone():
    gan = build_gan_loss("relativistic")
    # real [1, 3] - mean fake 1 = [0, 2] vs 1: 1; fake [0, 2] - mean real 2 = [-2, 0] vs 0: 2
    assert gan.discriminator(REAL[0], FAKE[0]).item() == pytest.approx(0.5 * (1.0 + 2.0))


def test_plain_losses_average_over_the_heads_of_a_dual_discriminator():
    lsgan = build_gan_loss("lsgan")
    per_head = [0.5 * (F.mse_loss(r, torch.ones_like(r)) + F.mse_loss(f, torch.zeros_like(f)))
                for r, f in zip(REAL, FAKE)]
    assert lsgan.discriminator(REAL, FAKE).item() == pytest.approx(sum(per_head).item() / 2)
    g = [F.mse_loss(f, torch.ones_like(f)) for f in FAKE]
    assert lsgan.generator(FAKE, None).item() == pytest.approx(sum(g).item() / 2)


def test_feature_matching_by_hand():
    fake = [torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0, 3.0]])]
    real = [torch.tensor([[0.0, 4.0]]), torch.tensor([[1.0, 1.0, 1.0]])]
    # layer 1: (1 + 2) / 2 = 1.5; layer 2: (1 + 1 + 2) / 3 = 4/3; mean over layers
    assert feature_matching_loss(fake, real).item() == pytest.approx((1.5 + 4 / 3) / 2)
    r = real[0].clone().requires_grad_(True)
    feature_matching_loss([fake[0]], [r])
    assert r.grad is None  # real features are targets only


def test_gradient_penalty_by_hand_for_single_and_dual_heads():
    w = torch.full((1, 3, 2, 2), 0.1)
    v = torch.full((1, 3, 2, 2), 0.2)

    class Linear(nn.Module):
        def forward(self, x):
            return (x * w).flatten(1).sum(1, keepdim=True)

    class TwoHeads(nn.Module):
        def forward(self, x):
            return (x * w).flatten(1).sum(1, keepdim=True), (x * v).flatten(1).sum(1, keepdim=True)

    real, fake = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    # the gradient is w everywhere: ||w|| = sqrt(12 * 0.01); with two heads w + v
    single = gradient_penalty(Linear(), real, fake).item()
    assert single == pytest.approx((math.sqrt(0.12) - 1) ** 2, rel=1e-5)
    dual = gradient_penalty(TwoHeads(), real, fake).item()
    assert dual == pytest.approx((math.sqrt(12 * 0.09) - 1) ** 2, rel=1e-5)


def test_sobel_edges_and_edge_loss_by_hand():
    step = torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(1, 3, 3, 4).clone()  # a vertical edge, grey
    edges = sobel_edges(step, eps=0.0)
    # d/dx = (1 + 2 + 1) * (1 - 0) = 4 on the two columns beside the step, 0 elsewhere; d/dy = 0
    assert torch.allclose(edges[0, 0], torch.tensor([[0.0, 4.0, 4.0, 0.0]] * 3))
    flat = torch.full_like(step, 0.5)
    assert edge_loss(step, flat).item() == pytest.approx(2.0, abs=1e-3)  # half the pixels differ by 4
    assert edge_loss(step, step).item() == 0.0


def test_color_loss_by_hand_and_blind_to_texture():
    red = torch.tensor([1.0, -1.0, -1.0]).reshape(1, 3, 1, 1).expand(1, 3, 4, 4)
    grey = torch.zeros(1, 3, 4, 4)
    # BT.601 chroma of pure red in [-1, 1]: Cb = -0.168736 + 0.331264 - 0.5, Cr = 0.5 + 0.418688 + 0.081312
    cb, cr = -0.337472, 1.0
    assert torch.allclose(chroma(red)[0, :, 0, 0], torch.tensor([cb, cr]), atol=1e-6)
    assert color_loss(red, grey).item() == pytest.approx((abs(cb) + abs(cr)) / 2, rel=1e-5)
    # a red/cyan checkerboard averages to grey: with pooling 2 it costs nothing, unpooled it does
    checker = torch.where((torch.arange(4)[:, None] + torch.arange(4)) % 2 == 0, 1.0, -1.0)
    pattern = torch.stack([checker, -checker, -checker]).unsqueeze(0)
    assert color_loss(pattern, grey, pool=2).item() == pytest.approx(0.0, abs=1e-6)
    assert color_loss(pattern, grey, pool=1).item() > 0.5


def test_uncertainty_weighting_by_hand():
    losses, log_vars = torch.tensor([2.0, 3.0]), torch.tensor([0.0, math.log(2.0)])
    assert uncertainty_weighted(losses, log_vars).item() == pytest.approx(2 + 1.5 + math.log(2.0))
    weights = UncertaintyWeights(names=("cycle", "edge"))
    total = weights({"cycle": torch.tensor(2.0), "edge": torch.tensor(0.5)})
    assert total.item() == pytest.approx(2.5)
    total.backward()
    # d/ds (exp(-s) L + s) = 1 - L at s = 0
    assert torch.allclose(weights.log_vars.grad, torch.tensor([-1.0, 0.5]))
    assert {k: v.item() for k, v in weights.weights().items()} == {"cycle": 1.0, "edge": 1.0}


# ----------------------------------------------------------------------------------------------
# LR policy and the training step's wiring


def test_cosine_restarts_matches_torch_scheduler_per_epoch():
    cfg = build_config(sets=["optim.lr_policy=cosine_restarts", "optim.t_0=10", "optim.t_mult=2",
                             "optim.eta_min=1e-5", "train.epochs=100"])
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=2, eta_min=1e-5)
    for epoch in range(1, 81):
        assert learning_rate(cfg, epoch) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
        opt.step()
        sched.step()
    # restarts begin epochs 11, 31 and 71 at the full rate
    assert learning_rate(cfg, 11) == learning_rate(cfg, 31) == learning_rate(cfg, 71) == cfg.optim.lr


def _batch(size: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=g) for k in ("A", "B")}


def test_train_step_logs_every_configured_term(tiny_config):
    cfg = tiny_config(**{
        "model.generator.name": "attention", "model.generator.n_blocks": 2,
        "model.generator.vq_codebook_size": 8, "model.generator.vq_dim": 4,
        "model.discriminator.name": "dual", "model.discriminator.n_layers": 2,
        "loss.gan": "relativistic", "loss.gradient_penalty": True, "loss.lambda_fm": 1.0,
        "loss.lambda_edge": 1.0, "loss.lambda_color": 1.0, "loss.adaptive_weighting": "uncertainty",
    })
    step = build_train_step(cfg, torch.device("cpu"))
    # the learned weights are optimised with the generators
    assert step.loss_weights is not None
    assert step.loss_weights.names == ("cycle", "idt", "edge", "color", "fm")
    assert step.opt_g.param_groups[0]["params"][-1] is step.loss_weights.log_vars
    before = step.loss_weights.log_vars.detach().clone()
    losses = step(_batch())
    for key in ("G_A_gan", "cycle_A", "idt_A", "edge_A", "color_B", "fm_A", "fm_B", "weight_edge",
                "vq_commit_A", "vq_perplexity_B", "gp_A", "gp_B", "D_A", "G_total"):
        assert key in losses and torch.isfinite(losses[key]), key
    assert not torch.equal(step.loss_weights.log_vars, before)


def test_gradient_penalty_flag_applies_to_any_loss(tiny_config):
    plain = build_train_step(tiny_config(), torch.device("cpu"))(_batch())
    assert "gp_A" not in plain
    with_gp = build_train_step(tiny_config(**{"loss.gradient_penalty": True}), torch.device("cpu"))(_batch())
    assert "gp_A" in with_gp and with_gp["gp_A"] > 0


def test_adaptive_weighting_needs_a_term():
    with pytest.raises(ConfigError, match="adaptive_weighting"):
        build_config(sets=["loss.adaptive_weighting=uncertainty", "loss.lambda_cyc=0", "loss.lambda_id=0"])


# ----------------------------------------------------------------------------------------------
# Warm start (a pre-trained discriminator)


def test_warm_start_copies_only_the_named_networks(tiny_config, tmp_path):
    first = train(tiny_config(**{"train.max_steps": 2}), tmp_path / "first", progress=False)
    ckpt = ckpt_io.resolve_checkpoint(first.run_dir)
    cfg = tiny_config(**{"train.seed": 7, "train.init_from": str(first.run_dir),
                         "train.init_nets": "D_A, D_B"})
    models = build_train_step(cfg, torch.device("cpu")).models
    for name, net in models.networks().items():
        saved = ckpt_io.load_weights(ckpt, name)
        same = all(torch.equal(v, saved[k]) for k, v in net.state_dict().items())
        assert same == (name in ("D_A", "D_B")), name
    # resuming never reads init_from again (its run may be gone by then)
    assert not build_train_step(cfg, torch.device("cpu"), warm_start_nets=False).models.D_A.state_dict()[
        "stages.0.0.weight"].equal(ckpt_io.load_weights(ckpt, "D_A")["stages.0.0.weight"])


def test_warm_start_refuses_a_different_architecture(tiny_config, tmp_path):
    first = train(tiny_config(**{"train.max_steps": 1}), tmp_path / "first", progress=False)
    cfg = tiny_config(**{"model.discriminator.ndf": 4, "train.init_from": str(first.run_dir)})
    with pytest.raises(CheckpointError, match="does not match"):
        build_train_step(cfg, torch.device("cpu"))
    with pytest.raises(ConfigError, match="init_nets"):
        tiny_config(**{"train.init_nets": "D_C"})


def test_init_from_flags_on_the_command_line(tiny_config, tiny_dataroot, tmp_path):
    first = train(tiny_config(**{"train.max_steps": 1}), tmp_path / "first", progress=False)
    common = ["train", "--dataroot", str(tiny_dataroot), "--preset", "tiny", "--quiet", "--max-steps", "1",
              "--set", "data.load_size=24", "--set", "data.crop_size=16", "--set", "train.tensorboard=false"]
    ok = CliRunner().invoke(main, [*common, "--out", str(tmp_path / "second"), "--init-from",
                                   str(first.run_dir), "--init-nets", "D_A,D_B"])
    assert ok.exit_code == 0, ok.output
    saved = ckpt_io.load_checkpoint_config(ckpt_io.resolve_checkpoint(tmp_path / "second"))
    assert (saved.train.init_from, saved.train.init_nets) == (str(first.run_dir), "D_A,D_B")
    bad = CliRunner().invoke(main,
                             [*common, "--out", str(tmp_path / "third"), "--init-from", str(first.run_dir),
                                    "--init-nets", "D_X"])
    assert bad.exit_code == 1 and bad.output.startswith("error: --init-nets")  # cli/flags.py maps the key
    gone = CliRunner().invoke(main, [*common, "--out", str(tmp_path / "fourth"), "--init-from",
                                     str(tmp_path / "nowhere")])
    assert gone.exit_code == 1 and "no such run or checkpoint" in gone.output
    assert not (tmp_path / "fourth").exists()  # refused before the run directory was touched


# ----------------------------------------------------------------------------------------------
# Presets


def test_new_presets_cite_public_sources_and_describe_themselves():
    presets = list_presets()
    for name in NEW_PRESETS:
        source = presets[name]["source"]
        # a public citation: authors and a year, never a document that is not in the repository
        assert presets[name]["description"] and re.search(r"[A-Z][a-z]+.*(19|20)\d\d", source), name
        text = (Path(__file__).parents[1] / "src" / "cyclegan" / "presets" / f"{name}.yaml").read_text()
        assert text.startswith("# ") and "seed 00" not in (text + source).lower(), name
        assert build_config(preset=name).preset == name


def test_presets_carry_their_documented_settings():
    att = build_config(preset="attention-cyclegan")
    assert (att.model.generator.name, att.model.discriminator.name, att.loss.gan) == ("attention", "dual",
                                                                                      "relativistic")
    opt = att.optim
    assert (att.train.batch_size, opt.lr_policy, opt.t_0, opt.t_mult, opt.eta_min) == (
        3, "cosine_restarts", 10, 2, 1e-5)
    assert (att.loss.lambda_gan, att.loss.lambda_cyc, att.loss.lambda_id, att.loss.lambda_fm) == (1, 10, 5, 5)
    assert att.loss.gradient_penalty and not att.data.flip and att.data.preprocess == "none"
    assert att.data.crop_size == 256
    sprite = build_config(preset="animal2sprite")
    assert sprite.data.crop_size == 96 and sprite.model.generator.vq_codebook_size > 0
    assert sprite.model.discriminator.n_layers == 2 and sprite.loss.adaptive_weighting == "uncertainty"
    assert sprite.loss.lambda_edge > 0 and sprite.loss.lambda_color > 0 and sprite.loss.gan == "lsgan"
    celeb = build_config(preset="celeb2cartoon64")
    assert (celeb.data.crop_size, celeb.loss.gan, celeb.loss.lambda_id, celeb.model.generator.n_blocks) == (
        64, "vanilla", 0.0, 9)
    assert celeb.loss.pool_size > 0
    for name, gen in (("photo2anime-resnet", "resnet"), ("photo2anime-unet", "unet_256")):
        cfg = build_config(preset=name)
        names = (cfg.model.generator.name, cfg.model.discriminator.name, cfg.loss.gan)
        assert names == (gen, "vanilla_cnn", "lsgan")
        assert (cfg.optim.lr, cfg.loss.lambda_cyc, cfg.optim.decay_epochs) == (1e-4, 25.0, 100)
        assert learning_rate(cfg, 100) == cfg.optim.lr > learning_rate(cfg, 101)


# Tiny widths for every preset; sizes where each architecture still has more than one pixel left.
_TINY = {"model.generator.ngf": 4, "model.generator.n_blocks": 2, "model.discriminator.ndf": 4,
         "train.max_steps": 3, "train.batch_size": 1, "train.log_every": 1, "train.tensorboard": False,
         "train.save_latest_every": 100, "data.num_workers": 0, "data.n_samples": 1}


@pytest.mark.parametrize("preset", NEW_PRESETS)
def test_each_preset_trains_and_its_checkpoint_translates(preset, tiny_dataroot, tmp_path):
    size = 256 if preset == "photo2anime-unet" else 32  # an 8-level U-Net needs 256
    sets = {**_TINY, "data.load_size": size, "data.crop_size": size, "data.dataroot": str(tiny_dataroot)}
    if preset == "photo2anime-unet":  # a U-Net has no residual blocks: n_blocks would be refused
        del sets["model.generator.n_blocks"]
    if preset == "celeb2cartoon64":  # this recipe trains on packed arrays
        for d in ("A", "B"):
            pack_folder(tiny_dataroot / f"train{d}", tmp_path / f"{d}.npz", size=size)
        sets.update({"data.dataroot": None, "data.data_a": str(tmp_path / "A.npz"),
                     "data.data_b": str(tmp_path / "B.npz")})
    if preset == "animal2sprite":  # this recipe puts domain A on white first
        remove_background(tiny_dataroot / "trainA", tmp_path / "A_white")
        sets.update({"data.dataroot": None, "data.data_a": str(tmp_path / "A_white"),
                     "data.data_b": str(tiny_dataroot / "trainB"), "model.generator.vq_codebook_size": 16,
                     "model.generator.vq_dim": 4})
    if preset == "attention-cyclegan":
        sets["train.batch_size"] = 3  # the recipe's batch size
    cfg = build_config(preset=preset, overrides=sets)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.status == "max_steps" and result.step == 3
    assert "G_total" in result.last_log and math.isfinite(result.last_log["G_total"])
    if preset == "animal2sprite":
        assert result.last_log["vq_perplexity_A"] >= 1.0
    for direction in ("a2b", "b2a"):
        net, saved = ckpt_io.load_generator(tmp_path / "run", direction=direction)
        assert saved.preset == preset
        with torch.no_grad():
            y = net(torch.rand(1, 3, size, size) * 2 - 1)
        assert y.shape == (1, 3, size, size) and torch.isfinite(y).all()
    # and the command line translates with it (inputs padded to the generator's size multiple); fp32:
    # auto would add a dynamo ONNX export per preset, whose choice test_runtime.py pins
    out = CliRunner().invoke(main, ["translate", str(tiny_dataroot / "testA"), "--checkpoint",
                                    str(tmp_path / "run"), "--out", str(tmp_path / "translated"), "--quiet",
                                    "--precision", "fp32"])
    assert out.exit_code == 0, out.output
    assert len(list((tmp_path / "translated").iterdir())) == 4


def test_fast_preset_differs_from_the_paper_only_where_its_comment_says():
    """`fast` = `cyclegan` with no identity loss and bf16 where native (the winners of
    bench/quality_race.py), and the tone loss that holds the brightness without the identity loss."""
    paper, fast = build_config(preset="cyclegan"), build_config(preset="fast")

    def flat(cfg, prefix=""):
        out = {}
        for f in dataclasses.fields(cfg):
            v = getattr(cfg, f.name)
            out.update(flat(v,
                            f"{prefix}{f.name}.") if dataclasses.is_dataclass(v)
                       else {f"{prefix}{f.name}": v})
        return out

    a, b = flat(paper), flat(fast)
    differ = {k for k in a if a[k] != b[k]} - {"preset"}
    assert differ == {"loss.lambda_id", "train.precision", "loss.lambda_tone"}, differ
    assert (b["loss.lambda_id"], b["train.precision"], b["loss.lambda_tone"]) == (0.0, "auto", 5.0)
