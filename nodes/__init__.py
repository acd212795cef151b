"""ComfyUI node classes of StyleGAN Studio (classic node API). All ComfyUI imports live in comfy_env.

Importing this package imports every module in it, so each node module's `@register_node` classes land in
`registry.NODES`: a new node module needs no list edited anywhere. Then the model folders are registered, the
pack's caches joined to ComfyUI's memory management, and the web extension's route added (in ComfyUI only).
"""

import importlib
import pkgutil

from . import caches, comfy_env, registry

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

comfy_env.register_model_folders()
comfy_env.install_memory_hooks(caches.release_models)
comfy_env.add_json_routes({"/stylegan_studio/nodes": registry.web_info,
                           "/stylegan_studio/memory": caches.memory_stats})

NODE_CLASS_MAPPINGS = registry.node_class_mappings()
NODE_DISPLAY_NAME_MAPPINGS = registry.display_name_mappings()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
