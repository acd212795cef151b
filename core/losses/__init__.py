"""Losses for optimisation: perceptual distances (LPIPS, VGG16 features, NVIDIA's vgg16.pt)."""

from .nvidia_vgg16 import NVIDIA_VGG16_SHA256, NVIDIA_VGG16_URL, NvidiaVGG16, load_nvidia_vgg16
from .perceptual import (LPIPS, VGG16Features, load_lpips, load_vgg16_features, perceptual_mse, random_lpips,
                         random_vgg16_features)

__all__ = ["LPIPS", "VGG16Features", "load_lpips", "load_vgg16_features", "perceptual_mse", "random_lpips",
           "random_vgg16_features", "NvidiaVGG16", "load_nvidia_vgg16", "NVIDIA_VGG16_URL", "NVIDIA_VGG16_SHA256"]
