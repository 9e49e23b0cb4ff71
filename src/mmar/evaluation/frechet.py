"""Fréchet distance between Gaussians fitted to features, for any feature extractor.

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})          (Heusel et al. 2017)

With the judge CNN's features (``mmar.evaluation.judge``) this is what the project reports as
"classifier-FID"; with :class:`InceptionFeatures` and the user's own Inception weights it is the
standard FID.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_NAME
)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    mu: (D,), sigma: (D, D) symmetric PSD. Computed in float64 with a symmetric
    eigen-decomposition instead of ``scipy.linalg.sqrtm``: S_1 S_2 is similar to the PSD matrix
    M = S_1^{1/2} S_2 S_1^{1/2}, so Tr((S_1 S_2)^{1/2}) = sum_i sqrt(lambda_i(M)). This needs no
    scipy and never produces the imaginary parts that sqrtm of the non-symmetric S_1 S_2 does.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    s1, s2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"frechet_distance: expected mu (D,) and sigma (D, D) of the same D for both sides, "
            f"got mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, sigma2 {s2.shape}"
        )
    w1, v1 = np.linalg.eigh((s1 + s1.T) / 2)
    sqrt_s1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T  # S_1^{1/2}
    m = sqrt_s1 @ ((s2 + s2.T) / 2) @ sqrt_s1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d2 = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    return float(max(d2, 0.0))  # >= 0 in exact arithmetic; clip rounding noise


def _batches(
    images_or_batches: torch.Tensor | Iterable[torch.Tensor], batch_size: int
) -> Iterable[torch.Tensor]:
    if isinstance(images_or_batches, torch.Tensor):
        yield from images_or_batches.split(batch_size)
    else:
        yield from images_or_batches


@torch.no_grad()
def feature_statistics(
    feature_fn: Callable[[torch.Tensor], torch.Tensor],
    images_or_batches: torch.Tensor | Iterable[torch.Tensor],
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), float64, of ``feature_fn`` over the images.

    images_or_batches: one (N, C, H, W) tensor (split into ``batch_size`` chunks) or an iterable
    of (B, C, H, W) batches. feature_fn: (B, C, H, W) -> (B, D).
    """
    feats = [
        feature_fn(b).float().flatten(1).cpu().double()
        for b in _batches(images_or_batches, batch_size)
    ]
    if not feats:
        raise ValueError("feature_statistics: got no images")
    f = torch.cat(feats).numpy()  # (N, D)
    if f.shape[0] < 2:
        raise ValueError(
            f"feature_statistics: need at least 2 images for a covariance, got {f.shape[0]}"
        )
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


# --------------------------------------------------------------------------------------------
# Standard FID: Inception-v3 pool3 features (2048-d) with the TF-ported "FID Inception" weights.
# Written here without torchvision (it breaks this stack, and pytorch-fid / torch-fidelity both
# pull it in); the module names match pytorch-fid's FIDInceptionV3 so its .pth loads as is.
# --------------------------------------------------------------------------------------------


class _Conv(nn.Module):
    """conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU, torchvision's BasicConv2d."""

    def __init__(
        self, cin: int, cout: int, kernel_size: Any, stride: int = 1, padding: Any = 0
    ):  # int or (h, w), as nn.Conv2d takes them
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool ignores the zero padding in its mean.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class _InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = _Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = _Conv(cin, 48, 1), _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


class _InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = _Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _Conv(cin, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class _InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        h: dict[str, Any] = {"kernel_size": (1, 7), "padding": (0, 3)}
        v: dict[str, Any] = {"kernel_size": (7, 1), "padding": (3, 0)}
        self.branch1x1 = _Conv(cin, 192, 1)
        self.branch7x7_1, self.branch7x7_2, self.branch7x7_3 = (
            _Conv(cin, c7, 1),
            _Conv(c7, c7, **h),
            _Conv(c7, 192, **v),
        )
        self.branch7x7dbl_1, self.branch7x7dbl_2 = _Conv(cin, c7, 1), _Conv(c7, c7, **v)
        self.branch7x7dbl_3, self.branch7x7dbl_4 = _Conv(c7, c7, **h), _Conv(c7, c7, **v)
        self.branch7x7dbl_5 = _Conv(c7, 192, **h)
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))], 1)


class _InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = _Conv(cin, 192, 1), _Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _Conv(cin, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1
        )


class _InceptionE(nn.Module):
    """``max_pool``: the FID network's last block pools with max instead of average (a quirk of
    the TF graph that FID is defined by)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        h: dict[str, Any] = {"kernel_size": (1, 3), "padding": (0, 1)}
        v: dict[str, Any] = {"kernel_size": (3, 1), "padding": (1, 0)}
        self.max_pool = max_pool
        self.branch1x1 = _Conv(cin, 320, 1)
        self.branch3x3_1, self.branch3x3_2a, self.branch3x3_2b = (
            _Conv(cin, 384, 1),
            _Conv(384, 384, **h),
            _Conv(384, 384, **v),
        )
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _Conv(cin, 448, 1), _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a, self.branch3x3dbl_3b = _Conv(384, 384, **h), _Conv(384, 384, **v)
        self.branch_pool = _Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool)], 1)


def default_inception_weights_path() -> Path:
    """``$XDG_CACHE_HOME/mmar/inception/pt_inception-2015-12-05-6726825d.pth`` (XDG_CACHE_HOME:
    ~/.cache if unset)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "mmar" / "inception" / FID_WEIGHTS_NAME


class FIDInceptionV3(nn.Module):
    """TF FID's Inception-v3 up to pool3: (B, 3, 299, 299) in [-1, 1] -> (B, 2048).

    Parameter names are torchvision's / pytorch-fid's, so pytorch-fid's weight file loads as is.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = (
            _InceptionA(192, 32),
            _InceptionA(256, 64),
            _InceptionA(288, 64),
        )
        self.Mixed_6a = _InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = _InceptionC(768, 128), _InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = _InceptionC(768, 160), _InceptionC(768, 192)
        self.Mixed_7a = _InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = (
            _InceptionE(1280, max_pool=False),
            _InceptionE(2048, max_pool=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)  # (B, 192, 35, 35)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)  # -> (B, 2048, 8, 8)
        return x.mean((2, 3))  # (B, 2048)


class InceptionFeatures(nn.Module):
    """Standard-FID feature extractor: images (B, C, H, W) in [-1, 1] -> pool3 features (B, 2048).

    The Inception-v3 network of TensorFlow's FID is implemented in this file (no torchvision, no
    pytorch-fid needed); its weights are pytorch-fid's port, ``pt_inception-2015-12-05-*.pth``
    (loaded with ``weights_only=True``), which mmar does not ship. Inputs are resized bilinearly
    to 299 x 299 and grey images are repeated to 3 channels, as pytorch-fid does.
    """

    def __init__(self, weights_path: str | Path | None = None):
        super().__init__()
        path = Path(weights_path) if weights_path is not None else default_inception_weights_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"standard FID needs the Inception-v3 FID weights, which are not shipped with mmar "
                f"(no file at {path}). Download {FID_WEIGHTS_URL} on a machine with network and "
                f"pass its path (InceptionFeatures(weights_path=...), "
                f"`mmar eval --inception-weights FILE`) or put it at "
                f"{default_inception_weights_path()}. Without them, use the judge's classifier-FID."
            )
        self.net = FIDInceptionV3()
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {
            k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))
        }  # unused heads
        missing, unexpected = self.net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: not the pytorch-fid Inception weights ({FID_WEIGHTS_NAME}); "
                f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
            )
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"InceptionFeatures: expected (B, 1 or 3, H, W) images, got {tuple(images.shape)}"
            )
        x = images.float().expand(-1, 3, -1, -1)  # (B, 3, H, W) in [-1, 1]
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x)  # (B, 2048)
