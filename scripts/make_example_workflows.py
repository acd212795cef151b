"""Write the UI-format example workflows in example_workflows/ from compact descriptions.

Each node is (id, type, position, widget values, {input name: (source id, output slot)}). Widget values are
listed in the order ComfyUI's frontend creates the widgets (required then optional inputs, with the extra
'control after generate' value after `seed` / `noise_seed`). Run after changing a node's inputs, then check
the result with `pytest tests/test_workflows.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from demo import load_pack  # noqa: E402  (the pack imported as ComfyUI imports it)

CHECKPOINT = "stylegan2-ffhq-1024x1024.pkl"  # the checkpoint the README tells users to download
PHOTO = "face.jpg"  # the photo Load Image starts with: the user picks their own
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}  # inputs the frontend shows as widgets (and combos)
# Link inputs and outputs of the ComfyUI core nodes used below: {type: ([(input, type, optional)], [(output, type)])}.
# The pack's own nodes are read from its registry (`node_slots`).
CORE_SLOTS = {
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "SaveImage": ([("images", "IMAGE", False)], []),
    "SaveAnimatedWEBP": ([("images", "IMAGE", False)], []),
}
DEFAULT_SIZE = [320, 200]
SIZES = {"SGS_LoadStyleGAN": [320, 170], "SGS_SampleLatent": [320, 250], "SGS_Synthesize": [300, 130],
         "SGS_StyleMix": [300, 150], "SGS_InterpolateLatents": [320, 190], "SGS_SaveLatent": [300, 80],
         "SaveImage": [420, 420], "SaveAnimatedWEBP": [420, 460], "SGS_AlignFace": [340, 330],
         "SGS_InvertImage": [340, 330], "SGS_UnalignFace": [300, 170], "LoadImage": [320, 380],
         "SGS_LoadCLIP": [320, 170], "SGS_CLIPLatentOptimize": [360, 400], "SGS_ComputeGlobalDirections": [340, 230],
         "SGS_GlobalDirectionEdit": [340, 300], "SGS_LoadLatentMapper": [320, 100], "SGS_ApplyLatentMapper": [320, 170]}


def node_slots(node_cls) -> tuple[list, list]:
    """A node's link inputs [(name, type, optional)] (every input that is not a widget, in the frontend's order:
    required then optional) and outputs [(name, type)]."""
    spec = node_cls.INPUT_TYPES()
    inputs = [(name, entry[0], group == "optional") for group in ("required", "optional")
              for name, entry in spec.get(group, {}).items()
              if isinstance(entry[0], str) and entry[0] not in WIDGET_TYPES]
    names = getattr(node_cls, "RETURN_NAMES", None) or node_cls.RETURN_TYPES
    return inputs, list(zip(names, node_cls.RETURN_TYPES))


def slots(node_type: str) -> tuple[list, list]:
    if node_type in CORE_SLOTS:
        return CORE_SLOTS[node_type]
    return node_slots(load_pack().NODE_CLASS_MAPPINGS[node_type])


def load(nid, pos):
    return (nid, "SGS_LoadStyleGAN", pos, [CHECKPOINT, "auto", "G_ema", "auto", "", ""], {})


def sample(nid, pos, gen, seed, batch, space="w", psi=0.7):
    return (nid, "SGS_SampleLatent", pos, [seed, "fixed", batch, space, psi, 0, "nvidia", "", 0], {"generator": gen})


def synthesize(nid, pos, gen, lat):
    return (nid, "SGS_Synthesize", pos, ["const", 0, "fixed", 4], {"generator": gen, "latent": lat})


def build(nodes, title: str) -> dict:
    links, out_links = [], {}
    ui_nodes = []
    for order, (nid, ntype, pos, widgets, inputs) in enumerate(nodes):
        in_slots, _ = slots(ntype)
        ui_inputs = []
        for index, (name, typ, optional) in enumerate(in_slots):
            link_id = None
            if name in inputs:
                src, slot = inputs[name]
                link_id = len(links) + 1
                links.append([link_id, src, slot, nid, index, typ])
                out_links.setdefault((src, slot), []).append(link_id)
            entry = {"name": name, "type": typ, "link": link_id}
            if optional:
                entry["shape"] = 7
            ui_inputs.append(entry)
        ui_nodes.append({"id": nid, "type": ntype, "pos": pos, "size": SIZES.get(ntype, DEFAULT_SIZE), "flags": {},
                         "order": order, "mode": 0, "inputs": ui_inputs, "outputs": [],
                         "properties": {"Node name for S&R": ntype}, "widgets_values": widgets})
    for node, (nid, ntype, *_rest) in zip(ui_nodes, nodes):
        node["outputs"] = [{"name": name, "type": typ, "links": out_links.get((nid, slot), []), "slot_index": slot}
                           for slot, (name, typ) in enumerate(slots(ntype)[1])]
    return {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {"title": title}, "version": 0.4}


WORKFLOWS = {
    "generate_and_style_mix": ("Generate four faces, then give them the coarse styles (pose, face shape) of "
                               "another seed", [
        load(1, [40, 60]),
        sample(2, [400, 60], (1, 0), 0, 4),
        synthesize(3, [760, 60], (1, 0), (2, 0)),
        (4, "SaveImage", [1100, 60], ["stylegan/samples"], {"images": (3, 0)}),
        sample(5, [400, 360], (1, 0), 100, 1),
        (6, "SGS_StyleMix", [760, 260], ["coarse", "0-3"], {"generator": (1, 0), "base": (2, 0), "style": (5, 0)}),
        synthesize(7, [760, 460], (1, 0), (6, 0)),
        (8, "SaveImage", [1100, 520], ["stylegan/style_mix"], {"images": (7, 0)}),
        (9, "SGS_SaveLatent", [760, 640], ["latents/style_mix"], {"latent": (6, 0)}),
    ]),
    "interpolation_video": ("A latent walk: slerp between two seeds in Z, rendered as video frames", [
        load(1, [40, 60]),
        sample(2, [400, 60], (1, 0), 0, 1, space="z"),
        sample(3, [400, 360], (1, 0), 1, 1, space="z"),
        (4, "SGS_InterpolateLatents", [760, 60], [48, "auto", 0, 0], {"latent_a": (2, 0), "latent_b": (3, 0)}),
        synthesize(5, [760, 300], (1, 0), (4, 0)),
        (6, "SaveAnimatedWEBP", [1100, 60], ["stylegan/walk", 24.0, False, 90, "default"], {"images": (5, 0)}),
    ]),
    "invert_and_edit": ("Edit your own photo: align the face, invert it (II2S), walk toward a sampled face, and "
                        "paste each frame back into the photo", [
        load(1, [40, 60]),
        (2, "LoadImage", [40, 460], [PHOTO, "image"], {}),
        (3, "SGS_AlignFace", [400, 60], ["auto", 1024, 0, "", 4096, True, True],
         {"image": (2, 0), "generator": (1, 0)}),
        (4, "SGS_InvertImage", [780, 60], ["ii2s", 0, 0, "fixed", "fit inside mask", 0.0, 350, 10],
         {"generator": (1, 0), "image": (3, 0)}),
        (5, "SaveImage", [1160, 460], ["stylegan/reconstruction"], {"images": (4, 2)}),
        sample(6, [400, 440], (1, 0), 7, 1),
        (7, "SGS_InterpolateLatents", [1160, 60], [8, "auto", 0, 0],
         {"latent_a": (4, 0), "latent_b": (6, 0), "generator": (1, 0)}),
        synthesize(8, [1520, 60], (4, 1), (7, 0)),
        (9, "SGS_UnalignFace", [1520, 480], [0.1], {"original": (2, 0), "edited": (8, 0), "transform": (3, 1)}),
        (10, "SaveImage", [1880, 60], ["stylegan/invert_edit"], {"images": (9, 0)}),
    ]),
    "clip_edit_photo": ("Edit your own photo with words: align and invert the face (II2S), then StyleCLIP latent "
                        "optimisation toward a text, pasted back into the photo", [
        load(1, [40, 60]),
        (2, "LoadImage", [40, 460], [PHOTO, "image"], {}),
        (3, "SGS_AlignFace", [400, 60], ["auto", 1024, 0, "", 4096, True, True],
         {"image": (2, 0), "generator": (1, 0)}),
        (4, "SGS_InvertImage", [780, 60], ["ii2s", 0, 0, "fixed", "fit inside mask", 0.0, 350, 10],
         {"generator": (1, 0), "image": (3, 0)}),
        (5, "SaveImage", [780, 460], ["stylegan/reconstruction"], {"images": (4, 2)}),
        (6, "SGS_LoadCLIP", [400, 460], ["ViT-B-32", "auto (by tag: models folder, else download)", "openai", "auto",
                                         "fp32"], {}),
        (7, "SGS_CLIPLatentOptimize", [1160, 60], ["a face with a big smile", "w+", 300, 0.008, "", 0.0, 0.1, True, 10],
         {"generator": (4, 1), "latent": (4, 0), "clip": (6, 0)}),
        (8, "SGS_UnalignFace", [1560, 60], [0.1], {"original": (2, 0), "edited": (7, 1), "transform": (3, 1)}),
        (9, "SaveImage", [1900, 60], ["stylegan/clip_edit"], {"images": (8, 0)}),
    ]),
    "global_direction_sweep": ("StyleCLIP global directions: precompute once per model (cached next to the "
                               "checkpoint), then a text edit in milliseconds, swept from -alpha to +alpha as a batch", [
        load(1, [40, 60]),
        (2, "SGS_LoadCLIP", [40, 300], ["ViT-B-32", "auto (by tag: models folder, else download)", "openai", "auto",
                                        "fp32"], {}),
        (3, "SGS_ComputeGlobalDirections", [400, 60], [100, 100000, "all conv layers", "none (compute)", 32],
         {"generator": (1, 0), "clip": (2, 0)}),
        sample(4, [400, 340], (1, 0), 1, 1),
        (5, "SGS_GlobalDirectionEdit", [780, 60], ["a smiling face", "a face", 6.0, 0.15, 7],
         {"generator": (1, 0), "latent": (4, 0), "clip": (2, 0), "directions": (3, 0)}),
        synthesize(6, [1160, 60], (1, 0), (5, 0)),
        (7, "SaveImage", [1500, 60], ["stylegan/global_direction_sweep"], {"images": (6, 0)}),
    ]),
    "latent_mapper_edit": ("A StyleCLIP latent mapper (StyleCLIP's published mohawk.pt, or one from Train Latent "
                           "Mapper) applied to two sampled faces, its strength swept from 0 to 1 in 5 frames", [
        load(1, [40, 60]),
        (2, "SGS_LoadLatentMapper", [40, 300], ["mohawk.pt"], {}),
        sample(3, [400, 60], (1, 0), 1, 2),
        (4, "SGS_ApplyLatentMapper", [760, 60], [1.0, 5], {"generator": (1, 0), "latent": (3, 0), "mapper": (2, 0)}),
        synthesize(5, [1100, 60], (1, 0), (4, 0)),
        (6, "SaveImage", [1440, 60], ["stylegan/latent_mapper"], {"images": (5, 0)}),
    ]),
}


def main() -> None:
    out = REPO / "example_workflows"
    out.mkdir(exist_ok=True)
    for name, (title, nodes) in WORKFLOWS.items():
        (out / f"{name}.json").write_text(json.dumps(build(nodes, title), indent=1) + "\n")
        print(f"wrote {out / name}.json")


if __name__ == "__main__":
    main()
