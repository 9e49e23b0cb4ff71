"""KL-16: the LDM AutoencoderKL that MAR uses as its image tokenizer, loading MAR's kl16.ckpt.

Architecture (MAR's models/vae.py, from latent-diffusion): encoder and decoder of ResNet blocks
with GroupNorm(32) + swish, ch = 128, ch_mult = (1, 1, 2, 2, 4) (so stride 2^4 = 16), 2 res blocks
per level (3 in the decoder), self-attention at resolution 16 in the encoder (only the middle
block attends in the decoder), double_z: the encoder predicts mean and log-variance of 16
channels, 1x1 quant_conv / post_quant_conv around the latent.

    images (B, 3, H, W) -> encoder -> quant_conv -> (mean, logvar) (B, 16, H/16, W/16) each
    z = mean (mode) or mean + exp(logvar / 2) * eps (sample);   latents = KL16_SCALE * z

Written here (no LDM/MAR dependency exists on PyPI) with the same module names as MAR's file so
that its state dict loads strictly, key for key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmar.tokenizers.base import ImageTokenizer

KL16_SCALE = 0.2325  # MAR's vae_embed_dim=16 latent scale: makes the latents ~unit variance
TRAINING_ONLY_PREFIXES = ("loss.",)  # LDM loss modules stored beside the autoencoder
KL16_EMBED_DIM = 16
KL16_CH_MULT = (1, 1, 2, 2, 4)
KL16_STRIDE = 2 ** (len(KL16_CH_MULT) - 1)
KL16_WIDTH = 128  # ch of the released model
KL16_RESOLUTION = 256  # the resolution the layout is defined at (where attention goes)
_LOGVAR_RANGE = (-30.0, 20.0)  # LDM clamps the log-variance to keep exp() finite


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """x + conv(swish(norm(conv(swish(norm(x)))))), with a 1x1 shortcut when widths differ."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))  # dropout is 0 in the released model
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w cells: x + proj(softmax(q k^T / sqrt(C)) v),
    q, k, v, proj 1x1 convs."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)

        def cells(t: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, 1, h*w, C)
            return t.reshape(b, 1, c, h * w).transpose(2, 3)

        out = F.scaled_dot_product_attention(cells(self.q(y)), cells(self.k(y)), cells(self.v(y)))
        out = out.transpose(2, 3).reshape(b, c, h, w)  # (B, C, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv with LDM's asymmetric (right/bottom) zero padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2 upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: res blocks (each followed by attention where the layout has it),
    then an optional resampler. Attribute names match MAR's: block, attn, down/upsample."""

    def __init__(self, widths: list[tuple[int, int]], attention: bool, resample: str | None):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(i, o) for i, o in widths)
        self.attn = nn.ModuleList(AttnBlock(o) for _, o in widths) if attention else nn.ModuleList()
        out = widths[-1][1]
        if resample == "down":
            self.downsample = Downsample(out)
        elif resample == "up":
            self.upsample = Upsample(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


class _Mid(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """(B, 3, H, W) -> (B, 2 * z_channels, H / 2^(L-1), W / 2^(L-1)): moments (mean, logvar)."""

    def __init__(
        self,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        attn_resolutions: tuple[int, ...] = (16,),
        resolution: int = KL16_RESOLUTION,
        in_channels: int = 3,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        levels, block_in, res = [], ch, resolution
        for i, mult in enumerate(ch_mult):
            out = ch * mult
            widths = [(block_in if j == 0 else out, out) for j in range(num_res_blocks)]
            last = i == len(ch_mult) - 1
            levels.append(_Level(widths, res in attn_resolutions, None if last else "down"))
            block_in, res = out, res if last else res // 2
        self.down = nn.ModuleList(levels)
        self.mid = _Mid(block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels, 3, padding=1)  # double_z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, 3, h * 2^(L-1), w * 2^(L-1)); no attention outside the middle
    (MAR builds its decoder with attn_resolutions=())."""

    def __init__(
        self,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        out_channels: int = 3,
    ):
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in)
        levels: list[
            nn.Module
        ] = []  # built from the lowest resolution up, stored by level index like MAR
        for i in reversed(range(len(ch_mult))):
            out = ch * ch_mult[i]
            widths = [(block_in if j == 0 else out, out) for j in range(num_res_blocks + 1)]
            levels.insert(0, _Level(widths, False, "up" if i != 0 else None))
            block_in = out
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


@torch.no_grad()
def _init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default init of every conv (weight and bias ~ U(+-1 / sqrt(fan_in)), what
    kaiming_uniform_(a=sqrt(5)) gives) and GroupNorm (1, 0), drawn from ``generator`` in module
    order."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            bound = 1.0 / math.sqrt(m.weight[0].numel())  # fan_in = C_in / groups * k * k
            m.weight.uniform_(-bound, bound, generator=generator)
            if m.bias is not None:
                m.bias.uniform_(-bound, bound, generator=generator)
        elif isinstance(m, nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _head(items: list[str], n: int = 5) -> str:
    """The first n items and the count, for error messages that stay readable."""
    return f"{items[:n]}{' ...' if len(items) > n else ''} ({len(items)})"


class KL16Tokenizer(ImageTokenizer):
    """MAR's KL-16 VAE as an ImageTokenizer: 3-channel images, stride 16, 16 latent channels.

    path: MAR's kl16.ckpt ({"model": state_dict} or a bare state dict), loaded strictly;
    None = random init (tests), drawn from a generator seeded by ``seed``: the same weights in
    every process, whatever its global RNG (the trainer must decode with the VAE a latent cache
    was encoded with). `_width` narrows the network for fast tests only; the released model is
    the default.
    """

    def __init__(
        self,
        path: str | None = None,
        image_size: int = 256,
        scale: float | None = None,
        posterior: Literal["sample", "mode"] = "mode",
        seed: int = 0,
        _width: int = KL16_WIDTH,
    ):
        super().__init__(3, image_size, KL16_SCALE if scale is None else scale, 0.0, posterior)
        # Built on the meta device (no torch-global init of 66M parameters), then either the
        # strict load assigns every tensor, or the seeded init fills them. Under a meta default
        # device (MMARProcessor.from_pretrained assigns stored weights afterwards) both are left.
        with torch.device("meta"):
            self.encoder = Encoder(_width, KL16_CH_MULT, 2, KL16_EMBED_DIM)
            self.decoder = Decoder(_width, KL16_CH_MULT, 2, KL16_EMBED_DIM)
            self.quant_conv = nn.Conv2d(2 * KL16_EMBED_DIM, 2 * KL16_EMBED_DIM, 1)
            self.post_quant_conv = nn.Conv2d(KL16_EMBED_DIM, KL16_EMBED_DIM, 1)
        if path is not None:
            self.load_checkpoint(path)
        elif torch.get_default_device().type != "meta":
            # on the CPU: the same numbers on every machine; the caller moves the tokenizer
            self.to_empty(device="cpu")
            _init_weights(self, torch.Generator().manual_seed(seed))

    @property
    def channels(self) -> int:
        return KL16_EMBED_DIM

    @property
    def stride(self) -> int:
        return KL16_STRIDE

    def load_checkpoint(self, path: str | Path) -> None:
        """Load MAR's kl16.ckpt strictly: missing/unexpected keys are refused by name and file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"KL-16 checkpoint {path} does not exist (MAR's kl16.ckpt)")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling refused or a corrupt file: say which file
            raise ValueError(
                f"cannot read KL-16 checkpoint {path} with weights_only=True: {e}"
            ) from e
        sd = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
        if not isinstance(sd, dict):
            raise ValueError(
                f"KL-16 checkpoint {path}: expected a state dict, got {type(sd).__name__}"
            )
        # LDM training checkpoints can carry the training loss's own weights (LPIPS and the
        # discriminator, under "loss."); they are not part of the autoencoder, so drop only them.
        sd = {k: v for k, v in sd.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
        wrong = [
            f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}"
            for k, v in own.items()
            if k in sd and sd[k].shape != v.shape
        ]
        if missing or unexpected or wrong:
            raise ValueError(
                f"KL-16 checkpoint {path} does not match MAR's KL-16 layout: "
                f"missing keys {_head(missing)}, unexpected keys {_head(unexpected)}, "
                f"size mismatch (checkpoint vs model) {_head(wrong)}"
            )
        self.load_state_dict(sd, strict=True, assign=True)

    def _encode_raw(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        moments = self.quant_conv(self.encoder(images))  # (B, 2C, h, w)
        mean, logvar = moments.chunk(2, dim=1)  # (B, C, h, w) each
        if generator is None:  # the posterior mode
            return mean
        std = torch.exp(0.5 * logvar.clamp(*_LOGVAR_RANGE))
        # drawn on the generator's device (a CPU generator may drive CUDA latents, as diffusers')
        eps = torch.randn(mean.shape, generator=generator, device=generator.device)
        eps = eps.to(device=mean.device, dtype=mean.dtype)
        return mean + std * eps

    def _decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latents))
