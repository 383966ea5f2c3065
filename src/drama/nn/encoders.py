"""Observation encoders and decoders: the reference's CNNs for pixels, MLPs for vector observations.

Pixels: a conv encoder (kernel 5 'same', stride 1 then 2, BatchNorm2d, SiLU) from 3x64x64 in [0, 1] to a
flat feature, and a mirrored transposed-conv decoder that reconstructs the frame from the posterior latent
``z`` with a final sigmoid. Vectors: MLPs of the same role. Both take and return a leading batch dimension
only; callers flatten (B, L) themselves.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from drama.nn.init import fan_avg_trunc_normal_
from drama.nn.mlp import mlp


class ConvEncoder(nn.Module):
    """Five (by default) Conv2d -> BatchNorm2d -> SiLU layers; channels ``depth * mults``.

    The first layer has stride 1, the others stride 2: 64 -> 64 -> 32 -> 16 -> 8 -> 4 for the defaults.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 64, depth: int = 16,
                 mults: tuple[int, ...] | list[int] = (1, 2, 3, 4, 4), kernel: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for i, mult in enumerate(mults):
            stride = 1 if i == 0 else 2
            out_channels = depth * mult
            layers += [nn.Conv2d(channels, out_channels, kernel, stride=stride, padding=kernel // 2),
                       nn.BatchNorm2d(out_channels), nn.SiLU()]
            channels = out_channels
            size = math.ceil(size / stride)
        self.net = nn.Sequential(*layers)
        self.out_channels, self.out_size = channels, size
        self.output_dim = channels * size * size
        self.apply(fan_avg_trunc_normal_)

    memory_format = torch.contiguous_format
    """layout of the conv activations (:func:`set_memory_format`); the output is the same either way."""

    def forward(self, obs: Tensor) -> Tensor:
        """(N, C, H, W) in [0, 1] -> (N, output_dim)."""
        return self.net(obs.contiguous(memory_format=self.memory_format)).flatten(1)


class ConvDecoder(nn.Module):
    """Linear -> 4x4 map -> BatchNorm2d -> SiLU, then transposed convs mirroring the encoder.

    Hidden transposed convs use stride 2 (kernel 5, padding 2, output padding 1); the last one uses stride 1
    down to ``out_channels`` and a sigmoid, so the output is in [0, 1].
    """

    def __init__(self, latent_dim: int, out_channels: int = 3, depth: int = 16,
                 mults: tuple[int, ...] | list[int] = (1, 2, 3, 4, 4), kernel: int = 5,
                 start_size: int = 4) -> None:
        super().__init__()
        channels = [depth * m for m in mults]
        self.start_channels, self.start_size = channels[-1], start_size
        self.stem = nn.Sequential(
            nn.Linear(latent_dim, channels[-1] * start_size * start_size),
            nn.Unflatten(1, (channels[-1], start_size, start_size)),
            nn.BatchNorm2d(channels[-1]),
            nn.SiLU(),
        )
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[::-1][:-1], channels[::-1][1:], strict=True):
            layers += [nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=kernel // 2, output_padding=1),
                       nn.BatchNorm2d(c_out), nn.SiLU()]
        layers += [nn.ConvTranspose2d(channels[0], out_channels, kernel, stride=1, padding=kernel // 2),
                   nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.apply(fan_avg_trunc_normal_)

    memory_format = torch.contiguous_format
    """layout of the conv activations (:func:`set_memory_format`); the output is the same either way."""

    def forward(self, z: Tensor) -> Tensor:
        """(N, latent_dim) -> (N, C, H, W) in [0, 1]."""
        return self.net(self.stem(z).contiguous(memory_format=self.memory_format))


def set_memory_format(module: ConvEncoder | ConvDecoder, channels_last: bool) -> None:
    """Conv weights and activations in channels_last (NHWC) or the default layout (runtime.channels_last)."""
    module.memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module.to(memory_format=module.memory_format)


class MLPEncoder(nn.Module):
    """Vector observation (N, D) -> (N, hidden) feature."""

    def __init__(self, obs_dim: int, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, max(layers, 1))
        self.output_dim = hidden
        self.apply(fan_avg_trunc_normal_)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs)


class MLPDecoder(nn.Module):
    """Latent (N, latent_dim) -> reconstructed vector observation (N, D); no output squashing."""

    def __init__(self, latent_dim: int, obs_dim: int, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.net = mlp(latent_dim, hidden, layers, out_dim=obs_dim)
        self.apply(fan_avg_trunc_normal_)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
