"""Example-workflow tools: schema checks and UI-format -> API-format conversion, as ComfyUI's frontend does it.

`object_info` is ComfyUI's `/object_info` answer, or `object_info_from_pack` (our nodes plus the few core
nodes the examples use) when ComfyUI is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO

EXAMPLES = REPO / "example_workflows"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Frontend-only nodes: drawn on the canvas, never sent to the server (not in /object_info, not in the prompt).
VIRTUAL_NODES = {"Note", "MarkdownNote"}
# Core ComfyUI nodes used by the examples (schemas as ComfyUI 0.3.x publishes them).
CORE_NODES = {
    "SaveImage": {"input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
                  "input_order": {"required": ["images", "filename_prefix"]}, "output": [], "output_node": True},
    "SaveAnimatedWEBP": {"input": {"required": {
        "images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "ComfyUI"}],
        "fps": ["FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}],
        "lossless": ["BOOLEAN", {"default": True}], "quality": ["INT", {"default": 80, "min": 0, "max": 100}],
        "method": [["default", "fastest", "slowest"], {}]}},
        "input_order": {"required": ["images", "filename_prefix", "fps", "lossless", "quality", "method"]},
        "output": [], "output_node": True},
    "LoadImage": {"input": {"required": {"image": [[], {"image_upload": True}]}},
                  "input_order": {"required": ["image"]}, "output": ["IMAGE", "MASK"], "output_node": False},
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [[], {}]}},
                               "input_order": {"required": ["ckpt_name"]}, "output": ["MODEL", "CLIP", "VAE"],
                               "output_node": False},
    "CLIPTextEncode": {"input": {"required": {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
                                              "clip": ["CLIP", {}]}},
                       "input_order": {"required": ["text", "clip"]}, "output": ["CONDITIONING"], "output_node": False},
    "ImageScale": {"input": {"required": {
        "image": ["IMAGE", {}], "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {}],
        "width": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}],
        "height": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}], "crop": [["disabled", "center"], {}]}},
        "input_order": {"required": ["image", "upscale_method", "width", "height", "crop"]}, "output": ["IMAGE"],
        "output_node": False},
    "VAEEncode": {"input": {"required": {"pixels": ["IMAGE", {}], "vae": ["VAE", {}]}},
                  "input_order": {"required": ["pixels", "vae"]}, "output": ["LATENT"], "output_node": False},
    "VAEDecode": {"input": {"required": {"samples": ["LATENT", {}], "vae": ["VAE", {}]}},
                  "input_order": {"required": ["samples", "vae"]}, "output": ["IMAGE"], "output_node": False},
    "KSampler": {"input": {"required": {
        "model": ["MODEL", {}],
        "seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615, "control_after_generate": True}],
        "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
        "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
        "sampler_name": [["euler", "euler_ancestral", "heun", "dpm_2", "lms", "dpmpp_2m", "ddim"], {}],
        "scheduler": [["simple", "karras", "exponential", "normal", "beta"], {}],
        "positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}], "latent_image": ["LATENT", {}],
        "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]}},
        "input_order": {"required": ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                     "negative", "latent_image", "denoise"]},
        "output": ["LATENT"], "output_node": False},
    "ImageToMask": {"input": {"required": {"image": ["IMAGE", {}], "channel": [["red", "green", "blue", "alpha"], {}]}},
                    "input_order": {"required": ["image", "channel"]}, "output": ["MASK"], "output_node": False},
    "PreviewImage": {"input": {"required": {"images": ["IMAGE", {}]}}, "input_order": {"required": ["images"]},
                     "output": [], "output_node": True},
    "MaskToImage": {"input": {"required": {"mask": ["MASK", {}]}}, "input_order": {"required": ["mask"]},
                    "output": ["IMAGE"], "output_node": False},
}


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


def object_info_from_pack(pack) -> dict:
    """Our nodes' schemas in `/object_info` form (plus CORE_NODES)."""
    info = dict(CORE_NODES)
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        inputs = {group: {k: [list(v[0]) if isinstance(v[0], (list, tuple)) else v[0], dict(v[1])]
                          for k, v in spec.get(group, {}).items()} for group in ("required", "optional")}
        info[name] = {"input": inputs, "input_order": {g: list(spec.get(g, {})) for g in ("required", "optional")},
                      "output": list(cls.RETURN_TYPES), "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
    return info


def input_kind(entry) -> str:
    t = entry[0]
    return "COMBO" if isinstance(t, list) else t


def input_options(entry) -> dict:
    return entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}


def combo_choices(entry) -> list:
    """Choices of a combo, in either of ComfyUI's forms: [[choices], opts] or ["COMBO", {"options": [...]}]."""
    return entry[0] if isinstance(entry[0], list) else list(input_options(entry).get("options", []))


def widget_inputs(node_info: dict) -> list[tuple[str, list]]:
    """(name, entry) of the inputs shown as widgets, in the order the frontend creates them."""
    out = []
    for group in ("required", "optional"):
        for name in node_info.get("input_order", {}).get(group, node_info["input"].get(group, {}).keys()):
            entry = node_info["input"][group][name]
            if input_kind(entry) in WIDGET_TYPES and not input_options(entry).get("forceInput"):
                out.append((name, entry))
    return out


# Optional widgets added (last) after workflows were saved: the optimising nodes' `preset` (issue 14).
ADDED_LATER = {"preset"}


def saved_widgets(node_info: dict, values: list) -> list[tuple[str, list]]:
    """The widgets `values` (a saved `widgets_values`) covers. A workflow saved before an optional widget of
    `ADDED_LATER` was appended has one value fewer: the frontend fills the widgets from left to right and leaves
    that one at its default. Anything else is a mismatch (all widgets returned)."""
    widgets = widget_inputs(node_info)
    optional = set(node_info["input"].get("optional", {}))
    count = 0
    for i, (name, entry) in enumerate(widgets):
        if count == len(values) and all(n in optional and n in ADDED_LATER for n, _ in widgets[i:]):
            return widgets[:i]
        count += 1 + extra_values(name, entry)
    return widgets


def has_control_widget(name: str, entry) -> bool:
    """The frontend adds a 'control after generate' value after these widgets (seed, noise_seed)."""
    return bool(input_options(entry).get("control_after_generate")) or name in ("seed", "noise_seed")


def has_upload_widget(entry) -> bool:
    """Load Image's file combo is followed by an upload button, whose value ('image') is saved too."""
    return bool(input_options(entry).get("image_upload"))


def extra_values(name: str, entry) -> int:
    return int(has_control_widget(name, entry)) + int(has_upload_widget(entry))


def check_value(name: str, entry, value) -> str | None:
    kind, opts = input_kind(entry), input_options(entry)
    if kind == "COMBO":
        choices = combo_choices(entry)
        return None if value in choices else f"{name}={value!r} is not one of {choices[:8]}"
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name}={value!r} is not an int"
    elif kind == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{name}={value!r} is not a number"
    elif kind == "STRING":
        return None if isinstance(value, str) else f"{name}={value!r} is not a string"
    elif kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{name}={value!r} is not a boolean"
    if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
        return f"{name}={value!r} is outside [{opts.get('min')}, {opts.get('max')}]"
    return None


def check_workflow(workflow: dict, object_info: dict, *, combos: bool = True) -> list[str]:
    """Problems in a UI-format workflow: unknown node types, widget values that do not fit the schema,
    links that do not match the declared types. `combos=False` skips file-list combos (models, latents)."""
    problems = []
    links = {link[0]: link for link in workflow.get("links", [])}
    nodes = {n["id"]: n for n in workflow.get("nodes", [])}
    for n in workflow.get("nodes", []):
        if n["type"] in VIRTUAL_NODES:
            continue
        info = object_info.get(n["type"])
        if info is None:
            problems.append(f"node {n['id']}: unknown type {n['type']}")
            continue
        values = list(n.get("widgets_values", []))
        widgets = saved_widgets(info, values)
        expected = sum(1 + extra_values(k, e) for k, e in widgets)
        if len(values) != expected:
            problems.append(f"node {n['id']} ({n['type']}): {len(values)} widget values, expected {expected}")
            continue
        for name, entry in widgets:
            value = values.pop(0)
            if has_control_widget(name, entry):
                control = values.pop(0)
                if control not in ("fixed", "increment", "decrement", "randomize"):
                    problems.append(f"node {n['id']}: bad control_after_generate {control!r}")
            if has_upload_widget(entry) and values.pop(0) != "image":
                problems.append(f"node {n['id']}: the upload widget's value must be 'image'")
            is_file_combo = input_kind(entry) == "COMBO" and (
                name in ("ckpt_name", "latent_file", "delta_file", "mapper_name", "encoder_name") or has_upload_widget(entry))
            if is_file_combo and not combos:
                continue
            problem = check_value(name, entry, value)
            if problem:
                problems.append(f"node {n['id']} ({n['type']}): {problem}")
        for inp in n.get("inputs", []):
            if inp.get("link") is None:
                continue
            link = links.get(inp["link"])
            if link is None or link[3] != n["id"]:
                problems.append(f"node {n['id']}: input {inp['name']} has a dangling link {inp['link']}")
                continue
            src = nodes.get(link[1])
            src_info = object_info.get(src["type"]) if src else None
            if src_info is None or link[2] >= len(src_info["output"]):
                problems.append(f"node {n['id']}: link {link[0]} comes from a missing output")
            elif src_info["output"][link[2]] != inp["type"]:
                problems.append(f"node {n['id']}: input {inp['name']} ({inp['type']}) linked to a "
                                f"{src_info['output'][link[2]]} output")
    return problems


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow into the API-format prompt the frontend would queue."""
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for n in workflow["nodes"]:
        if n.get("mode", 0) in (2, 4) or n["type"] in VIRTUAL_NODES:  # muted, bypassed or frontend-only
            continue
        info = object_info[n["type"]]
        inputs = {}
        values = list(n.get("widgets_values", []))
        widgets = widget_inputs(info)
        saved = saved_widgets(info, values)
        for name, entry in widgets:
            if len(saved) < len(widgets) and (name, entry) not in saved:  # added after the workflow was saved
                if "default" in input_options(entry):
                    inputs[name] = input_options(entry)["default"]
                continue
            inputs[name] = values.pop(0)
            del values[:extra_values(name, entry)]
        for inp in n.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return prompt


def load_workflow(path: Path) -> dict:
    return json.loads(Path(path).read_text())
