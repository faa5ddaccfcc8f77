"""Image history pool (CycleGAN paper sec. 4): fill, then swap with probability 1/2."""

import torch

from cyclegan.pool import ImagePool


def _batch(value: float, n: int = 1) -> torch.Tensor:
    return torch.full((n, 3, 2, 2), value)


def test_size_zero_returns_input_unchanged():
    pool = ImagePool(size=0)
    x = torch.randn(2, 3, 2, 2)
    assert pool.query(x) is x


def test_returns_new_images_while_filling():
    pool = ImagePool(size=3, seed=0)
    for v in range(3):
        assert torch.equal(pool.query(_batch(v)), _batch(v))
    assert len(pool.images) == 3


def test_after_filling_mixes_history_and_keeps_size():
    pool = ImagePool(size=4, seed=0)
    for v in range(4):
        pool.query(_batch(v))
    returned = [pool.query(_batch(100 + i))[0, 0, 0, 0].item() for i in range(200)]
    from_history = sum(r != 100 + i for i, r in enumerate(returned))
    # Each query returns a stored image with probability 1/2: 200 draws, expect ~100.
    assert 60 < from_history < 140
    assert len(pool.images) == 4
    # Whatever was swapped out was replaced by the image that came in.
    stored = {img[0, 0, 0].item() for img in pool.images}
    assert any(s >= 100 for s in stored)


def test_batch_shape_preserved_and_input_not_aliased():
    pool = ImagePool(size=2, seed=0)
    x = torch.randn(5, 3, 2, 2)
    y = pool.query(x)
    assert y.shape == x.shape
    x.add_(1.0)  # the pool keeps copies, not views of the caller's tensor
    assert not torch.equal(pool.images[0], x[0])


def test_state_dict_round_trip_continues_identically():
    a = ImagePool(size=3, seed=5)
    for v in range(6):
        a.query(_batch(v))
    b = ImagePool(size=3, seed=99)
    b.load_state_dict(a.state_dict())
    for v in range(10, 30):
        assert torch.equal(a.query(_batch(v)), b.query(_batch(v)))


def test_pool_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    pool = ImagePool(size=1, seed=0)
    for v in range(10):
        pool.query(_batch(v))
    assert torch.equal(torch.rand(1), expected)


def test_channels_last_layout_is_kept():
    pool = ImagePool(size=2, seed=0)
    x = torch.randn(3, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        assert pool.query(x).is_contiguous(memory_format=torch.channels_last)
