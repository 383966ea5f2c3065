"""Conv / MLP encoders and decoders (MLPs for vector observations), their paper parameter counts and the
fan-avg truncated-normal init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from drama.nn.encoders import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, mlp
from drama.nn.init import fan_avg_trunc_normal_
from drama.nn.norm import RMSNorm

TRUNC_STD = 0.87962566103423978  # std of a standard normal truncated to +-2 sigma


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- conv encoder ---
def test_conv_encoder_paper_param_count_and_output() -> None:
    enc = ConvEncoder(3, 64, 16, [1, 2, 3, 4, 4], 5)
    assert _n_params(enc) == 232_272
    assert enc.output_dim == 1024
    assert (enc.out_channels, enc.out_size) == (64, 4)
    out = enc(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 1024)
    assert torch.isfinite(out).all()


def test_conv_encoder_layer_structure() -> None:
    enc = ConvEncoder()
    mods = list(enc.net)
    assert len(mods) == 15
    convs = [m for m in mods if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 48, 64, 64]
    assert [c.in_channels for c in convs] == [3, 16, 32, 48, 64]
    assert [c.stride for c in convs] == [(1, 1), (2, 2), (2, 2), (2, 2), (2, 2)]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in convs)
    assert all(c.bias is not None for c in convs)  # conv layers keep their bias
    for i in range(0, 15, 3):
        assert isinstance(mods[i], nn.Conv2d)
        assert isinstance(mods[i + 1], nn.BatchNorm2d)
        assert mods[i + 1].num_features == mods[i].out_channels
        assert isinstance(mods[i + 2], nn.SiLU)


def test_conv_encoder_spatial_chain() -> None:
    enc = ConvEncoder()
    sizes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(tuple(o.shape[1:])))
             for m in enc.net if isinstance(m, nn.Conv2d)]
    enc.eval()
    with torch.no_grad():
        enc(torch.rand(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert sizes == [(16, 64, 64), (32, 32, 32), (48, 16, 16), (64, 8, 8), (64, 4, 4)]


def test_conv_encoder_other_config() -> None:
    enc = ConvEncoder(in_channels=1, image_size=32, depth=8, mults=(1, 2, 4), kernel=3)
    assert enc.output_dim == 32 * 8 * 8
    assert enc(torch.rand(3, 1, 32, 32)).shape == (3, enc.output_dim)


def test_conv_encoder_gradient_flows_to_input() -> None:
    enc = ConvEncoder()
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    enc(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in enc.parameters())


# --- conv decoder ---
def test_conv_decoder_paper_param_count_and_output() -> None:
    dec = ConvDecoder(1024, 3, 16, [1, 2, 3, 4, 4], 5)
    assert _n_params(dec) == 1_281_811
    z = torch.randn(2, 1024) * 10
    out = dec(z)
    assert out.shape == (2, 3, 64, 64)
    assert (out >= 0).all() and (out <= 1).all()
    dec.eval()
    with torch.no_grad():
        assert dec(z[:1]).shape == (1, 3, 64, 64)


def test_conv_decoder_structure() -> None:
    dec = ConvDecoder(1024)
    stem = list(dec.stem)
    assert isinstance(stem[0], nn.Linear) and (stem[0].in_features, stem[0].out_features) == (1024, 1024)
    assert isinstance(stem[2], nn.BatchNorm2d) and isinstance(stem[3], nn.SiLU)
    tconvs = [m for m in dec.net if isinstance(m, nn.ConvTranspose2d)]
    channels = [(t.in_channels, t.out_channels) for t in tconvs]
    assert channels == [(64, 64), (64, 48), (48, 32), (32, 16), (16, 3)]
    assert [t.stride for t in tconvs] == [(2, 2)] * 4 + [(1, 1)]
    assert all(t.kernel_size == (5, 5) and t.padding == (2, 2) for t in tconvs)
    assert [t.output_padding for t in tconvs[:4]] == [(1, 1)] * 4
    assert isinstance(list(dec.net)[-1], nn.Sigmoid)
    sizes: list[int] = []
    hooks = [t.register_forward_hook(lambda _m, _i, o: sizes.append(o.shape[-1])) for t in tconvs]
    dec(torch.randn(2, 1024))
    for h in hooks:
        h.remove()
    assert sizes == [8, 16, 32, 64, 64]


# --- MLPs ---
def test_mlp_structure() -> None:
    net = mlp(10, 32, 2, out_dim=4)
    kinds = [type(m) for m in net]
    assert kinds == [nn.Linear, RMSNorm, nn.SiLU, nn.Linear, RMSNorm, nn.SiLU, nn.Linear]
    assert net[-1].out_features == 4
    assert net[1].eps == net[4].eps == 1e-6
    assert [type(m) for m in mlp(10, 32, 1)] == [nn.Linear, RMSNorm, nn.SiLU]


def test_mlp_encoder_decoder_shapes() -> None:
    enc = MLPEncoder(17, hidden=64, layers=2)
    assert enc.output_dim == 64
    obs = torch.randn(5, 17)
    feat = enc(obs)
    assert feat.shape == (5, 64)
    dec = MLPDecoder(1024, 17, hidden=64, layers=2)
    rec = dec(torch.randn(5, 1024))
    assert rec.shape == (5, 17)
    # no output squashing on vector reconstructions
    dec.net[-1].weight.data.fill_(0.0)
    dec.net[-1].bias.data.fill_(-7.0)
    assert torch.allclose(dec(torch.randn(2, 1024)), torch.full((2, 17), -7.0))
    assert MLPEncoder(3, hidden=8, layers=0)(torch.randn(2, 3)).shape == (2, 8)


def test_mlp_encoder_decoder_param_counts() -> None:
    # Linear(17->64)+RMSNorm(64) + Linear(64->64)+RMSNorm(64)
    assert _n_params(MLPEncoder(17, hidden=64, layers=2)) == (17 * 64 + 64 + 64) + (64 * 64 + 64 + 64)
    assert _n_params(MLPDecoder(32, 5, hidden=16, layers=1)) == (32 * 16 + 16 + 16) + (16 * 5 + 5)


# --- init ---
@pytest.mark.parametrize(
    "layer", [nn.Linear(1000, 1000), nn.Conv2d(64, 64, 5), nn.ConvTranspose2d(64, 48, 5)],
    ids=["linear", "conv", "conv_t"])
def test_fan_avg_trunc_normal(layer: nn.Module) -> None:
    torch.manual_seed(0)
    layer.bias.data.fill_(3.0)
    fan_avg_trunc_normal_(layer)
    if isinstance(layer, nn.Linear):
        fan_in, fan_out = layer.in_features, layer.out_features
    else:
        k = layer.kernel_size[0] * layer.kernel_size[1]
        fan_in, fan_out = k * layer.in_channels, k * layer.out_channels
    sigma = math.sqrt(1.0 / ((fan_in + fan_out) / 2.0)) / TRUNC_STD
    w = layer.weight.detach()
    assert torch.equal(layer.bias.detach(), torch.zeros_like(layer.bias))
    assert w.abs().max().item() <= 2.0 * sigma * (1 + 1e-6)
    assert w.std().item() == pytest.approx(sigma * TRUNC_STD, rel=0.02)
    assert abs(w.mean().item()) < 0.02 * sigma
    # truncated, not clamped: no pile-up at the bounds
    assert (w.abs() > 1.99 * sigma).float().mean().item() < 0.01


def test_fan_avg_trunc_normal_ignores_other_modules() -> None:
    bn = nn.BatchNorm2d(8)
    norm = nn.RMSNorm(8)
    norm.weight.data.fill_(2.0)
    fan_avg_trunc_normal_(bn)
    fan_avg_trunc_normal_(norm)
    assert torch.equal(bn.weight.data, torch.ones(8)) and torch.equal(bn.bias.data, torch.zeros(8))
    assert torch.equal(norm.weight.data, torch.full((8,), 2.0))


def test_encoder_decoder_use_weight_init() -> None:
    torch.manual_seed(0)
    enc, dec = ConvEncoder(), ConvDecoder(1024)
    for m in [*enc.modules(), *dec.modules()]:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            assert torch.equal(m.bias.detach(), torch.zeros_like(m.bias))
            if isinstance(m, nn.Linear):
                fan = (m.in_features + m.out_features) / 2
            else:
                fan = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels + m.out_channels) / 2
            assert m.weight.abs().max().item() <= 2.0 * math.sqrt(1.0 / fan) / TRUNC_STD * (1 + 1e-6)
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight.detach(), torch.ones_like(m.weight))
    # the big decoder stem Linear(1024 -> 1024) has std ~ sqrt(1 / 1024)
    assert dec.stem[0].weight.std().item() == pytest.approx(math.sqrt(1 / 1024), rel=0.02)


def test_channels_last_layout_gives_the_same_outputs_and_gradients():
    import copy

    from drama.nn.encoders import set_memory_format

    torch.manual_seed(0)
    enc, dec = ConvEncoder(depth=4).double(), ConvDecoder(64, depth=4).double()  # float64: only layout differs
    enc_cl, dec_cl = copy.deepcopy(enc), copy.deepcopy(dec)
    set_memory_format(enc_cl, True)
    set_memory_format(dec_cl, True)
    assert enc_cl.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    obs, z = torch.rand(3, 3, 64, 64, dtype=torch.float64), torch.randn(3, 64, dtype=torch.float64)
    out, out_cl = enc(obs), enc_cl(obs)
    rec, rec_cl = dec(z), dec_cl(z)
    torch.testing.assert_close(out_cl, out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rec_cl, rec, rtol=1e-10, atol=1e-12)
    (out.sum() + rec.sum()).backward()
    (out_cl.sum() + rec_cl.sum()).backward()
    for a, b in zip([*enc.parameters(), *dec.parameters()], [*enc_cl.parameters(), *dec_cl.parameters()],
                    strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-10)
    set_memory_format(enc_cl, False)
    assert enc_cl.net[0].weight.is_contiguous()


def test_build_models_applies_runtime_channels_last():
    from conftest import tiny_config
    from drama.build import build_models
    from drama.envs.spec import EnvSpec

    world_model, _ = build_models(tiny_config("runtime.channels_last=true"), EnvSpec((3, 64, 64), 4))
    assert world_model.encoder.memory_format == torch.channels_last
    assert world_model.decoder.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    world_model, _ = build_models(tiny_config("runtime.channels_last=false"), EnvSpec((3, 64, 64), 4))
    assert world_model.encoder.memory_format == torch.contiguous_format


@pytest.mark.parametrize("bf16_hardware", [True, False])
def test_build_models_resolves_auto_channels_last_by_the_cpus_bf16_hardware(monkeypatch, bf16_hardware):
    import drama.device
    from conftest import tiny_config
    from drama.build import build_models
    from drama.envs.spec import EnvSpec

    monkeypatch.setattr(drama.device, "cpu_features",
                        lambda: frozenset({"avx2", "avx512f", "avx512_bf16"} if bf16_hardware else {"avx2"}))
    cfg = tiny_config("runtime.device=cpu")
    assert cfg.runtime.channels_last == "auto"
    world_model, _ = build_models(cfg, EnvSpec((3, 64, 64), 4))
    layout = torch.channels_last if bf16_hardware else torch.contiguous_format
    assert world_model.encoder.memory_format == world_model.decoder.memory_format == layout
