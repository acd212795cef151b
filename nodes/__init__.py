"""ComfyUI node classes of StyleGAN Studio (classic node API). All ComfyUI imports live in comfy_env."""

from . import comfy_env
from . import generator_nodes, latent_nodes

comfy_env.register_model_folders()

NODE_CLASS_MAPPINGS = {**generator_nodes.NODE_CLASS_MAPPINGS, **latent_nodes.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {**generator_nodes.NODE_DISPLAY_NAME_MAPPINGS, **latent_nodes.NODE_DISPLAY_NAME_MAPPINGS}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
