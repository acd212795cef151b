"""modulated_conv2d: StyleGAN2's style-modulated, demodulated convolution (Karras et al. 2020, eqs. 1-3)."""

from __future__ import annotations

import torch

from .conv2d_resample import conv2d_resample, conv2d_resample_ref
from .upfirdn2d import Padding

DEMOD_EPS = 1e-8


def _prenormalize(weight: torch.Tensor, styles: torch.Tensor, mode: str):
    """Rescale weight and styles before modulation to keep fp16 in range; demodulation cancels it."""
    if mode == "stylegan3":  # RMS over the whole weight / all styles (networks of StyleGAN3)
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    elif mode == "fp16":  # max-norm per output filter / per sample (StyleGAN2-ADA in fp16)
        in_channels, kh, kw = weight.shape[1:]
        weight = weight * (1 / (in_channels * kh * kw) ** 0.5 / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    return weight, styles


def modulated_conv2d_ref(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                         up: int = 1, down: int = 1, padding: Padding = 0, resample_filter: torch.Tensor | None = None,
                         flip_weight: bool = True, input_gain: torch.Tensor | None = None,
                         prenormalize: str | None = None) -> torch.Tensor:
    """Reference, one sample at a time.

    For sample n: w'_n = weight * s_n (eq. 1, scaling input channels); if `demodulate`,
    w''_n = w'_n / sqrt(sum_{i,k} w'_n^2 + 1e-8) (eq. 3); optionally scale input channels by
    `input_gain`; then `conv2d_resample_ref(x_n, w''_n, ...)`.

    Args:
        x: `[N, I, H, W]` activations.
        weight: `[O, I, kh, kw]` shared convolution weight.
        styles: `[N, I]` per-sample modulation (the affine layer's output).
        input_gain: `[]`, `[I]` or `[N, I]` extra input scaling after demodulation (StyleGAN3).
        prenormalize: None, 'stylegan3' or 'fp16' (see `_prenormalize`).
    """
    n = x.shape[0]
    assert styles.shape == (n, weight.shape[1]), (styles.shape, weight.shape)
    if prenormalize and demodulate:
        weight, styles = _prenormalize(weight, styles, prenormalize)
    outs = []
    for i in range(n):
        w = weight * styles[i].reshape(1, -1, 1, 1)
        if demodulate:
            w = w * (w.square().sum([1, 2, 3], keepdim=True) + DEMOD_EPS).rsqrt()
        if input_gain is not None:
            w = w * input_gain.expand(n, weight.shape[1])[i].reshape(1, -1, 1, 1)
        outs.append(conv2d_resample_ref(x[i:i + 1], w.to(x.dtype), resample_filter, up=up, down=down,
                                        padding=padding, flip_weight=flip_weight))
    return torch.cat(outs)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     up: int = 1, down: int = 1, padding: Padding = 0, resample_filter: torch.Tensor | None = None,
                     flip_weight: bool = True, input_gain: torch.Tensor | None = None,
                     prenormalize: str | None = None, out_gain: float = 1.0, bias: torch.Tensor | None = None,
                     fused: bool | None = None) -> torch.Tensor:
    """`out_gain * modulated_conv2d_ref(...) + bias`, computed without a per-sample loop.

    fused=True modulates the weights (one grouped convolution, cheapest for one sample);
    fused=False scales the activations before and after a shared convolution (cheapest for a
    batch); None picks: the weights for one sample, except when the styles are being optimised
    through a fixed weight (every inversion and editing loop): the modulated weight's gradient
    would then be a whole extra convolution per layer in the backward (the weight-gradient pass),
    where scaling the activations needs two products over the activations only (2x faster for a
    128 px generator's forward + backward on a CPU, 1.15x at 1024 px). Both give the same result
    up to float rounding. `bias` `[O]` is added after scaling.
    """
    n, in_channels = x.shape[0], x.shape[1]
    out_channels, _, kh, kw = weight.shape
    assert styles.shape == (n, in_channels), f"styles {list(styles.shape)} != [{n}, {in_channels}]"
    if prenormalize and demodulate:
        weight, styles = _prenormalize(weight, styles, prenormalize)
    if fused is None:
        fused = n == 1 and not (styles.requires_grad and not weight.requires_grad and torch.is_grad_enabled())

    if input_gain is not None:
        input_gain = input_gain.expand(n, in_channels)
    # Eq. 3 without the modulated weight: sum_{i,k} (s_i w_oik)^2 = sum_i s_i^2 sum_k w_oik^2.
    out_scale = torch.full([n, out_channels], float(out_gain), dtype=styles.dtype, device=styles.device)
    if demodulate:
        out_scale = (styles.square() @ weight.square().sum([2, 3]).t() + DEMOD_EPS).rsqrt() * out_gain
    in_scale = styles if input_gain is None else styles * input_gain

    if fused:
        # One multiply makes every sample's weight: w_noik = w_oik * s_ni * g_ni * d_no.
        scale = out_scale.reshape(n, out_channels, 1) * in_scale.reshape(n, 1, in_channels)
        w = (weight.unsqueeze(0) * scale.reshape(n, out_channels, in_channels, 1, 1).to(weight.dtype))
        w = w.reshape(n * out_channels, in_channels, kh, kw).to(x.dtype)
        xg = x.reshape(1, n * in_channels, *x.shape[2:]) if n > 1 else x
        fused_bias = None if bias is None else bias.to(x.dtype).repeat(n)
        y = conv2d_resample(xg, w, resample_filter, up=up, down=down, padding=padding, groups=n,
                            flip_weight=flip_weight, bias=fused_bias)
        return y.reshape(n, out_channels, *y.shape[2:]) if n > 1 else y

    # Activation scaling: x * s -> shared conv -> * dcoefs * gain (+ bias).
    x = x * in_scale.to(x.dtype).reshape(n, in_channels, 1, 1)
    y = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, down=down, padding=padding,
                        flip_weight=flip_weight)
    post = out_scale.to(x.dtype).reshape(n, out_channels, 1, 1)
    if bias is None:
        return y * post
    return torch.addcmul(bias.to(x.dtype).reshape(1, -1, 1, 1), y, post)
