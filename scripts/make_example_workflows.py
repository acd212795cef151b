"""Write the UI-format example workflows in example_workflows/ (and their template titles) from compact descriptions.

A workflow is a list of steps; each step is a group (a short title) holding a Note that explains it and its nodes,
stacked in a column. Steps are laid out left to right, so no node overlaps another or a group border. A node is
(id, type, {widget name: value}, {input name: (source id, output slot)}); the pack's widget values are filled in
from each node's schema (defaults, then the given values), in the order ComfyUI's frontend creates the widgets
(required then optional inputs, with the extra 'control after generate' value after `seed` / `noise_seed`), so
a new input (e.g. `preset`) gets its default and a value for an input a node does not have is dropped. Files a
workflow needs are declared the way ComfyUI's missing-model dialog reads them: the loader's
`properties.models = [{name, url, directory}]` (where its widget shows the file name) and the workflow's top-level
`models` (for files no widget names: CLIP and perceptual weights).

Template names: ComfyUI's frontend (1.27.x, and newer ones as of 2026) shows a custom pack's template by its file
name, with the file name (`_` and `-` as spaces) as its description, and lists them in the server's order (an
unsorted glob); only the category is translated (`templateWorkflows.category.<pack folder>` in the pack's
`locales/<lang>/main.json`, served by ComfyUI's /i18n). So the file names say what each example does (the offline
ones start with 01..04 and end in `_no_download`), this script writes the category name for the folder names in
TEMPLATE_MODULES, and each workflow carries a title and a description in `extra` (for users and for frontends
that will read them).

Run after changing a node's inputs, then check the result with `pytest tests/test_workflows.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from demo import load_pack  # noqa: E402  (the pack imported as ComfyUI imports it)

CHECKPOINT = "stylegan2-ffhq-1024x1024.pkl"  # NVIDIA's FFHQ model (the README's first download)
PHOTO = "face.jpg"  # the photo Load Image starts with: the user picks their own
SD_CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"  # the SD1.5 checkpoint of ComfyUI's own img2img template
# The folder names the pack is installed under (git clone / ComfyUI-Manager): the frontend's translation key for
# the template category includes it.
TEMPLATE_MODULES = ("comfyui-stylegan-studio", "ComfyUI-StyleGAN-Studio")
PRESET_COUNTS = {"num_steps", "num_images", "steps"}  # counts a preset sets (the inputs stay as overrides)
PRESET = "quick"  # optimising nodes with a `preset` input run their quick preset in the examples

# Downloads, as ComfyUI's missing-model dialog reads them: {name, url, directory (a ComfyUI model folder)}.
FFHQ = {"name": CHECKPOINT, "directory": "stylegan",
        "url": "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/" + CHECKPOINT}
CLIP_B32 = {"name": "ViT-B-32-openai.safetensors", "directory": "text_encoders",  # open_clip's ViT-B-32 'openai'
            "url": "https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/"
                   "open_clip_model.safetensors"}
LPIPS_VGG = [  # what II2S/the projector load from models/perceptual (core/losses/perceptual.py)
    {"name": "vgg16-397923af.pth", "directory": "perceptual",
     "url": "https://download.pytorch.org/models/vgg16-397923af.pth"},
    {"name": "lpips_vgg.pth", "directory": "perceptual",
     "url": "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"},
]
VGG19 = {"name": "vgg19-dcbb9e9d.pth", "directory": "perceptual",  # Neural Style's backbone (torchvision's)
         "url": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"}
PAINTING = "painting.jpg"  # the style image Load Image starts with: the user picks their own
MOHAWK = {"name": "mohawk.pt", "directory": "latent_mappers",  # StyleCLIP's utils.py lists its published mappers
          "url": "https://drive.google.com/uc?id=1oMMPc8iQZ7dhyWavZ7VNWLwzf9aX4C09"}
E4E_FFHQ = {"name": "e4e_ffhq_encode.pt", "directory": "encoders",  # the e4e README's "FFHQ Inversion" link
            "url": "https://drive.google.com/file/d/1cUv_reLE6k3604or78EranS7XzuVMWeO/view?usp=sharing"}
# Face parsers: Load Face Parser's 'auto' entries find these names in models/face_parsing, else download them
# (core/models/face_parsing/parser.py: HUB_FILES, HairFastGAN's mirror of both BiSeNet files).
BISENET19 = {"name": "79999_iter.pth", "directory": "face_parsing",
             "url": "https://huggingface.co/AIRI-Institute/HairFastGAN/resolve/main/pretrained_models/BiSeNet/"
                    "face_parsing_79999_iter.pth"}
BARBERSHOP16 = {"name": "seg.pth", "directory": "face_parsing",
                "url": "https://huggingface.co/AIRI-Institute/HairFastGAN/resolve/main/pretrained_models/BiSeNet/"
                       "seg.pth"}
PARSER_BISENET19 = "auto: BiSeNet 79999_iter.pth (19 classes, bisenet19)"      # Load Face Parser's auto entries
PARSER_BARBERSHOP16 = "auto: Barbershop seg.pth (16 classes, barbershop16)"
SD15 = {"name": SD_CHECKPOINT, "directory": "checkpoints",
        "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/" + SD_CHECKPOINT}

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}  # inputs the frontend shows as widgets (and combos)
# ComfyUI core nodes used below: link inputs [(name, type, optional)], outputs [(name, type)] and widget names.
CORE_NODES = {
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")], ["image", "upload"]),
    "SaveImage": ([("images", "IMAGE", False)], [], ["filename_prefix"]),
    "SaveAnimatedWEBP": ([("images", "IMAGE", False)], [], ["filename_prefix", "fps", "lossless", "quality",
                                                             "method"]),
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], ["ckpt_name"]),
    "CLIPTextEncode": ([("clip", "CLIP", False)], [("CONDITIONING", "CONDITIONING")], ["text"]),
    "ImageScale": ([("image", "IMAGE", False)], [("IMAGE", "IMAGE")], ["upscale_method", "width", "height", "crop"]),
    "VAEEncode": ([("pixels", "IMAGE", False), ("vae", "VAE", False)], [("LATENT", "LATENT")], []),
    "KSampler": ([("model", "MODEL", False), ("positive", "CONDITIONING", False),
                  ("negative", "CONDITIONING", False), ("latent_image", "LATENT", False)], [("LATENT", "LATENT")],
                 ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"]),
    "VAEDecode": ([("samples", "LATENT", False), ("vae", "VAE", False)], [("IMAGE", "IMAGE")], []),
    "ImageToMask": ([("image", "IMAGE", False)], [("MASK", "MASK")], ["channel"]),
    "MaskToImage": ([("mask", "MASK", False)], [("IMAGE", "IMAGE")], []),
    "Note": ([], [], ["text"]),
}
# Node sizes [w, h] (the body below the ~30 px title bar). At least what the frontend computes for the node, so
# loading does not grow it into a neighbour; nodes that show images get room for them.
# Optimising nodes also get room for what they show while and after they run (estimate, status line, buttons,
# the live image, the report), Load StyleGAN for its info text: the browser test checks nothing overlaps after a run.
SIZES = {"SGS_DemoGenerator": [320, 150], "SGS_LoadStyleGAN": [340, 250], "SGS_SampleLatent": [320, 250],
         "SGS_Synthesize": [320, 330], "SGS_StyleMix": [320, 130], "SGS_InterpolateLatents": [320, 190],
         "SGS_SaveLatent": [320, 80], "SaveImage": [420, 420], "SaveAnimatedWEBP": [420, 470],
         "SGS_AlignFace": [340, 330], "SGS_InvertImage": [360, 700], "SGS_UnalignFace": [320, 150],
         "LoadImage": [320, 380], "SGS_LoadCLIP": [340, 170], "SGS_CLIPLatentOptimize": [380, 700],
         "SGS_ComputeGlobalDirections": [360, 360], "SGS_GlobalDirectionEdit": [360, 300],
         "SGS_LoadLatentMapper": [320, 80], "SGS_ApplyLatentMapper": [320, 130],
         "SGS_TrainWeightShift": [400, 920], "SGS_SaveWeightShift": [340, 100], "SGS_WeightShiftSweep": [340, 420],
         "CheckpointLoaderSimple": [320, 100], "CLIPTextEncode": [340, 150], "ImageScale": [320, 130],
         "VAEEncode": [220, 50], "VAEDecode": [220, 50], "KSampler": [320, 270],
         "SGS_NeuralStyle": [380, 940], "ImageToMask": [320, 80],
         "SGS_LoadEncoder": [340, 200], "SGS_EncodeImage": [340, 360],
         "SGS_LoadFaceParser": [380, 170], "SGS_FaceParse": [340, 170], "MaskToImage": [220, 50],
         "SGS_SegmentComposite": [400, 1000],
         "SGS_KeyframeWalk": [340, 230], "SGS_SaveImageWithLatent": [420, 420],
         "SGS_DirectionEdit": [360, 700], "SGS_DirectionSweep": [340, 470],
         "SGS_DiscoverSeFaDirections": [340, 290], "SGS_DiscoverGANSpaceDirections": [340, 320]}
DEFAULT_SIZE = [320, 200]
NOTE_WIDTH = 320
TITLE_H = 30           # a node's title bar, drawn above its `pos`
GROUP_HEADER = 40      # a group's title strip (font 24)
PAD, GAP, COLUMN_GAP = 12, 24, 40
GROUP_COLOR = "#3f789e"


def schema(node_type: str):
    return load_pack().NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES()


def slots(node_type: str) -> tuple[list, list]:
    """A node's link inputs [(name, type, optional)] (every input that is not a widget, in the frontend's order:
    required then optional) and outputs [(name, type)]."""
    if node_type in CORE_NODES:
        return CORE_NODES[node_type][:2]
    cls = load_pack().NODE_CLASS_MAPPINGS[node_type]
    spec = cls.INPUT_TYPES()
    inputs = [(name, entry[0], group == "optional") for group in ("required", "optional")
              for name, entry in spec.get(group, {}).items()
              if isinstance(entry[0], str) and entry[0] not in WIDGET_TYPES]
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    return inputs, list(zip(names, cls.RETURN_TYPES))


def widget_values(node_type: str, values: dict) -> list:
    """The node's widgets_values: each widget's given value, else its default, in the frontend's order."""
    if node_type in CORE_NODES:
        names = CORE_NODES[node_type][2]
        missing = [n for n in names if n not in values]
        assert not missing and set(values) <= set(names), (node_type, missing, values)
        return [values[n] for n in names]
    out, spec = [], schema(node_type)
    for group in ("required", "optional"):
        for name, entry in spec.get(group, {}).items():
            kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
            if not isinstance(kind, (list, tuple)) and kind not in WIDGET_TYPES or opts.get("forceInput"):
                continue
            if name in values:
                value = values[name]
            elif "default" in opts:
                value = opts["default"]
            else:
                value = list(kind)[0] if isinstance(kind, (list, tuple)) else {"INT": 0, "FLOAT": 0.0,
                                                                               "STRING": "", "BOOLEAN": False}[kind]
            out.append(value)
            if opts.get("control_after_generate") or name in ("seed", "noise_seed"):
                out.append("fixed")  # the examples are reproducible: never re-seed on queue
    return out


def has_input(node_type: str, name: str) -> bool:
    spec = schema(node_type)
    return any(name in spec.get(g, {}) for g in ("required", "optional"))


def optimising(node_type: str, values: dict) -> dict:
    """An optimising node's values with the quick preset, where the node has a `preset` input: its step counts
    are then left at their defaults (0 = the preset's count)."""
    if not has_input(node_type, "preset"):
        return values
    return {**{k: v for k, v in values.items() if k not in PRESET_COUNTS}, "preset": PRESET}


# --- compact node constructors -------------------------------------------------------------------------------------
def N(nid, ntype, values=None, inputs=None, models=None):
    return {"id": nid, "type": ntype, "values": values or {}, "inputs": inputs or {}, "models": models or []}


def demo(nid, seed=0, resolution=128):
    return N(nid, "SGS_DemoGenerator", {"arch": "stylegan2", "resolution": resolution, "seed": seed})


def load(nid):
    return N(nid, "SGS_LoadStyleGAN", {"ckpt_name": CHECKPOINT}, models=[FFHQ])


def sample(nid, gen, seed, batch, space="w", psi=0.7):
    return N(nid, "SGS_SampleLatent", {"seed": seed, "batch_size": batch, "space": space, "truncation_psi": psi},
             {"generator": gen})


def synthesize(nid, gen, lat):
    return N(nid, "SGS_Synthesize", {"noise_mode": "const"}, {"generator": gen, "latent": lat})


def save(nid, images, prefix):
    return N(nid, "SaveImage", {"filename_prefix": prefix}, {"images": images})


def load_photo(nid):
    return N(nid, "LoadImage", {"image": PHOTO, "upload": "image"})


def align(nid, image, gen):
    return N(nid, "SGS_AlignFace", {"landmarks_source": "auto", "output_size": 1024}, {"image": image, "generator": gen})


def invert(nid, gen, image):
    return N(nid, "SGS_InvertImage", optimising("SGS_InvertImage", {"method": "ii2s", "num_steps": 0}),
             {"generator": gen, "image": image}, models=LPIPS_VGG)


def load_photo_named(nid, name):
    return N(nid, "LoadImage", {"image": name, "upload": "image"})


def load_face_parser(nid, choice, model):
    return N(nid, "SGS_LoadFaceParser", {"parser_name": choice, "device": "auto"}, models=[model])


def load_clip(nid):
    return N(nid, "SGS_LoadCLIP", {"model_name": "ViT-B-32", "pretrained_tag": "openai"}, models=[CLIP_B32])


# A step: (group title, note text, [nodes]).
DEMO_NOTE = ("Demo Generator builds a small StyleGAN with random (seeded) weights: nothing to download, runs on "
             "CPU in seconds. Its images are abstract textures, not faces. For faces, replace it with Load StyleGAN "
             f"and {CHECKPOINT} (see the templates that use it).")

WORKFLOWS = {
    "01_first_image_no_download": dict(
        title="First image (no download)",
        description="Four images from seeds with the Demo Generator: runs offline on CPU in seconds. Swap in Load "
                    "StyleGAN + the FFHQ checkpoint for faces.",
        steps=[
            ("1 Generator", DEMO_NOTE, [demo(1)]),
            ("2 Sample", "Sample Latent turns seeds into latents (w, truncated by psi toward the average). Seed "
                         "N and batch 4 give seeds N..N+3; the seed stays fixed, so each run gives the same images.",
             [sample(2, (1, 0), 0, 4)]),
            ("3 Render and save", "Synthesize renders the latents; Save Image writes them to "
                                  "output/stylegan/demo_samples.",
             [synthesize(3, (1, 0), (2, 0)), save(4, (3, 0), "stylegan/demo_samples")]),
        ]),
    "02_style_mix_no_download": dict(
        title="Style mixing (no download)",
        description="Four images, then their coarse styles swapped for another seed's, with the Demo Generator: "
                    "offline, CPU, seconds.",
        steps=[
            ("1 Generator", DEMO_NOTE, [demo(1)]),
            ("2 Sample", "The base images (4 seeds) and one style seed.",
             [sample(2, (1, 0), 0, 4), sample(5, (1, 0), 100, 1)]),
            ("3 Mix", "Style Mix takes the coarse layers (0-3: pose, shape) from the style seed and the rest "
                      "from each base image; Save Latent keeps the mixed latents for later.",
             [N(6, "SGS_StyleMix", {"layers": "coarse"}, {"generator": (1, 0), "base": (2, 0), "style": (5, 0)}),
              N(9, "SGS_SaveLatent", {"filename_prefix": "latents/demo_style_mix"}, {"latent": (6, 0)})]),
            ("4 Render", "The base images and the mixed ones.",
             [synthesize(3, (1, 0), (2, 0)), synthesize(7, (1, 0), (6, 0))]),
            ("5 Save", "output/stylegan/demo_samples and output/stylegan/demo_style_mix.",
             [save(4, (3, 0), "stylegan/demo_samples"), save(8, (7, 0), "stylegan/demo_style_mix")]),
        ]),
    "03_latent_walk_video_no_download": dict(
        title="Latent walk video (no download)",
        description="A slerp walk between two seeds as 24 frames of an animated WebP, with the Demo Generator: "
                    "offline, CPU, seconds.",
        steps=[
            ("1 Generator", DEMO_NOTE, [demo(1)]),
            ("2 Two seeds", "Two latents in Z (the space where slerp is the natural path).",
             [sample(2, (1, 0), 0, 1, space="z"), sample(3, (1, 0), 1, 1, space="z")]),
            ("3 Walk", "Interpolate Latents makes 24 frames from the first to the second; Synthesize renders "
                       "them as a batch.",
             [N(4, "SGS_InterpolateLatents", {"num_frames": 24, "method": "auto"}, {"latent_a": (2, 0),
                                                                                     "latent_b": (3, 0)}),
              synthesize(5, (1, 0), (4, 0))]),
            ("4 Video", "The frames as an animated WebP in output/stylegan/demo_walk.",
             [N(6, "SaveAnimatedWEBP", {"filename_prefix": "stylegan/demo_walk", "fps": 12.0, "lossless": False,
                                        "quality": 90, "method": "default"}, {"images": (5, 0)})]),
        ]),
    "04_edit_toward_another_no_download": dict(
        title="Edit toward another image (no download)",
        description="Edit one image toward another on the coarse layers only (pose and shape change, colours "
                    "stay), in 6 steps, with the Demo Generator: offline, CPU, seconds.",
        steps=[
            ("1 Generator", DEMO_NOTE, [demo(1)]),
            ("2 Source and target", "The image to edit (seed 3) and the one whose shape it moves toward "
                                    "(seed 11), in W.",
             [sample(2, (1, 0), 3, 1), sample(3, (1, 0), 11, 1)]),
            ("3 Edit", "Interpolate Latents on layers 0-3 only (layer_end 4 is one past the last): the coarse "
                       "styles move toward the target, the finer ones (colour, texture) keep the source's. Frame 0 "
                       "is the source.",
             [N(4, "SGS_InterpolateLatents", {"num_frames": 6, "method": "auto", "layer_start": 0, "layer_end": 4},
                {"latent_a": (2, 0), "latent_b": (3, 0), "generator": (1, 0)}),
              N(7, "SGS_SaveLatent", {"filename_prefix": "latents/demo_edit"}, {"latent": (4, 0)})]),
            ("4 Render and save", "The 6 edit steps, saved to output/stylegan/demo_edit.",
             [synthesize(5, (1, 0), (4, 0)), save(6, (5, 0), "stylegan/demo_edit")]),
        ]),
    "latent_keyframe_walk_no_download": dict(
        title="Keyframe walk video through several seeds (no download)",
        description="Four seeds as keyframes, a looping eased walk through them as a 32-frame animated WebP, and the "
                    "keyframes saved as PNGs carrying their latents. Demo Generator: offline, CPU, seconds.",
        steps=[
            ("1 Generator", DEMO_NOTE, [demo(1)]),
            ("2 Keyframes", "Sample Latent's seed_list gives the keyframes, in walk order: four seeds in W, psi 0.7.",
             [N(2, "SGS_SampleLatent", {"seed": 0, "batch_size": 1, "space": "w", "truncation_psi": 0.7,
                                        "seed_list": "3,17,42,71"}, {"generator": (1, 0)})]),
            ("3 Walk", "Keyframe Walk makes 8 frames from each keyframe to the next and loops back from the last to "
                       "the first (4 x 8 = 32 frames; the first is not repeated, so the video loops smoothly). "
                       "ease-in-out slows near each keyframe; Synthesize renders the frames.",
             [N(3, "SGS_KeyframeWalk", {"frames_per_segment": 8, "loop": True, "easing": "ease-in-out",
                                        "method": "auto"}, {"keyframes": (2, 0)}),
              synthesize(4, (1, 0), (3, 0))]),
            ("4 Video", "The frames as a looping animated WebP in output/stylegan/keyframe_walk (any video node "
                        "works too).",
             [N(7, "SaveAnimatedWEBP", {"filename_prefix": "stylegan/keyframe_walk", "fps": 12.0, "lossless": False,
                                        "quality": 90, "method": "default"}, {"images": (4, 0)})]),
            ("5 Keyframes with latents", "The keyframes saved as PNGs that carry their latents and generator "
                                         "identity: Load Image with Latent reads image and latent back (the latent "
                                         "bit for bit), e.g. to walk from them again later.",
             [synthesize(5, (1, 0), (2, 0)),
              N(6, "SGS_SaveImageWithLatent", {"filename_prefix": "stylegan/keyframe"}, {"images": (5, 0),
                                                                                          "latent": (2, 0)})]),
        ]),
    "generate_and_style_mix": dict(
        title="Faces and style mixing (FFHQ)",
        description=f"Four faces from seeds and their coarse styles swapped with another seed's. Needs {CHECKPOINT} "
                    "in models/stylegan.",
        steps=[
            ("1 Load the model", f"Needs {CHECKPOINT} (NVIDIA, 364 MB) in models/stylegan; ComfyUI's "
                                 "missing-model dialog names it and its URL.", [load(1)]),
            ("2 Sample", "Four faces (seeds 0-3) and one style seed (100), psi 0.7.",
             [sample(2, (1, 0), 0, 4), sample(5, (1, 0), 100, 1)]),
            ("3 Mix", "Coarse layers (pose, face shape) from seed 100; Save Latent keeps the result.",
             [N(6, "SGS_StyleMix", {"layers": "coarse"}, {"generator": (1, 0), "base": (2, 0), "style": (5, 0)}),
              N(9, "SGS_SaveLatent", {"filename_prefix": "latents/style_mix"}, {"latent": (6, 0)})]),
            ("4 Render", "The faces and the mixed faces.",
             [synthesize(3, (1, 0), (2, 0)), synthesize(7, (1, 0), (6, 0))]),
            ("5 Save", "output/stylegan/samples and output/stylegan/style_mix.",
             [save(4, (3, 0), "stylegan/samples"), save(8, (7, 0), "stylegan/style_mix")]),
        ]),
    "interpolation_video": dict(
        title="Face walk video (FFHQ)",
        description=f"A slerp walk between two seeds as 48 frames (animated WebP). Needs {CHECKPOINT}.",
        steps=[
            ("1 Load the model", f"Needs {CHECKPOINT} in models/stylegan.", [load(1)]),
            ("2 Two seeds", "Two latents in Z.", [sample(2, (1, 0), 0, 1, space="z"),
                                                  sample(3, (1, 0), 1, 1, space="z")]),
            ("3 Walk", "48 frames from the first face to the second, rendered as a batch.",
             [N(4, "SGS_InterpolateLatents", {"num_frames": 48, "method": "auto"}, {"latent_a": (2, 0),
                                                                                     "latent_b": (3, 0)}),
              synthesize(5, (1, 0), (4, 0))]),
            ("4 Video", "An animated WebP in output/stylegan/walk.",
             [N(6, "SaveAnimatedWEBP", {"filename_prefix": "stylegan/walk", "fps": 24.0, "lossless": False,
                                        "quality": 90, "method": "default"}, {"images": (5, 0)})]),
        ]),
    "hair_transfer": dict(
        title="Hair transfer between your photos (FFHQ + Barbershop)",
        description=f"Segment Composite (Barbershop): photo 2's hairstyle in photo 3's hair colour on photo 1's "
                    f"face, pasted back. Needs {CHECKPOINT}, LPIPS-VGG, the face parser seg.pth and three photos.",
        steps=[
            ("1 Model and photos", f"Needs {CHECKPOINT} in models/stylegan. Three photos: {PHOTO} (the face to keep), "
                                   "hair_shape.jpg (the hairstyle) and hair_colour.jpg (the hair colour and texture) "
                                   "are placeholder names: pick your own.",
             [load(1), load_photo(2), load_photo_named(3, "hair_shape.jpg"), load_photo_named(4, "hair_colour.jpg")]),
            ("2 Align", "Align Face crops each face the way FFHQ was aligned, at the generator's resolution "
                        "(landmarks: auto uses whatever detector is installed).",
             [align(5, (2, 0), (1, 0)), align(6, (3, 0), (1, 0)), align(7, (4, 0), (1, 0))]),
            ("3 Face parser", "Load Face Parser: Barbershop's own BiSeNet (seg.pth in models/face_parsing, "
                              "downloaded on first use when online). It names the region ('hair') and drives the "
                              "alignment of the hairstyle to the face. Any MASK can drive the region instead "
                              "(region_mask).",
             [load_face_parser(8, PARSER_BARBERSHOP16, BARBERSHOP16)]),
            ("4 Segment Composite", "Embeds the three faces (W+ and FS; cached, so a second run with the same photos "
                                    "starts at the alignment), aligns the hairstyle of photo 2 to the face of photo "
                                    "1, mixes their features and blends in the colour of photo 3. The quick preset; "
                                    "reference is Barbershop's own step counts. The debug image shows the stages.",
             [N(9, "SGS_SegmentComposite", optimising("SGS_SegmentComposite", {"region_classes": "hair",
                                                                               "mode": "realistic"}),
                {"generator": (1, 0), "base": (5, 0), "reference": (6, 0), "appearance": (7, 0), "parser": (8, 0)},
                models=LPIPS_VGG),
              save(10, (9, 3), "stylegan/hair_transfer_stages")]),
            ("5 Paste back", "Unalign Face pastes the composite back into photo 1.",
             [N(11, "SGS_UnalignFace", {"feather": 0.1}, {"original": (2, 0), "edited": (9, 0), "transform": (5, 1)}),
              save(12, (11, 0), "stylegan/hair_transfer")]),
        ]),
    "face_parse_and_fs_invert": dict(
        title="Parse your photo's face and invert it in FS space (FFHQ)",
        description=f"Face Parse (hair mask, classes in colour), then Invert Image ii2s+fs: an fs latent closer to "
                    f"the photo. Needs {CHECKPOINT}, LPIPS-VGG, BiSeNet 79999_iter.pth and a photo.",
        steps=[
            ("1 Model and photo", f"Needs {CHECKPOINT} in models/stylegan. Pick your photo in Load Image ({PHOTO} is "
                                  f"a placeholder name).", [load(1), load_photo(2)]),
            ("2 Align", "Align Face crops the face the way FFHQ was aligned, at the generator's resolution.",
             [align(3, (2, 0), (1, 0))]),
            ("3 Parse", "Load Face Parser: BiSeNet 79999_iter.pth (models/face_parsing, downloaded on first use when "
                        "online). Face Parse gives the MASK of the named classes (here hair) and every class in its "
                        "own colour.",
             [load_face_parser(4, PARSER_BISENET19, BISENET19),
              N(5, "SGS_FaceParse", {"classes": "hair"}, {"face_parser": (4, 0), "image": (3, 0)}),
              N(6, "MaskToImage", {}, {"mask": (5, 0)}),
              save(7, (6, 0), "stylegan/hair_mask"), save(8, (5, 1), "stylegan/face_classes")]),
            ("4 Invert in FS space", "Invert Image, method ii2s+fs: II2S, then the FS embedding of the 32 px "
                                     "features and the later codes (needs the LPIPS-VGG weights in "
                                     "models/perceptual). Save Latent keeps the fs latent (Load Latent gives it to "
                                     "Segment Composite's base_latent).",
             [N(9, "SGS_InvertImage", optimising("SGS_InvertImage", {"method": "ii2s+fs", "num_steps": 0}),
                {"generator": (1, 0), "image": (3, 0)}, models=LPIPS_VGG),
              N(10, "SGS_SaveLatent", {"filename_prefix": "latents/fs_face"}, {"latent": (9, 0)})]),
            ("5 Render and save", "Synthesize renders the fs latent; output/stylegan/fs_reconstruction.",
             [synthesize(11, (9, 1), (9, 0)), save(12, (11, 0), "stylegan/fs_reconstruction")]),
        ]),
    "invert_and_edit": dict(
        title="Edit your photo: invert and morph (FFHQ)",
        description=f"Align your photo's face, invert it (II2S), walk toward a sampled face, paste each frame "
                    f"back. Needs {CHECKPOINT}, the LPIPS-VGG weights and a photo.",
        steps=[
            ("1 Model and photo", f"Needs {CHECKPOINT} in models/stylegan. Pick your photo in Load Image "
                                  f"({PHOTO} is a placeholder name).", [load(1), load_photo(2)]),
            ("2 Align", "Align Face crops the face the way FFHQ was aligned (landmarks: auto uses whatever "
                        "detector is installed, or type them into landmarks_json).", [align(3, (2, 0), (1, 0))]),
            ("3 Invert", "Invert Image finds the latent of the aligned face (II2S). Needs vgg16-397923af.pth and "
                         "lpips_vgg.pth in models/perceptual (downloaded on first use when online).",
             [invert(4, (1, 0), (3, 0)), save(5, (4, 2), "stylegan/reconstruction")]),
            ("4 Edit", "Walk in 8 frames from your face toward a sampled face (seed 7).",
             [sample(6, (1, 0), 7, 1),
              N(7, "SGS_InterpolateLatents", {"num_frames": 8, "method": "auto"},
                {"latent_a": (4, 0), "latent_b": (6, 0), "generator": (1, 0)}),
              synthesize(8, (4, 1), (7, 0))]),
            ("5 Paste back", "Unalign Face pastes each edited face back into the photo.",
             [N(9, "SGS_UnalignFace", {"feather": 0.1}, {"original": (2, 0), "edited": (8, 0),
                                                         "transform": (3, 1)}),
              save(10, (9, 0), "stylegan/invert_edit")]),
        ]),
    "clip_edit_photo": dict(
        title="Edit your photo with words (FFHQ + CLIP)",
        description=f"Align and invert your photo's face (II2S), StyleCLIP latent optimisation toward 'a face with "
                    f"a big smile', pasted back. Needs {CHECKPOINT}, CLIP ViT-B-32, LPIPS-VGG and a photo.",
        steps=[
            ("1 Model and photo", f"Needs {CHECKPOINT} in models/stylegan; pick your photo in Load Image.",
             [load(1), load_photo(2)]),
            ("2 Align and invert", "Align Face, then Invert Image (II2S; needs the LPIPS-VGG weights in "
                                   "models/perceptual).",
             [align(3, (2, 0), (1, 0)), invert(4, (1, 0), (3, 0))]),
            ("3 Text edit", "Load CLIP: ViT-B-32 'openai' (ViT-B-32-openai.safetensors in models/text_encoders, or "
                            "downloaded). CLIP Latent Optimize moves the latent toward the text.",
             [load_clip(6),
              N(7, "SGS_CLIPLatentOptimize", optimising("SGS_CLIPLatentOptimize", {
                  "text": "a face with a big smile", "space": "w+", "num_steps": 300, "l2_lambda": 0.008}),
                {"generator": (4, 1), "latent": (4, 0), "clip": (6, 0)})]),
            ("4 Results", "The reconstruction, and the edited face pasted back into the photo.",
             [save(5, (4, 2), "stylegan/reconstruction"),
              N(8, "SGS_UnalignFace", {"feather": 0.1}, {"original": (2, 0), "edited": (7, 1), "transform": (3, 1)}),
              save(9, (8, 0), "stylegan/clip_edit")]),
        ]),
    "global_direction_sweep": dict(
        title="Text edit by global directions (FFHQ + CLIP)",
        description=f"StyleCLIP global directions (computed once per model, cached), then 'a face' -> 'a smiling "
                    f"face' swept over 7 strengths. Needs {CHECKPOINT} and CLIP ViT-B-32.",
        steps=[
            ("1 Models", f"Needs {CHECKPOINT} (models/stylegan) and CLIP ViT-B-32 'openai' "
                         "(models/text_encoders, or downloaded).", [load(1), load_clip(2)]),
            ("2 Directions", "Compute Global Directions: once per model (slow: 100 images per channel), then "
                             "cached next to the checkpoint.",
             [N(3, "SGS_ComputeGlobalDirections", optimising("SGS_ComputeGlobalDirections", {
                 "num_images": 100, "num_samples": 100000, "layers": "all conv layers",
                 "reference_fs3": "none (compute)", "batch_size": 32}), {"generator": (1, 0), "clip": (2, 0)})]),
            ("3 Edit", "A sampled face edited 'a face' -> 'a smiling face', alpha -6..6 in 7 frames: "
                       "milliseconds per edit.",
             [sample(4, (1, 0), 1, 1),
              N(5, "SGS_GlobalDirectionEdit", {"target_text": "a smiling face", "neutral_text": "a face",
                                               "alpha": 6.0, "beta": 0.15, "sweep_frames": 7},
                {"generator": (1, 0), "latent": (4, 0), "clip": (2, 0), "directions": (3, 0)})]),
            ("4 Render and save", "output/stylegan/global_direction_sweep.",
             [synthesize(6, (1, 0), (5, 0)), save(7, (6, 0), "stylegan/global_direction_sweep")]),
        ]),
    "latent_mapper_edit": dict(
        title="Latent mapper edit (FFHQ + StyleCLIP mapper)",
        description=f"StyleCLIP's published mohawk.pt mapper applied to two sampled faces, strength 0 -> 1 in 5 "
                    f"frames. Needs {CHECKPOINT} and mohawk.pt in models/latent_mappers.",
        steps=[
            ("1 Models", f"Needs {CHECKPOINT} (models/stylegan) and mohawk.pt (models/latent_mappers: StyleCLIP's "
                         "published mapper, or your own from Train Latent Mapper).",
             [load(1), N(2, "SGS_LoadLatentMapper", {"mapper_name": "mohawk.pt"}, models=[MOHAWK])]),
            ("2 Sample", "Two faces (seeds 1, 2).", [sample(3, (1, 0), 1, 2)]),
            ("3 Apply", "The mapper's edit at strengths 0, 0.25 .. 1.",
             [N(4, "SGS_ApplyLatentMapper", {"strength": 1.0, "sweep_frames": 5},
                {"generator": (1, 0), "latent": (3, 0), "mapper": (2, 0)})]),
            ("4 Render and save", "output/stylegan/latent_mapper.",
             [synthesize(5, (1, 0), (4, 0)), save(6, (5, 0), "stylegan/latent_mapper")]),
        ]),
    "fast_photo_edit": dict(
        title="Fast photo edit: e4e encoder + text direction (FFHQ)",
        description=f"Align your photo's face, invert it with e4e (about a second), edit "
                    f"it toward 'a smiling face' (global directions), paste it back. Needs {CHECKPOINT}, "
                    f"e4e_ffhq_encode.pt, CLIP ViT-B-32.",
        steps=[
            ("1 Models and photo", f"Needs {CHECKPOINT} (models/stylegan), e4e_ffhq_encode.pt (models/encoders, "
                                   f"from the e4e README) and CLIP ViT-B-32 'openai'. Pick your photo in Load Image.",
             [load(1), N(2, "SGS_LoadEncoder", {"encoder_name": E4E_FFHQ["name"]}, models=[E4E_FFHQ]),
              load_clip(3), load_photo(4)]),
            ("2 Align and encode", "Align Face crops the face as FFHQ was aligned; Encode Image inverts it with e4e "
                                   "in one pass (for more fidelity: Invert Image, pti, with the encoder connected).",
             [align(5, (4, 0), (1, 0)),
              N(6, "SGS_EncodeImage", {}, {"generator": (1, 0), "encoder": (2, 0), "image": (5, 0)})]),
            ("3 Text edit", "Compute Global Directions once per model (slow, then cached); Global Direction Edit "
                            "moves the face toward 'a smiling face' in milliseconds.",
             [N(7, "SGS_ComputeGlobalDirections", optimising("SGS_ComputeGlobalDirections", {
                 "num_images": 100, "num_samples": 100000, "layers": "all conv layers",
                 "reference_fs3": "none (compute)", "batch_size": 16}), {"generator": (1, 0), "clip": (3, 0)}),
              N(8, "SGS_GlobalDirectionEdit", {"target_text": "a smiling face", "neutral_text": "a face",
                                               "alpha": 4.0, "beta": 0.15, "sweep_frames": 1},
                {"generator": (1, 0), "latent": (6, 0), "clip": (3, 0), "directions": (7, 0)})]),
            ("4 Paste back", "The reconstruction, and the edited face pasted back into the photo.",
             [save(9, (6, 1), "stylegan/e4e_reconstruction"), synthesize(10, (1, 0), (8, 0)),
              N(11, "SGS_UnalignFace", {"feather": 0.1}, {"original": (4, 0), "edited": (10, 0),
                                                          "transform": (5, 1)}),
              save(12, (11, 0), "stylegan/fast_photo_edit")]),
        ]),
    "weight_shift_edit": dict(
        title="Weight-shift edit of your photo (FFHQ + CLIP)",
        description=f"Align and invert your photo's face, train a weight shift of one conv layer toward 'a face with "
                    f"a big nose', render k -3..3 pasted back as a video. Needs {CHECKPOINT}, CLIP ViT-B-32, LPIPS-VGG.",
        steps=[
            ("1 Model and photo", f"Needs {CHECKPOINT} in models/stylegan; pick your photo in Load Image.",
             [load(1), load_photo(2)]),
            ("2 Align and invert", "Align Face, then Invert Image (II2S; needs the LPIPS-VGG weights in "
                                   "models/perceptual): the latent of your face.",
             [align(3, (2, 0), (1, 0)), invert(4, (1, 0), (3, 0))]),
            ("3 Train the shift", "Weight-Shift Edit (PRMU 2022): Train Weight Shift changes ONE convolution layer's "
                                  "weights (b16.conv1: face shape at 16 px) so the face matches 'a face with a big "
                                  "nose' relative to 'a face'; the latent stays. Load CLIP: ViT-B-32 'openai'. Save "
                                  "Weight Shift keeps it in output/weight_shifts (Load Weight Shift reads it back).",
             [load_clip(5),
              N(6, "SGS_TrainWeightShift", optimising("SGS_TrainWeightShift", {
                  "text": "a face with a big nose", "neutral_text": "a face", "layer": "b16.conv1",
                  "steps": 200}), {"generator": (4, 1), "clip": (5, 0), "latent": (4, 0)}),
              N(7, "SGS_SaveWeightShift", {"filename_prefix": "weight_shifts/big_nose"}, {"shift": (6, 0)})]),
            ("4 Sweep k", "Weight Shift k Sweep renders your face with W + k x for k = -3 .. 3 (7 frames): k = 0 "
                          "is your face, k > 0 the edit growing, k < 0 pushing the other way (switch two_sided on "
                          "in Train Weight Shift for a clean opposite edit).",
             [N(8, "SGS_WeightShiftSweep", {"k_min": -3.0, "k_max": 3.0, "frames": 7},
                {"generator": (4, 1), "latent": (4, 0), "shift": (6, 0)})]),
            ("5 Paste back, video", "Unalign Face pastes each frame back into the photo; an animated WebP in "
                                    "output/stylegan/weight_shift.",
             [N(9, "SGS_UnalignFace", {"feather": 0.1}, {"original": (2, 0), "edited": (8, 0), "transform": (3, 1)}),
              N(10, "SaveAnimatedWEBP", {"filename_prefix": "stylegan/weight_shift", "fps": 4.0, "lossless": False,
                                         "quality": 90, "method": "default"}, {"images": (9, 0)})]),
        ]),
    "neural_style": dict(
        title="Neural Style: a photo in a painting's style, in a mask",
        description="Gatys et al.'s neural style transfer (the paper's layers, L-BFGS) of a painting onto your "
                    "photo, only where a mask says. Needs VGG-19 (vgg19-dcbb9e9d.pth) in models/perceptual.",
        steps=[
            ("1 Photo and painting", f"Pick your photo ({PHOTO}) and a painting ({PAINTING}) in the two Load "
                                     "Image nodes.",
             [load_photo(1), N(2, "LoadImage", {"image": PAINTING, "upload": "image"})]),
            ("2 Mask", "Image To Mask (a ComfyUI node) makes a mask from the photo's red channel: the redder, the "
                       "more style. Use any MASK of the photo's size instead, e.g. one painted in the Mask Editor.",
             [N(3, "ImageToMask", {"channel": "red"}, {"image": (1, 0)})]),
            ("3 Neural Style", "gatys2016 (the paper: conv4_2 content, conv1_1..conv5_1 style, L-BFGS) at 128 px, "
                               "quick preset; raise size to 512 and the preset to balanced on a GPU. The picture "
                               "shows while it runs; Finish now keeps it.",
             [N(4, "SGS_NeuralStyle", optimising("SGS_NeuralStyle", {"method": "gatys2016", "size": 128,
                                                                      "steps": 0}),
                {"content": (1, 0), "style": (2, 0), "content_mask": (3, 0)}, models=[VGG19])]),
            ("4 Save", "output/stylegan/neural_style.", [save(5, (4, 0), "stylegan/neural_style")]),
        ]),
    "neural_style_stylegan_face": dict(
        title="Neural Style on a StyleGAN face (FFHQ)",
        description=f"A FFHQ face from StyleGAN painted in a painting's style, keeping the face's colours "
                    f"(luminance-only transfer). Needs {CHECKPOINT} and VGG-19 (vgg19-dcbb9e9d.pth).",
        steps=[
            ("1 StyleGAN face", f"Needs {CHECKPOINT} in models/stylegan. One face (seed 4, psi 0.7).",
             [load(1), sample(2, (1, 0), 4, 1), synthesize(3, (1, 0), (2, 0))]),
            ("2 Painting", f"Pick a painting ({PAINTING}).", [N(4, "LoadImage", {"image": PAINTING,
                                                                                "upload": "image"})]),
            ("3 Neural Style", "The tutorial's recipe (PyTorch's neural-style tutorial) at 256 px, colour "
                               "'luminance': the brush strokes of the painting, the colours of the face.",
             [N(5, "SGS_NeuralStyle", optimising("SGS_NeuralStyle", {"method": "tutorial", "size": 256,
                                                                      "color": "luminance", "steps": 0}),
                {"content": (3, 0), "style": (4, 0)}, models=[VGG19])]),
            ("4 Save", "output/stylegan/neural_style_face.", [save(6, (5, 0), "stylegan/neural_style_face")]),
        ]),
    "directions_sweep_no_download": dict(
        title="Latent directions, live slider (no download)",
        description="SeFa and GANSpace directions of the Demo Generator (offline, CPU, seconds): Direction Edit "
                    "(after one run, drag its strength for a live preview) and sweeps as images and a WebP.",
        steps=[
            ("1 Generator", DEMO_NOTE, [demo(1, resolution=256)]),
            ("2 Discover", "SeFa factorises the style affines (no sampling: instant); GANSpace is a PCA of 10,000 "
                           "mapped w (seconds). Both save their directions in models/stylegan_directions, to reuse "
                           "with Load Directions.",
             [N(2, "SGS_DiscoverSeFaDirections", {"variant": "rosinality", "num": 16},
                {"generator": (1, 0)}),
              N(3, "SGS_DiscoverGANSpaceDirections", {"num_components": 16}, {"generator": (1, 0)})]),
            ("3 Latent", "One latent in W.", [sample(4, (1, 0), 7, 1)]),
            ("4 Edit (live slider)", "Direction Edit moves the latent along SeFa direction 0 (SeFa strengths: "
                                     "about ±10; GANSpace: ±3 σ). Queue once, then drag strength: the node shows a "
                                     "live preview without queueing. The queued run renders full size.",
             [N(5, "SGS_DirectionEdit", {"index": 0, "strength": 5.0},
                {"generator": (1, 0), "latent": (4, 0), "directions": (2, 0)}),
              save(6, (5, 1), "stylegan/directions_edit")]),
            ("5 Sweeps", "Direction Sweep: GANSpace component 0 from -3 σ to +3 σ in 9 frames (strengths 0 and 0 = "
                         "the method's usual range), and SeFa direction 1 on the coarse layers 0-3 only.",
             [N(7, "SGS_DirectionSweep", {"index": 0, "strength_from": 0.0, "strength_to": 0.0, "frames": 9},
                {"generator": (1, 0), "latent": (4, 0), "directions": (3, 0)}),
              N(9, "SGS_DirectionSweep", {"index": 1, "strength_from": -20.0, "strength_to": 20.0, "frames": 9,
                                          "layer_start": 0, "layer_end": 4},
                {"generator": (1, 0), "latent": (4, 0), "directions": (2, 0)})]),
            ("6 Save WebP", "The GANSpace sweep as an animated WebP, in output/stylegan.",
             [N(8, "SaveAnimatedWEBP", {"filename_prefix": "stylegan/directions_sweep", "fps": 6.0,
                                        "lossless": False, "quality": 90, "method": "default"}, {"images": (7, 0)})]),
            ("7 Save images", "The SeFa sweep as images, in output/stylegan.",
             [save(10, (9, 0), "stylegan/directions_sweep_sefa")]),
        ]),
    "stylegan_face_sd15_refine": dict(
        title="StyleGAN face refined by Stable Diffusion img2img",
        description=f"A FFHQ face from StyleGAN, refined by ComfyUI's own SD1.5 img2img (denoise 0.35). Needs "
                    f"{CHECKPOINT} (models/stylegan) and {SD_CHECKPOINT} (models/checkpoints).",
        steps=[
            ("1 StyleGAN face", f"Needs {CHECKPOINT} in models/stylegan. One face (seed 4, psi 0.7).",
             [load(1), sample(2, (1, 0), 4, 1), synthesize(3, (1, 0), (2, 0))]),
            ("2 Diffusion model", f"ComfyUI's CheckpointLoaderSimple with {SD_CHECKPOINT} (models/checkpoints; "
                                  "any SD1.5 checkpoint works) and the prompts.",
             [N(5, "CheckpointLoaderSimple", {"ckpt_name": SD_CHECKPOINT}, models=[SD15]),
              N(6, "CLIPTextEncode", {"text": "portrait photo of a person, detailed skin, sharp focus, natural "
                                              "light"}, {"clip": (5, 1)}),
              N(7, "CLIPTextEncode", {"text": "blurry, deformed, watermark, text"}, {"clip": (5, 1)})]),
            ("3 To SD size", "1024 px down to 512 px, SD1.5's size, then encoded by its VAE.",
             [N(4, "ImageScale", {"upscale_method": "lanczos", "width": 512, "height": 512, "crop": "disabled"},
                {"image": (3, 0)}),
              N(8, "VAEEncode", {}, {"pixels": (4, 0), "vae": (5, 2)})]),
            ("4 Refine", "img2img: denoise 0.35 keeps the StyleGAN face and adds detail; raise it for more change.",
             [N(9, "KSampler", {"seed": 0, "control_after_generate": "fixed", "steps": 20, "cfg": 7.0,
                                "sampler_name": "euler", "scheduler": "normal", "denoise": 0.35},
                {"model": (5, 0), "positive": (6, 0), "negative": (7, 0), "latent_image": (8, 0)}),
              N(10, "VAEDecode", {}, {"samples": (9, 0), "vae": (5, 2)})]),
            ("5 Save", "The StyleGAN face and its refined version.",
             [save(11, (3, 0), "stylegan/sd_refine_source"), save(12, (10, 0), "stylegan/sd_refine")]),
        ]),
}


def node_height(ntype: str) -> int:
    return (SIZES.get(ntype) or DEFAULT_SIZE)[1]


def note_height(text: str) -> int:
    lines = sum(max(1, -(-len(par) // 44)) for par in text.split("\n"))  # ~44 characters per line at width 320
    return max(110, 40 + 18 * lines)  # the frontend's Note is at least ~100 px high


def layout(steps: list) -> tuple[list, list]:
    """Place each step as a group: a Note and the step's nodes stacked in a column; columns left to right.
    Returns ([(node, pos, size)], groups)."""
    placed, groups = [], []
    x, top, note_id = 40, 40, 100
    for gid, (title, note, nodes) in enumerate(steps, start=1):
        width = max([NOTE_WIDTH] + [(SIZES.get(n["type"]) or DEFAULT_SIZE)[0] for n in nodes])
        y = top + GROUP_HEADER + TITLE_H
        items = [(N(note_id, "Note", {"text": note}), [width, note_height(note)])]
        note_id += 1
        items += [(n, [width, node_height(n["type"])]) for n in nodes]
        for node, size in items:
            placed.append((node, [x + PAD, y], size))
            y += size[1] + GAP + TITLE_H
        bottom = y - GAP - TITLE_H + PAD
        groups.append({"id": gid, "title": title, "bounding": [x, top, width + 2 * PAD, bottom - top],
                       "color": GROUP_COLOR, "font_size": 24, "flags": {}})
        x += width + 2 * PAD + COLUMN_GAP
    return placed, groups


def build(spec: dict) -> dict:
    placed, groups = layout(spec["steps"])
    links, out_links, ui_nodes, models = [], {}, [], []
    nodes = sorted(placed, key=lambda p: p[0]["id"])
    for order, (node, pos, size) in enumerate(nodes):
        ntype, nid = node["type"], node["id"]
        ui_inputs = []
        for index, (name, typ, optional) in enumerate(slots(ntype)[0]):
            link_id = None
            if name in node["inputs"]:
                src, slot = node["inputs"][name]
                link_id = len(links) + 1
                links.append([link_id, src, slot, nid, index, typ])
                out_links.setdefault((src, slot), []).append(link_id)
            entry = {"name": name, "type": typ, "link": link_id}
            if optional:
                entry["shape"] = 7
            ui_inputs.append(entry)
        unknown = set(node["inputs"]) - {s[0] for s in slots(ntype)[0]}
        assert not unknown, (nid, ntype, unknown)
        properties = {} if ntype == "Note" else {"Node name for S&R": ntype}
        if node["models"]:
            properties["models"] = node["models"]
            models += node["models"]
        ui = {"id": nid, "type": ntype, "pos": pos, "size": size, "flags": {}, "order": order, "mode": 0,
              "inputs": ui_inputs, "outputs": [], "properties": properties,
              "widgets_values": widget_values(ntype, node["values"])}
        if ntype == "Note":
            ui.update(color="#432", bgcolor="#653")
        ui_nodes.append(ui)
    for ui, (node, *_rest) in zip(ui_nodes, nodes):
        ui["outputs"] = [{"name": name, "type": typ, "links": out_links.get((node["id"], slot), []),
                          "slot_index": slot} for slot, (name, typ) in enumerate(slots(node["type"])[1])]
    workflow = {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": len(links), "nodes": ui_nodes,
                "links": links, "groups": groups, "config": {},
                "extra": {"title": spec["title"], "description": spec["description"],
                          "ds": {"scale": 0.75, "offset": [0, 0]}},
                "version": 0.4}
    if models:
        # Top level as well: the dialog reads a node's `properties.models` only for files its widgets name, and
        # the CLIP and perceptual files are found by tag, not named in a widget.
        workflow["models"] = [dict(m) for m in {m["name"]: m for m in models}.values()]
    return workflow


def translations() -> dict:
    """The frontend's key for the templates' category name (see the module docstring)."""
    return {"templateWorkflows": {"category": {m: "StyleGAN Studio" for m in TEMPLATE_MODULES}}}


def main() -> None:
    out = REPO / "example_workflows"
    out.mkdir(exist_ok=True)
    for name, spec in WORKFLOWS.items():
        (out / f"{name}.json").write_text(json.dumps(build(spec), indent=1) + "\n")
        print(f"wrote {out / name}.json")
    locale = REPO / "locales" / "en" / "main.json"
    locale.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(locale.read_text()) if locale.is_file() else {}
    current["templateWorkflows"] = {**current.get("templateWorkflows", {}),
                                    **translations()["templateWorkflows"]}  # other keys (node names, ...) stay
    locale.write_text(json.dumps(current, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {locale}")


if __name__ == "__main__":
    main()
