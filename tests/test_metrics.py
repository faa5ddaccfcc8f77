"""Metric math against independent references: scipy for FID, direct double sums for KID, worked
FID / IS / GMS examples for GMS, closed forms for IS / PSNR / SSIM, and spectra of images with known
frequency content."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from local_server import serve
from PIL import Image, ImageFilter
from torch import nn

from cyclegan.errors import InceptionUnavailableError
from cyclegan.metrics import (
    RandomFeatureExtractor,
    average_gms,
    cycle_l1,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    gms,
    high_frequency_ratio,
    inception_score,
    kernel_inception_distance,
    log_magnitude_spectrum,
    mean_radial_power_spectrum,
    mmd2_unbiased,
    polynomial_kernel,
    psnr,
    radial_power_spectrum,
    ssim,
)
from cyclegan.metrics import inception as inception_mod
from cyclegan.metrics.fourier import ring_centres
from cyclegan.metrics.generate import translate_uint8
from cyclegan.synthetic import make_scene

scipy_linalg = pytest.importorskip("scipy.linalg")


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


# ------------------------------------------------------------------------------------------- FID


def _fid_reference(mu1, s1, mu2, s2) -> float:
    covmean = scipy_linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


@pytest.mark.parametrize("d", [1, 3, 16])
def test_frechet_distance_matches_scipy_sqrtm_reference(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_fid_reference(mu1, s1, mu2, s2), rel=1e-8)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    # For diagonal covariances the distance is sum (m1 - m2)^2 + (sqrt(v1) - sqrt(v2))^2.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # scipy's sqrtm(disp=...) inside pytorch-fid
def test_frechet_distance_agrees_with_pytorch_fid():
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    rng = np.random.default_rng(7)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    s1, s2 = _random_spd(rng, 10), _random_spd(rng, 10)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(fid_score.calculate_frechet_distance(mu1, s1, mu2, s2), rel=1e-6)


def test_fid_from_samples_of_known_gaussians_and_singular_covariances():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, size=(4000, 4))
    b = rng.normal(1.0, 2.0, size=(4000, 4))
    # N(0, I) vs N(1, 4I) in 4-D: 4 * 1^2 + 4 * (1 - 2)^2 = 8.
    assert fid_from_features(a, b) == pytest.approx(8.0, rel=0.05)
    mu, sigma = feature_statistics(a)
    assert mu.shape == (4,) and sigma.shape == (4, 4)
    # Fewer samples than dimensions (every CycleGAN test split): singular, yet finite and symmetric.
    x, y = rng.normal(size=(10, 64)), rng.normal(size=(12, 64)) + 0.5
    f_xy, f_yx = fid_from_features(x, y), fid_from_features(y, x)
    assert math.isfinite(f_xy) and f_xy > 0 and f_xy == pytest.approx(f_yx, rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


# ------------------------------------------------------------------------------------------- KID


def _mmd2_direct(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 by explicit double sums (Binkowski et al. 2018, eq. 2), cubic kernel."""
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_and_kid_match_direct_unbiased_computation():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 5)), rng.normal(0.3, 1.2, size=(11, 5))
    direct = _mmd2_direct(x, y)
    assert mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y),
                         polynomial_kernel(x, y)) == pytest.approx(
        direct, rel=1e-10
    )
    # With equal set sizes and a subset as large as the sets, each subset is a permutation of them.
    x2, y2 = x[:9], y[:9]
    mean, std, used = kernel_inception_distance(x2, y2, n_subsets=3, subset_size=100)
    assert used == 9
    assert mean == pytest.approx(_mmd2_direct(x2, y2), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    same, _, _ = kernel_inception_distance(a, b, n_subsets=20, subset_size=100)
    shifted, std, used = kernel_inception_distance(a, b + 1.0, n_subsets=20, subset_size=100)
    assert abs(same) < 0.05 < shifted
    assert used == 100 and std > 0


# -------------------------------------------------------------------------------------------- IS


def test_inception_score_closed_forms():
    n, c = 100, 10
    assert inception_score(np.zeros((n, c)))[:2] == pytest.approx((1.0, 0.0))  # no information: 1
    confident = np.full((n, c), -50.0)
    confident[np.arange(n), np.arange(n) % c] = 50.0  # sure of one class each, classes balanced
    mean, std, splits = inception_score(confident, splits=10)
    assert mean == pytest.approx(c, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6) and splits == 10
    assert inception_score(confident[:3], splits=10)[2] == 3  # fewer images than splits


# ------------------------------------------------------------------------------------------- GMS


def test_gms_is_sqrt_fid_over_is_to_five_decimals():
    raw_to_cartoon = gms(fid=46.70193, inception_score=2.41466)
    cartoon_to_raw = gms(fid=39.83461, inception_score=3.62382)
    # Reported GMS values are truncated to 5 decimals (4.3978399... is 4.39783), hence the 1e-5 tolerance.
    assert raw_to_cartoon == pytest.approx(4.39783, abs=1e-5)
    assert math.sqrt(46.70193 / 2.41466) == pytest.approx(4.3978, abs=5e-5)  # 4 decimals
    assert cartoon_to_raw == pytest.approx(3.31548, abs=1e-5)
    assert average_gms([raw_to_cartoon, cartoon_to_raw]) == pytest.approx(3.85666, abs=1e-5)
    with pytest.raises(ValueError):
        gms(fid=1.0, inception_score=0.0)


# -------------------------------------------------------------------------------- reconstruction


def _images(seed: int, n: int = 3, size: int = 24) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.stack([torch.from_numpy(make_scene(rng, size, "photo")).permute(2, 0, 1) for _ in range(n)])


def test_psnr_and_cycle_l1_closed_forms():
    x = _images(0)
    y = (x.int() + 10).clamp(max=255).to(torch.uint8)
    y[x > 245] = x[x > 245] - 10  # keep |x - y| == 10 everywhere
    assert torch.allclose(cycle_l1(x, y), torch.full((3,), 10 / 127.5, dtype=torch.float64))
    assert torch.allclose(psnr(x, y), torch.full((3,), 10 * math.log10(255**2 / 100), dtype=torch.float64))
    assert torch.isinf(psnr(x, x)).all()
    with pytest.raises(TypeError):
        psnr(x.float(), y)


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 for one [H, W] channel with scipy's 'valid' convolution."""
    from scipy.signal import convolve2d

    coords = np.arange(11) - 5.0
    g = np.exp(-(coords**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()

    def f(a):
        return convolve2d(a, w, mode="valid")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = f(x), f(y)
    vx, vy, cov = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    return float((((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


def test_ssim_matches_reference_and_orders_degradations():
    x = _images(1, n=2, size=32)
    noise = torch.from_numpy(np.random.default_rng(3).normal(0, 20, size=x.shape))
    y = (x.double() + noise).round().clamp(0, 255).to(torch.uint8)
    ours = ssim(x, y)
    xs, ys = x.double().numpy(), y.double().numpy()
    ref = [np.mean([_ssim_reference(xs[i, c], ys[i, c]) for c in range(3)]) for i in range(2)]
    assert ours.numpy() == pytest.approx(ref, rel=1e-9)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    worse = (x.double() + 3 * noise).round().clamp(0, 255).to(torch.uint8)
    assert (ssim(x, worse) < ours).all()
    assert ssim(x[:, :, :7, :7], y[:, :, :7, :7]).shape == (2,)  # smaller than the window


# -------------------------------------------------------------------------------------- Fourier


def _cosine(size: int, freq: float) -> np.ndarray:
    xx = np.arange(size)[None, :].repeat(size, axis=0)
    return 128 + 100 * np.cos(2 * np.pi * freq * xx)


def test_fourier_shapes_and_known_spectra():
    img = torch.from_numpy(make_scene(np.random.default_rng(0), 48, "photo")).permute(2, 0, 1)  # [3, 48, 48]
    spec = log_magnitude_spectrum(img)
    assert spec.shape == (48, 48)
    gray = img.double().numpy().transpose(1, 2, 0) @ np.array([0.299, 0.587, 0.114])
    assert spec[24, 24] == pytest.approx(np.log1p(gray.sum() / 48))  # DC at the centre, 1/sqrt(MN) norm
    freqs, power = radial_power_spectrum(img)
    assert freqs.shape == power.shape == (24,)
    assert np.allclose(freqs, ring_centres(24)) and freqs[-1] == 0.5

    # A pure cosine puts all its energy in one ring: above or below the cutoff as its frequency says.
    assert high_frequency_ratio(_cosine(64, 0.375)) == pytest.approx(1.0, abs=1e-9)
    assert high_frequency_ratio(_cosine(64, 0.125)) == pytest.approx(0.0, abs=1e-9)
    f, p = radial_power_spectrum(_cosine(64, 0.125))
    assert f[np.nanargmax(p)] == pytest.approx(0.125)
    # Parseval with the orthonormal FFT: white noise of variance s^2 has ring powers ~ s^2.
    noise = np.random.default_rng(1).normal(0, 3.0, size=(128, 128))
    _, p = radial_power_spectrum(noise, n_bins=8)
    assert np.allclose(p, 9.0, rtol=0.15)
    assert high_frequency_ratio(np.full((16, 16), 7.0)) == 0.0


def test_blurred_image_has_lower_high_frequency_ratio():
    arr = make_scene(np.random.default_rng(4), 64, "photo")
    blurred = np.asarray(Image.fromarray(arr).filter(ImageFilter.GaussianBlur(2)))
    assert high_frequency_ratio(blurred) < 0.7 * high_frequency_ratio(arr)
    freqs, mean, n = mean_radial_power_spectrum([arr, blurred, arr[:40, :50]], n_bins=16)
    assert freqs.shape == mean.shape == (16,) and n == 3 and np.isfinite(mean).all()


# ---------------------------------------------------------------------------- feature networks


def test_random_feature_extractor_interface():
    ext = RandomFeatureExtractor(dims=16, num_classes=5, seed=3)
    x = _images(2, n=4)
    a, b = ext(x), RandomFeatureExtractor(dims=16, num_classes=5, seed=3)(x)
    assert a.pool.shape == (4, 16) and a.logits.shape == (4, 5) and a.pool.dtype == np.float64
    assert np.array_equal(a.pool, b.pool)  # same seed, same network
    assert isinstance(ext, inception_mod.FeatureExtractor)
    with pytest.raises(TypeError, match="uint8"):
        ext(x.float())


def test_missing_inception_weights_name_the_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # so get_dir() re-reads TORCH_HOME
    expected = tmp_path / "th" / "hub" / "checkpoints" / inception_mod.FID_WEIGHTS_FILENAME
    assert inception_mod.default_weights_path() == expected
    with pytest.raises(InceptionUnavailableError) as err:
        inception_mod.InceptionFeatureExtractor()
    message = str(err.value)
    assert str(expected) in message and "--inception-weights" in message and "\n" not in message
    with pytest.raises(InceptionUnavailableError, match="nope.pth: not found"):
        inception_mod.InceptionFeatureExtractor(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(InceptionUnavailableError, match="unreadable"):
        inception_mod.InceptionFeatureExtractor(bad)


def test_inception_extractor_loads_local_weights_without_network(tmp_path, monkeypatch):
    """A state dict with the FID Inception's keys and shapes (random values) goes through the real
    loading path: pytorch-fid's architecture, strict loading, pool3 features and 1008 logits."""
    pytest.importorskip("pytorch_fid")
    import torchvision
    from pytorch_fid import inception as fid_inception

    def no_network(*args, **kwargs):
        raise AssertionError("attempted a download")

    monkeypatch.setattr(fid_inception, "load_state_dict_from_url", no_network)
    net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                          init_weights=False)
    path = tmp_path / inception_mod.FID_WEIGHTS_FILENAME
    torch.save(net.state_dict(), path)
    ext = inception_mod.InceptionFeatureExtractor(path, batch_size=2)
    assert fid_inception.load_state_dict_from_url is no_network  # restored after building
    feats = ext(_images(5, n=2, size=32))
    assert feats.pool.shape == (2, 2048) and feats.logits.shape == (2, 1008)
    assert np.isfinite(feats.pool).all()
    info = ext.provenance()
    assert info["weights"] == str(path) and info["weights_match_filename"] is False



# Inception weights on first use: fetched from a local server standing in for pytorch-fid's release.
WEIGHTS = b"fid inception stand-in " * 500
WEIGHTS_NAME = f"pt_inception-test-{hashlib.sha256(WEIGHTS).hexdigest()[:8]}.pth"


@pytest.fixture
def hub_and_release(tmp_path, monkeypatch):
    """An empty torch hub cache, and FID_WEIGHTS_URL pointing at a 127.0.0.1 server holding WEIGHTS."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.delenv("CYCLEGAN_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with serve({"/" + WEIGHTS_NAME: WEIGHTS, "/pt_inception-bad-0badc0de.pth": WEIGHTS}) as srv:
        monkeypatch.setattr(inception_mod, "FID_WEIGHTS_URL", f"{srv.url}/{WEIGHTS_NAME}")
        monkeypatch.setattr(inception_mod, "FID_WEIGHTS_FILENAME", WEIGHTS_NAME)
        yield srv, tmp_path / "th" / "hub" / "checkpoints"


def test_inception_weights_are_downloaded_once_into_the_hub_cache(hub_and_release):
    srv, hub = hub_and_release
    path = inception_mod.find_inception_weights()
    assert path == hub / WEIGHTS_NAME and path.read_bytes() == WEIGHTS
    assert sorted(p.name for p in hub.iterdir()) == [WEIGHTS_NAME]  # moved into place, no .part
    assert inception_mod.find_inception_weights() == path and len(srv.requests) == 1  # cached
    with pytest.raises(InceptionUnavailableError, match="nope.pth: not found"):
        inception_mod.find_inception_weights(hub / "nope.pth")  # an explicit path is never downloaded
    assert len(srv.requests) == 1


def test_inception_download_checks_the_hash_in_the_file_name(hub_and_release):
    srv, hub = hub_and_release
    with pytest.raises(InceptionUnavailableError) as err:
        inception_mod.download_inception_weights(url=f"{srv.url}/pt_inception-bad-0badc0de.pth")
    message = str(err.value)
    assert "does not start with 0badc0de" in message and "\n" not in message
    assert not hub.exists() or list(hub.iterdir()) == []  # nothing cached


@pytest.mark.parametrize("var", ["CYCLEGAN_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_mode_forbids_the_inception_download(hub_and_release, monkeypatch, var):
    srv, hub = hub_and_release
    monkeypatch.setenv(var, "1")
    with pytest.raises(InceptionUnavailableError) as err:
        inception_mod.InceptionFeatureExtractor()
    message = str(err.value)
    assert f"{var}=1" in message and inception_mod.FID_WEIGHTS_URL in message
    assert str(hub / WEIGHTS_NAME) in message and "--inception-weights" in message and "\n" not in message
    assert srv.requests == []


def test_cli_evaluate_offline_refuses_the_download(hub_and_release, random_run, tiny_dataroot, tmp_path,
                                                    monkeypatch):
    from click.testing import CliRunner

    from cyclegan.cli import main

    srv, hub = hub_and_release
    monkeypatch.setenv("CYCLEGAN_OFFLINE", "0")  # restored after the test: the CLI sets it to 1
    out = tmp_path / "e.json"
    try:
        runner = CliRunner(mix_stderr=False)  # click 8.1; 8.2+ always separates the streams
    except TypeError:
        runner = CliRunner()
    res = runner.invoke(main,
                        ["evaluate", "--checkpoint", str(random_run(0)), "--dataroot", str(tiny_dataroot),
                                    "--out", str(out), "--device", "cpu", "--max-images", "2", "--offline"])
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.exit_code == 1 and len(errors) == 1, res.output
    assert "CYCLEGAN_OFFLINE=1 forbids downloading" in errors[0] and str(hub / WEIGHTS_NAME) in errors[0]
    assert srv.requests == [] and "cycle_l1" in out.read_text()

def test_translate_uint8_pads_odd_sizes_and_restores_mode():
    class Shift(nn.Module):
        size_multiple = 4

        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0
            return x + self.bias

    g = Shift().train()
    x = _images(6, n=2, size=30)[:, :, :, :27]  # [2, 3, 30, 27]
    y = translate_uint8(g, x, batch_size=1)
    assert y.shape == x.shape and y.dtype == torch.uint8 and torch.equal(y, x)
    assert g.training
    tiny = torch.randint(0, 256, (1, 3, 2, 3), dtype=torch.uint8)  # pad 2 >= side 2: replicate instead
    assert translate_uint8(g, tiny).shape == tiny.shape
