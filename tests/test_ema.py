"""Generator EMA arithmetic."""

import pytest
import torch
from torch import nn

from cyclegan.ema import EMA


def test_update_is_the_exponential_average():
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.fill_(0.0)
    ema = EMA(net, decay=0.9)
    for value in (2.0, 4.0):
        with torch.no_grad():
            net.weight.fill_(value)
        ema.update(net)
    # 1 -> 0.9 * 1 + 0.1 * 2 = 1.1 -> 0.9 * 1.1 + 0.1 * 4 = 1.39
    assert ema.module.weight.flatten().tolist() == pytest.approx([1.39, 1.39])
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_buffers_are_copied_and_decay_validated():
    net = nn.BatchNorm2d(3)
    ema = EMA(net, decay=0.5)
    net.running_mean.fill_(7.0)
    ema.update(net)
    assert torch.equal(ema.module.running_mean, net.running_mean)
    with pytest.raises(ValueError):
        EMA(net, decay=1.0)
