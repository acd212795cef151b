"""Losses for optimisation: perceptual distances (LPIPS, VGG16 features)."""

from .perceptual import (LPIPS, VGG16Features, load_lpips, load_vgg16_features, perceptual_mse, random_lpips,
                         random_vgg16_features)

__all__ = ["LPIPS", "VGG16Features", "load_lpips", "load_vgg16_features", "perceptual_mse", "random_lpips",
           "random_vgg16_features"]
