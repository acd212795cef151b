"""ComfyUI node classes of StyleGAN Studio (classic node API). All ComfyUI imports live in comfy_env."""

from . import comfy_env
from . import (align_nodes, clip_nodes, generator_nodes, global_direction_nodes, invert_nodes, latent_nodes,
               mapper_nodes)

comfy_env.register_model_folders()

_MODULES = [generator_nodes, latent_nodes, align_nodes, invert_nodes, clip_nodes, global_direction_nodes,
            mapper_nodes]
NODE_CLASS_MAPPINGS = {k: v for m in _MODULES for k, v in m.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS = {k: v for m in _MODULES for k, v in m.NODE_DISPLAY_NAME_MAPPINGS.items()}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
