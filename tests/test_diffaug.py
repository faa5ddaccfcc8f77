"""DiffAugment: shared random transforms, gradients reach the generator, each policy does its job."""

import pytest
import torch

from cyclegan.diffaug import POLICIES, diff_augment, parse_policy


def test_parse_policy():
    assert parse_policy("color, translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy("") == ()
    with pytest.raises(ValueError, match="unknown DiffAugment policy 'blur'"):
        parse_policy("color,blur")


@pytest.mark.parametrize("policy", [[p] for p in POLICIES] + [list(POLICIES)])
def test_same_transform_for_the_pair_and_shapes_kept(policy):
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    a, b = diff_augment(x, x.clone(), policy=policy)
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)  # something happened


def test_gradients_flow_to_the_generator():
    g = torch.nn.Conv2d(3, 3, 3, padding=1)
    z = torch.rand(2, 3, 16, 16)
    out = diff_augment(torch.tanh(g(z)), policy=POLICIES)
    out.square().mean().backward()
    assert g.weight.grad is not None and g.weight.grad.abs().sum() > 0


def test_translation_shifts_content_and_fills_zeros():
    torch.manual_seed(3)
    x = torch.ones(8, 1, 16, 16)
    y = diff_augment(x, policy=["translation"])
    # each sample is a shifted all-ones image: some rows/cols of zeros at most 2 pixels (16 / 8) deep
    for img in y[:, 0]:
        ones = img.nonzero()
        assert img.sum() >= 14 * 14 and set(img.unique().tolist()) <= {0.0, 1.0}
        assert ones[:, 0].max() - ones[:, 0].min() + 1 >= 14


def test_cutout_zeroes_at_most_a_half_size_square():
    torch.manual_seed(1)
    y = diff_augment(torch.ones(16, 1, 16, 16), policy=["cutout"])
    zeros = (y == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 8 * 8).all()


def test_color_is_per_sample_and_keeps_structure():
    torch.manual_seed(2)
    x = torch.rand(1, 3, 8, 8).repeat(6, 1, 1, 1)
    y = diff_augment(x, policy=["color"])
    assert len({round(v, 5) for v in y.mean(dim=(1, 2, 3)).tolist()}) == 6  # different draws per sample
