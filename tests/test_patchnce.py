"""PatchNCE (CUT): the loss by hand, aligned patch sampling, encoder feature taps."""

import math

import pytest
import torch

from cyclegan.config import GeneratorConfig
from cyclegan.networks import build_generator
from cyclegan.patchnce import PatchSampleMLP, nce_layer_channels, patch_nce_loss


def test_patch_nce_by_hand_positives_on_the_diagonal():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    t = 0.07
    # row 0: positive q0.k0 = 1, negative q0.k1 = 0.6; row 1: positive 0.8, negative q1.k0 = 0
    row0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(-10 / t) + math.exp(0.6 / t)))
    row1 = -math.log(math.exp(0.8 / t) / (math.exp(0.8 / t) + math.exp(0 / t) + math.exp(-10 / t)))
    assert patch_nce_loss(q, k, batch_size=1, temperature=t).item() == pytest.approx((row0 + row1) / 2,
                                                                                     rel=1e-5)


def test_negatives_come_from_the_same_image_only():
    # Two images, one patch each: no negatives but the masked diagonal -> loss ~ 0.
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert patch_nce_loss(q, q, batch_size=2).item() == pytest.approx(0.0, abs=1e-6)


def test_key_is_not_trained_through():
    q = torch.randn(6, 4, requires_grad=True)
    k = torch.randn(6, 4, requires_grad=True)
    patch_nce_loss(q, k, batch_size=2).backward()
    assert q.grad is not None and k.grad is None


def test_sampler_reuses_locations_for_source_and_translation():
    mlp = PatchSampleMLP(channels=[3, 5], nc=8)
    src = [torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)]
    emb_src, ids = mlp(src, num_patches=10)
    assert [e.shape for e in emb_src] == [(20, 8), (20, 8)]  # 2 images x 10 of 64 and of 16 places
    emb_same, ids_same = mlp(src, num_patches=10, patch_ids=ids)
    assert all(torch.equal(a, b) for a, b in zip(ids, ids_same))
    assert all(torch.allclose(a, b) for a, b in zip(emb_src, emb_same))
    assert torch.allclose(emb_src[0].norm(dim=1), torch.ones(20))


def test_resnet_nce_features_match_declared_channels():
    g = build_generator(GeneratorConfig(ngf=4, n_blocks=6))
    feats = g.nce_features(torch.rand(1, 3, 16, 16))
    assert [f.shape[1] for f in feats] == nce_layer_channels(ngf=4)
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 4, 4]
    tiny = build_generator(GeneratorConfig(ngf=4, n_blocks=2))
    assert len(tiny.nce_features(torch.rand(1, 3, 16, 16))) == 5
