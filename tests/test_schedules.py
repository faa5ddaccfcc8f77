"""cyclegan.schedules: the learning-rate policies and the batch-size scaling rules."""

import pytest

from cyclegan.config import build_config
from cyclegan.schedules import learning_rate


def _lr(policy: str, epoch: int, **optim) -> float:
    sets = [f"optim.lr_policy={policy}", "train.epochs=200"] + [f"optim.{k}={v}" for k, v in optim.items()]
    return learning_rate(build_config(sets=sets), epoch) / 2e-4


def test_linear_policy_is_the_papers_100_plus_100():
    assert _lr("linear", 1) == 1.0
    assert _lr("linear", 100) == 1.0
    assert _lr("linear", 101) == pytest.approx(1 - 1 / 101)
    assert _lr("linear", 200) == pytest.approx(1 / 101)
    # unset decay_epochs = half of train.epochs, explicit value respected
    assert _lr("linear", 151, decay_epochs=50) == pytest.approx(1 - 1 / 51)


def test_other_policies():
    assert _lr("constant", 173) == 1.0
    assert _lr("cosine", 1) == pytest.approx(1.0)
    assert _lr("cosine", 101) == pytest.approx(0.5)
    assert _lr("step", 50, step_epochs=50, step_gamma=0.1) == pytest.approx(1.0)
    assert _lr("step", 51, step_epochs=50, step_gamma=0.1) == pytest.approx(0.1)
    assert _lr("step", 101, step_epochs=50, step_gamma=0.1) == pytest.approx(0.01)


def test_lr_scaling_with_global_batch():
    cfg = build_config(sets=["optim.lr_policy=constant", "train.batch_size=4", "optim.lr_scaling=sqrt"])
    assert learning_rate(cfg, 1) == pytest.approx(2e-4 * 2)
    assert learning_rate(cfg, 1, world_size=4) == pytest.approx(2e-4 * 4)
    cfg = build_config(sets=["optim.lr_policy=constant", "train.batch_size=4", "optim.lr_scaling=linear"])
    assert learning_rate(cfg, 1, world_size=2) == pytest.approx(2e-4 * 8)
    assert learning_rate(build_config(sets=["train.batch_size=8"]), 1) == pytest.approx(2e-4)
