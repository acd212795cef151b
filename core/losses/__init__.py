"""Losses for optimisation: perceptual distances (LPIPS, VGG16 features, NVIDIA's vgg16.pt), the Gram matrix /
style loss (style.py) and VGG-19 features (vgg19.py)."""

from .nvidia_vgg16 import NVIDIA_VGG16_SHA256, NVIDIA_VGG16_URL, NvidiaVGG16, load_nvidia_vgg16
from .perceptual import (LPIPS, VGG16Features, load_lpips, load_vgg16_features, perceptual_mse, random_lpips,
                         random_vgg16_features)
from .style import gram_distance, gram_matrix, resize_mask, style_loss
from .vgg19 import VGG19, load_vgg19, random_vgg19

__all__ = ["LPIPS", "VGG16Features", "load_lpips", "load_vgg16_features", "perceptual_mse", "random_lpips",
           "random_vgg16_features", "NvidiaVGG16", "load_nvidia_vgg16", "NVIDIA_VGG16_URL", "NVIDIA_VGG16_SHA256",
           "gram_matrix", "gram_distance", "style_loss", "resize_mask", "VGG19", "load_vgg19", "random_vgg19"]
