"""Segment Composite (Barbershop): transfer a region (hair, ...) between aligned photos in StyleGAN2's FS space,
guided by a face parser or by any MASK. See `pipeline` for the method and `embed` for the embedding cache."""

from .config import DEFAULTS, MODES, CompositeConfig, composite_config
from .embed import DEFAULT_CACHE, EmbeddingCache
from .pipeline import CompositeResult, segment_composite

__all__ = ["segment_composite", "CompositeResult", "CompositeConfig", "DEFAULTS", "MODES", "composite_config",
           "EmbeddingCache", "DEFAULT_CACHE"]
