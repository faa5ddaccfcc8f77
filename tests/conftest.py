"""Shared fixtures: tiny datasets drawn by the project itself, never downloaded."""

from __future__ import annotations

import pytest
import torch

from cyclegan.config import build_config
from cyclegan.synthetic import make_unpaired_dataset

# Tests use toy tensors, where intra-op threads cost more in synchronisation than they save, and
# on a shared 2-core machine a spinning second thread can slow a step down tenfold.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """ONNX models converted by translate --precision auto go to a temporary cache, never ~/.cache;
    and no test reaches the network (download tests lift this for their 127.0.0.1 server)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("CYCLEGAN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("CYCLEGAN_OFFLINE", "1")
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_dataroot(tmp_path_factory):
    """trainA/trainB/testA/testB with 12/12/4/4 images of 32x32."""
    return make_unpaired_dataset(tmp_path_factory.mktemp("data"), n_train=12, n_test=4, size=32, seed=0)


@pytest.fixture
def tiny_config(tiny_dataroot):
    def make(**overrides):
        base = {
            "data.dataroot": str(tiny_dataroot),
            "data.load_size": 24,
            "data.crop_size": 16,
            "data.n_samples": 2,
            "train.tensorboard": False,
            "train.log_every": 2,
        }
        base.update(overrides)
        return build_config(preset="tiny", overrides=base)

    return make


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    """make(seed) -> a run folder whose checkpoints/latest holds the tiny recipe, randomly initialised."""
    import torch as _torch

    from cyclegan.checkpoint import save_checkpoint
    from cyclegan.training import build_models

    def make(seed: int):
        run = tmp_path_factory.mktemp("run")
        cfg = build_config(preset="tiny", overrides={"train.device": "cpu", "train.seed": seed})
        models = build_models(cfg, _torch.device("cpu"))
        save_checkpoint(run / "checkpoints" / "latest", config=cfg, networks=models.networks())
        return run

    return make
