"""Encoders into StyleGAN's W+: pSp, e4e and ReStyle on the IR-SE50 backbone shared with ArcFace."""

from .irse import IR_SE50_STAGES, IRSEUnit, SqueezeExcite, input_layer, ir_se_body
from .load import (DEFAULT_RESTYLE_ITERATIONS, ENCODER_EXTENSIONS, ENCODER_RESOLUTION, KINDS, Encoder, EncoderInfo,
                   check_pairing, encoder_from_checkpoint, load_encoder, read_encoder_checkpoint)
from .networks import EncoderConfig, StyleEncoder, fuse_for_inference, prepare_for_inference, random_encoder

__all__ = ["IR_SE50_STAGES", "IRSEUnit", "SqueezeExcite", "input_layer", "ir_se_body", "DEFAULT_RESTYLE_ITERATIONS",
           "ENCODER_EXTENSIONS", "ENCODER_RESOLUTION", "KINDS", "Encoder", "EncoderInfo", "check_pairing",
           "encoder_from_checkpoint", "load_encoder", "read_encoder_checkpoint", "EncoderConfig", "StyleEncoder", "fuse_for_inference", "prepare_for_inference",
           "random_encoder"]
