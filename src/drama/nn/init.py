"""Weight initialisations of the reference."""

from __future__ import annotations

import math

from torch import nn


def fan_avg_trunc_normal_(module: nn.Module) -> None:
    """``tools.weight_init``: truncated normal (+-2 sigma), std = sqrt(1/fan_avg)/0.8796, zero bias.

    Applies to Linear, Conv2d and ConvTranspose2d; convolutions count fans as kernel area x channels.
    """
    if isinstance(module, nn.Linear):
        fan_in, fan_out = module.in_features, module.out_features
    elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        space = module.kernel_size[0] * module.kernel_size[1]
        fan_in, fan_out = space * module.in_channels, space * module.out_channels
    else:
        return
    std = math.sqrt(1.0 / ((fan_in + fan_out) / 2.0)) / 0.87962566103423978
    nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def orthogonal_(module: nn.Linear, gain: float) -> None:
    """``tools.layer_init``: orthogonal weight with ``gain``, zero bias."""
    nn.init.orthogonal_(module.weight, gain=gain)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
