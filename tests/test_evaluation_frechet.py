"""Fréchet distance closed forms, feature statistics, and the Inception adapter's errors."""

import numpy as np
import pytest
import torch

from mmar.evaluation.frechet import (
    FID_WEIGHTS_NAME,
    InceptionFeatures,
    feature_statistics,
    frechet_distance,
)


def _random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_identical_statistics_give_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal(16), _random_spd(rng, 16)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-6


def test_one_dimensional_gaussians():
    # d^2 = (mu1 - mu2)^2 + (s1 - s2)^2 for N(mu1, s1^2), N(mu2, s2^2)
    for mu1, s1, mu2, s2 in [(0.0, 1.0, 3.0, 2.0), (-1.5, 0.3, 0.5, 4.0), (2.0, 1.0, 2.0, 1.0)]:
        d2 = frechet_distance([mu1], [[s1**2]], [mu2], [[s2**2]])
        assert d2 == pytest.approx((mu1 - mu2) ** 2 + (s1 - s2) ** 2, abs=1e-9)


def test_diagonal_covariances():
    # d^2 = ||mu1 - mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    a, b = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_symmetric_non_negative_and_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    for d in (2, 5, 32):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
        d12, d21 = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
        assert d12 >= 0 and d12 == pytest.approx(d21, rel=1e-9)
        covmean = linalg.sqrtm(s1 @ s2).real
        ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
        assert d12 == pytest.approx(ref, rel=1e-7)


def test_singular_covariances_are_non_negative():
    # rank-deficient covariances (fewer samples than dims) must not give negative or NaN distances
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((5, 20)), rng.standard_normal((5, 20))
    d = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert np.isfinite(d) and d >= 0


def test_frechet_distance_raises_on_shape_mismatch():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_statistics_matches_numpy():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(37, 2, 3, 3, generator=g)
    w = torch.randn(18, 5, generator=g)

    def feature_fn(x):
        return x.flatten(1) @ w  # (B, 5)

    mu, sigma = feature_statistics(feature_fn, images, batch_size=8)
    f = (images.flatten(1) @ w).double().numpy()
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-5, atol=1e-6)
    # an iterable of batches gives the same statistics
    mu2, sigma2 = feature_statistics(feature_fn, list(images.split(10)))
    np.testing.assert_allclose(mu2, mu, atol=1e-12)
    np.testing.assert_allclose(sigma2, sigma, atol=1e-12)


def test_feature_statistics_raises_on_one_image():
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(lambda x: x.flatten(1), torch.zeros(1, 1, 2, 2))


def test_inception_without_weights_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Inception-v3 FID weights.*not shipped") as e:
        InceptionFeatures()
    assert FID_WEIGHTS_NAME in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(FileNotFoundError, match="weights"):
        InceptionFeatures(tmp_path / "missing.pth")


def test_inception_rejects_wrong_weights_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not the pytorch-fid Inception weights"):
        InceptionFeatures(path)


def test_inception_loads_pytorch_fid_layout_and_gives_2048_features(tmp_path):
    from mmar.evaluation.frechet import FIDInceptionV3

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = FIDInceptionV3().state_dict()
    n_params = sum(
        v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k
    )
    # torchvision's inception_v3: 27,161,264 parameters, minus AuxLogits (3,326,696) and fc
    # (2,049,000)
    assert n_params == 27_161_264 - 3_326_696 - 2_049_000
    state["fc.weight"], state["fc.bias"] = (
        torch.zeros(1008, 2048),
        torch.zeros(1008),
    )  # as in the file
    path = tmp_path / FID_WEIGHTS_NAME
    torch.save(state, path)
    net = InceptionFeatures(path)
    grey = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    f = net(grey)
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    torch.testing.assert_close(f, net(grey.expand(-1, 3, -1, -1)))  # grey == repeated RGB
