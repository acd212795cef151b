"""Pure-PyTorch operators of StyleGAN2/3, each with a reference implementation that is its specification."""

from .bias_act import bias_act, bias_act_ref
from .conv2d_resample import conv2d_resample, conv2d_resample_ref
from .filtered_lrelu import filtered_lrelu, filtered_lrelu_ref
from .impl import IMPLS, current_impl, ops_impl
from .modulated_conv2d import modulated_conv2d, modulated_conv2d_ref
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upfirdn2d_ref, upsample2d
from .upfirdn2d_bias_act import upfirdn2d_bias_act, upfirdn2d_bias_act_ref

__all__ = [
    "bias_act", "bias_act_ref", "conv2d_resample", "conv2d_resample_ref", "filtered_lrelu",
    "filtered_lrelu_ref", "modulated_conv2d", "modulated_conv2d_ref", "downsample2d", "filter2d",
    "setup_filter", "upfirdn2d", "upfirdn2d_ref", "upsample2d", "upfirdn2d_bias_act", "upfirdn2d_bias_act_ref",
    "IMPLS", "current_impl", "ops_impl",
]
