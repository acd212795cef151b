"""Weight-Shift Edit nodes (PRMU 2022, seed 003): train a CLIP-guided shift of one convolution's weights, save and
load it (NaviGAN and StyleGAN-NADA files imported), apply shifts with strengths k, sweep k, and scan the layers.

The layer is a STRING, not a combo: the generator (and so its layer names: 'b16.conv1' for StyleGAN2,
'L5_84_1024' for StyleGAN3) is not known when ComfyUI builds the node's widgets, a combo of StyleGAN2 names would
lock StyleGAN3 out, and a STRING input takes Weight Shift Layer Scan's `layer` output directly. A wrong name is
refused when the node runs, with the generator's real layer names listed (`core` find_layer).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..core import latents as L
from ..core.edits import presets as PR
from ..core.edits import weight_shift as WS
from . import comfy_env
from .convert import generator_to_comfy
from .models import check_arcface_device
from .optimize import RunState, output_name, preset_input, resolve_preset, run_optimisation
from .registry import register_node
from .types import ARCFACE, CATEGORY_ROOT, CLIP, GENERATOR, LATENT, WEIGHT_SHIFT

D = WS.DEFAULTS
SHIFT_FOLDER = comfy_env.SHIFT_FOLDER                  # models/weight_shifts and output/weight_shifts
SHIFT_SUFFIXES = (".safetensors", ".pt", ".pth")       # ours; NaviGAN shifts and StyleGAN-NADA checkpoints (.pt)
OUTPUT_TAG = " [output]"                               # marks files listed from output/weight_shifts
LOSSES = list(WS.LOSSES)                               # the first, directional, is the node's default
NOISE_MODES = ["const", "random", "none"]
MAX_SHIFT_INPUTS = 4
K_SLIDER = 5.0                                         # the paper renders k in -3..3; the slider goes a bit beyond
DEFAULT_LAYER = "b16.conv1"   # NaviGAN's default layer (rosinality convs[3]): face shape at 16 px; core has no default
_WORDS = re.compile(r"[^A-Za-z0-9]+")

LAYER_TOOLTIP = (
    "The convolution the shift is trained on, by name: StyleGAN2 'b4.conv1', 'b8.conv0', 'b8.conv1', 'b16.conv0', "
    "'b16.conv1', ... up to 'b1024.conv1' (the number is the resolution the layer works at: 8-16 px changes pose "
    "and face shape, 32-64 px features such as the nose, higher only texture); StyleGAN3 'L0_36_512' ... A wrong "
    "name is refused with the generator's list. Connect Weight Shift Layer Scan's `layer` output here to use the "
    "layer it found best.")


# ------------------------------------------------------------------------------------------------
# Shift files: models/weight_shifts (yours, downloads) and output/weight_shifts (Save Weight Shift, stopped runs)


def shift_dirs() -> list[Path]:
    """Folders searched for shift files: models/weight_shifts (with extra_model_paths.yaml entries)."""
    return comfy_env.folder_dirs(SHIFT_FOLDER)


def output_shift_dir() -> Path:
    return comfy_env.output_dir() / SHIFT_FOLDER


def shift_files() -> list[str]:
    """Shift files of models/weight_shifts, then those of output/weight_shifts marked ' [output]'."""
    names = comfy_env.list_files(shift_dirs(), SHIFT_SUFFIXES)
    names += [n + OUTPUT_TAG for n in comfy_env.list_files([output_shift_dir()], SHIFT_SUFFIXES)]
    return names


def shift_path(name: str) -> Path:
    """The file a name from `shift_files()` stands for (checked as written: no absolute path, no '..')."""
    in_output = name.endswith(OUTPUT_TAG)
    rel = name[: -len(OUTPUT_TAG)] if in_output else name
    where = f"output/{SHIFT_FOLDER}" if in_output else f"models/{SHIFT_FOLDER}"
    comfy_env.check_name(rel, "weight shift", where)
    if not rel.lower().endswith(SHIFT_SUFFIXES):
        raise ValueError(f"weight shift {name!r} is not a shift file: expected {', '.join(SHIFT_SUFFIXES)}")
    dirs = [output_shift_dir()] if in_output else shift_dirs()
    found = comfy_env.find_in_folders(dirs, rel)
    if found is None:
        raise FileNotFoundError(f"weight shift {name!r} not found in {', '.join(map(str, dirs))}; shifts from Train "
                                f"Weight Shift are saved by Save Weight Shift to output/{SHIFT_FOLDER}; put "
                                f"downloaded ones (ours, NaviGAN .pt, StyleGAN-NADA .pt) in models/{SHIFT_FOLDER}")
    return found


def load_shift_file(path: Path, generator=None):
    """Our .safetensors shift, or a NaviGAN / StyleGAN-NADA .pt converted for `generator` (which it needs: both
    formats name layers and hold deltas only that generator can interpret)."""
    with torch.inference_mode(False):
        if path.suffix.lower() == ".safetensors":
            shift = WS.load_weight_shift(path)
        else:
            if generator is None:
                raise ValueError(f"{path.name} is a .pt file (a NaviGAN shift or a StyleGAN-NADA checkpoint): it "
                                 f"is converted for one generator, so connect the generator it was made for to Load "
                                 f"Weight Shift's `generator` input")
            shift = WS.import_shift(path, generator)   # NaviGAN or NADA, read once
    if generator is not None:
        WS.check_shift_fits(WS.shift_base(generator), shift)
    return shift


def save_shift(shift, filename_prefix: str) -> Path:
    """Write `shift` as output/<prefix>_NNNNN_.safetensors (ComfyUI's counter; never overwrites)."""
    path = comfy_env.next_output_path(filename_prefix, WS.SHIFT_SUFFIX)
    return WS.save_weight_shift(shift, path)


def _slug(text: str) -> str:
    return _WORDS.sub("_", text.strip().lower()).strip("_")[:40] or "shift"


def _check_text(text: str, example: str) -> str:
    if not str(text).strip():
        raise ValueError(f"the text is empty: describe the edit, e.g. '{example}'")
    return str(text).strip()


def _check_loss(loss: str, neutral_text: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "directional" and not neutral_text.strip():
        raise ValueError("loss 'directional' moves the image from neutral_text toward text, so it needs a "
                         "neutral_text (e.g. 'a face'); type one, or choose loss 'global'")
    return loss


def _identity(arcface, lambda_id: float, generator):
    if lambda_id > 0 and arcface is None:
        raise ValueError(f"lambda_id is {lambda_id:g} but no ArcFace is connected: connect Load ArcFace, or set "
                         f"lambda_id to 0")
    if arcface is None or lambda_id <= 0:
        return None
    from ..core.losses.arcface import IDLoss

    check_arcface_device(arcface, generator)
    return IDLoss(arcface)


def _side_by_side(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """[N, 3, R, R] before and after -> IMAGE [N, R, 2R, 3]: before on the left."""
    return generator_to_comfy(torch.cat([before.to(after), after], dim=3), comfy_env.intermediate_device())


def _loss_inputs(d) -> dict:
    """The loss inputs Train Weight Shift and Weight Shift Layer Scan share (defaults from core's DEFAULTS)."""
    return {
        "loss": (LOSSES, {"default": "directional", "tooltip": "directional (StyleGAN-NADA): the image moves from "
                          "neutral_text toward text, so only what differs between the texts changes (needs "
                          "neutral_text). global (the paper): the image moves toward text."}),
        "lambda_clip": ("FLOAT", {"default": d.lambda_clip, "min": 0.0, "max": 100.0, "step": 0.1,
                                  "tooltip": "Weight of the CLIP term (the paper: 10)."}),
        "lr": ("FLOAT", {"default": d.lr, "min": 1e-6, "max": 1.0, "step": 0.0001,
                         "tooltip": "Adam's learning rate on the shift (raw weight units; default 0.002, "
                         "StyleGAN-NADA's order)."}),
        "k_train": ("FLOAT", {"default": d.k_train, "min": 0.05, "max": WS.MAX_K, "step": 0.05,
                              "tooltip": "The strength k the shift is trained at (W + k x); rendering at k then "
                              "reproduces the trained edit."}),
        "batch": ("INT", {"default": d.batch, "min": 1, "max": 32, "tooltip": "Sampled latents per step when no "
                          "latent is connected (a shift that works for any face)."}),
        "truncation_psi": ("FLOAT", {"default": d.truncation_psi, "min": 0.0, "max": 1.0, "step": 0.05,
                                     "tooltip": "Truncation of the sampled latents (no latent connected)."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip": "Seed of the sampled latents."}),
    }


# ------------------------------------------------------------------------------------------------
# Train


@register_node("SGS_TrainWeightShift", "Train Weight Shift", optimises=True)
class TrainWeightShift:
    DESCRIPTION = ("Weight-Shift Edit (PRMU 2022): trains a shift x of ONE convolution layer's weights so that the "
                   "generator with W + k x draws what the text says (loss 10 CLIP + lambda_l2 |x|). Edits shape (a "
                   "bigger nose, a wider face) better than latent edits, and the shift works on every latent. With "
                   "a latent connected it is trained on that one image (the paper); without, on sampled faces. Render "
                   "it with Apply Weight Shifts or Weight Shift k Sweep at any k (the paper: -3..3). Shows the image "
                   "while it runs; Finish now ends early with the shift so far, Stop saves it to "
                   f"output/{SHIFT_FOLDER}. The generator itself is never changed.")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = (WEIGHT_SHIFT, "IMAGE", "STRING")
    RETURN_NAMES = ("shift", "before_after", "report")
    OUTPUT_TOOLTIPS = ("The trained shift: Apply Weight Shifts, Weight Shift k Sweep, Save Weight Shift.",
                       "The training image(s) before (left) and after (right, at k_train), side by side.",
                       "Steps, time, the loss terms at the start and the end, the layer and the shift's norm.")
    FUNCTION = "train"
    PRESET_KIND = "weight_shift"

    @classmethod
    def INPUT_TYPES(cls):
        d = D
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator the shift is made for (never modified); a shift "
                              "only applies to this generator's weights."}),
                "clip": (CLIP, {"tooltip": "CLIP from Load CLIP (ViT-B-32 'openai', as StyleCLIP and NADA)."}),
                "text": ("STRING", {"default": "a face with a big nose", "multiline": True,
                                    "tooltip": "What the shifted generator should draw."}),
                "neutral_text": ("STRING", {"default": "a face", "multiline": False, "tooltip": "What it draws now "
                                 "(e.g. 'a face'): the directional loss moves only along text - neutral_text."}),
                "layer": ("STRING", {"default": DEFAULT_LAYER, "tooltip": LAYER_TOOLTIP}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Optimisation steps; 0 = the "
                                  "preset's count (" + PR.tooltip("weight_shift") + ")."}),
                "lambda_l2": ("FLOAT", {"default": d.lambda_l2, "min": 0.0, "max": 10.0, "step": 0.005,
                                        "tooltip": "Weight of |x|, which keeps the shift small (the paper: 0.01-0.1 "
                                        "per edit). Raise it if the image changes too much beyond the edit."}),
            },
            "optional": {
                "latent": (LATENT, {"tooltip": "Optional: one image's latent (e.g. from Invert Image) to train on, as "
                                    "the paper does. Without it the shift is trained on sampled latents and "
                                    "generalises to any face."}),
                **_loss_inputs(d),
                "two_sided": ("BOOLEAN", {"default": False, "tooltip": "Also train k = -k_train toward "
                              "neutral_text, so negative k gives the opposite edit (a smaller nose)."}),
                "arcface": (ARCFACE, {"tooltip": "Optional: ArcFace from Load ArcFace, for the identity term."}),
                "lambda_id": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                        "tooltip": "Weight of the ArcFace identity term (needs arcface); raise it "
                                        "if the edited face stops looking like the person."}),
                "preview_every": ("INT", {"default": 10, "min": 1, "max": 1000,
                                          "tooltip": "Show the current image every this many steps."}),
                "preset": preset_input("weight_shift"),
            },
        }

    def train(self, generator, clip, text, neutral_text, layer, steps, lambda_l2, latent=None,
              loss="directional", lambda_clip=D.lambda_clip, lr=D.lr, k_train=D.k_train, batch=D.batch,
              truncation_psi=D.truncation_psi, seed=0, two_sided=False, arcface=None, lambda_id=0.0,
              preview_every=10, preset=None):
        text = _check_text(text, "a face with a big nose")
        neutral = str(neutral_text or "").strip()
        loss = _check_loss(loss, neutral)
        if WS.applied_shifts(generator):
            raise ValueError("this generator already has weight shifts applied (Apply Weight Shifts): train on the "
                             "loaded generator and stack the shifts afterwards")
        target = WS.find_layer(generator, str(layer).strip())   # ValueError listing the generator's layers
        if latent is not None:
            L.check_compatible(latent, generator)
        identity = _identity(arcface, float(lambda_id), generator)
        steps = resolve_preset("weight_shift", "", preset, steps=int(steps))["steps"]
        settings = dict(layer=target.name, neutral_text=neutral or None, latents=latent, steps=steps, lr=float(lr),
                        lambda_clip=float(lambda_clip), lambda_l2=float(lambda_l2), k_train=float(k_train),
                        loss=loss, batch=int(batch), truncation_psi=float(truncation_psi), seed=int(seed),
                        two_sided=bool(two_sided), identity=identity, lambda_id=float(lambda_id))

        def run(callback):
            return WS.train_weight_shift(generator, clip, text, callback=callback, **settings)

        def save_partial(st: RunState):
            tensors = {k[len("shift/"):]: v for k, v in (st.last_params or {}).items() if k.startswith("shift/")}
            if not tensors:
                return None
            shift = WS.make_shift(generator, tensors, prompt=text, neutral_prompt=neutral or None,
                                  clip_model=getattr(clip, "name", None), loss=loss, lambda_clip=float(lambda_clip),
                                  lambda_l2=float(lambda_l2), lr=float(lr), steps=int(st.step), batch=int(batch),
                                  k_train=float(k_train), img_resolution=int(generator.img_resolution),
                                  source="sgs", norm="raw")
            path = save_shift(shift, f"{SHIFT_FOLDER}/{_slug(text)}_stopped")
            return f"the shift so far is saved as {output_name(path)} — load it with Load Weight Shift"

        state = RunState("weight_shift", "", generator.w_avg.device.type, int(generator.img_resolution),
                         save_partial=save_partial)
        result = run_optimisation(steps, run, preview_every=preview_every, state=state)
        report = result.report()
        if state.finished_early:
            report += f"\n{state.note()} (Finish now): the shift as trained so far"
        image = _side_by_side(result.image_before, result.image_after)
        return {"ui": {"text": [report]}, "result": (result.shift, image, report)}


# ------------------------------------------------------------------------------------------------
# Files


@register_node("SGS_SaveWeightShift", "Save Weight Shift")
class SaveWeightShift:
    DESCRIPTION = (f"Saves a weight shift as one small .safetensors file in output/{SHIFT_FOLDER} (the shifted "
                   "layer's tensor, how it was trained, and the generator it was made for). Load it again with Load "
                   "Weight Shift; share it with users of the same checkpoint.")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Where the file was written.",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "shift": (WEIGHT_SHIFT, {"tooltip": "The shift from Train Weight Shift (or Load Weight Shift)."}),
            "filename_prefix": ("STRING", {"default": f"{SHIFT_FOLDER}/shift", "tooltip": "Path prefix in the "
                                "output folder; a counter is appended. Under weight_shifts/ Load Weight Shift lists "
                                "it."}),
        }}

    def save(self, shift, filename_prefix):
        path = save_shift(shift, filename_prefix)
        text = f"{shift.describe()}\nsaved to {output_name(path)}"
        return {"ui": {"text": [text]}, "result": (str(path),)}


@register_node("SGS_LoadWeightShift", "Load Weight Shift")
class LoadWeightShift:
    DESCRIPTION = (f"Loads a weight shift: ours (.safetensors) from models/{SHIFT_FOLDER} or output/{SHIFT_FOLDER} "
                   "(' [output]'), or a NaviGAN shift / StyleGAN-NADA checkpoint (.pt, read safely: nothing in the "
                   "file is executed), converted for the connected generator.")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = (WEIGHT_SHIFT, "STRING")
    RETURN_NAMES = ("shift", "info")
    OUTPUT_TOOLTIPS = ("The shift, for Apply Weight Shifts or Weight Shift k Sweep.", "Its prompt, layer, norm, "
                       "the generator it was made for and the recommended k range.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "shift_file": (shift_files(), {"tooltip": f"A shift from models/{SHIFT_FOLDER}, or from "
                               f"output/{SHIFT_FOLDER} (marked ' [output]': Save Weight Shift, stopped runs)."}),
            },
            "optional": {
                "generator": (GENERATOR, {"tooltip": "The generator the shift was made for. Needed to import a "
                              "NaviGAN or StyleGAN-NADA .pt file; otherwise, when connected, the shift is checked "
                              "against it right away."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, shift_file):
        # A shift saved during this session is not in the list the browser got: check the folders now.
        if shift_file not in shift_files():
            return (f"weight shift {shift_file!r} not found in models/{SHIFT_FOLDER} or output/{SHIFT_FOLDER}; "
                    f"refresh the node list (R) or choose another file")
        return True

    @classmethod
    def IS_CHANGED(cls, shift_file, generator=None):
        stat = shift_path(shift_file).stat()
        return f"{stat.st_mtime_ns}-{stat.st_size}"

    def load(self, shift_file, generator=None):
        shift = load_shift_file(shift_path(shift_file), generator)
        lo, hi = shift.recommended_k
        info = f"{shift.describe()}; recommended k {lo:g} .. {hi:g}"
        return {"ui": {"text": [info]}, "result": (shift, info)}


# ------------------------------------------------------------------------------------------------
# Apply and render


@register_node("SGS_ApplyWeightShifts", "Apply Weight Shifts")
class ApplyWeightShifts:
    DESCRIPTION = ("Applies up to four weight shifts, each with its own strength k: a generator with W + k1 x1 + k2 "
                   "x2 + ... (shifts of one layer add; shifts of different layers apply together). The loaded "
                   "generator is unchanged: the result is a copy sharing its other weights. k = 0 leaves a shift "
                   "out. Chained Apply nodes add up.")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = (GENERATOR, "STRING")
    RETURN_NAMES = ("generator", "info")
    OUTPUT_TOOLTIPS = ("The shifted generator, for Synthesize and every other node that takes a generator.",
                       "Which shifts were applied with which k.")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        optional = {}
        for i in range(1, MAX_SHIFT_INPUTS + 1):
            optional[f"shift_{i}"] = (WEIGHT_SHIFT, {"tooltip": f"Shift {i} (optional)."})
            optional[f"k_{i}"] = ("FLOAT", {"default": 1.0, "min": -K_SLIDER, "max": K_SLIDER, "step": 0.05,
                                            "tooltip": f"Strength of shift {i}: W + k x. 1 = as trained; negative "
                                            "reverses it (cleanly after a two_sided training); the paper uses "
                                            "-3..3."})
        return {"required": {"generator": (GENERATOR, {"tooltip": "The generator the shifts were made for (or one "
                                                       "that already has shifts applied: these are added)."})},
                "optional": optional}

    def apply(self, generator, shift_1=None, k_1=1.0, shift_2=None, k_2=1.0, shift_3=None, k_3=1.0, shift_4=None,
              k_4=1.0):
        # Named inputs (not **kwargs): the node's arguments are its schema, checked by tests/test_nodes.py.
        given = [(shift_1, k_1), (shift_2, k_2), (shift_3, k_3), (shift_4, k_4)]
        pairs = [(shift, float(k)) for shift, k in given if shift is not None]
        if not pairs:
            info = "no shift connected: the generator is passed through unchanged"
            return {"ui": {"text": [info]}, "result": (generator, info)}
        G = WS.apply_weight_shifts(generator, pairs)
        lines = [f"k {k:g}: {s.label}" + (" (left out)" if k == 0 else "") for s, k in pairs]
        info = f"{len(pairs)} weight shift(s) applied to {WS.shift_base(generator).info.name}:\n" + "\n".join(lines)
        return {"ui": {"text": [info]}, "result": (G, info)}


@register_node("SGS_WeightShiftSweep", "Weight Shift k Sweep", frames=True)
class WeightShiftSweep:
    DESCRIPTION = ("Renders a latent with a weight shift at evenly spaced strengths k (e.g. -3 .. 3 in 7 frames) as "
                   "one IMAGE batch: the edit growing and reversing, for a video or a contact sheet. A generator that "
                   "already has shifts applied keeps them and this shift's k is swept on top.")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("images", "report")
    OUTPUT_TOOLTIPS = ("frames x N images, k from k_min to k_max: k outer, latent inner (frame f of latent n is "
                       "image f*N + n; for one latent, the frames in order).",
                       "The k values and the shift.")
    FUNCTION = "sweep"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator the shift was made for (shifts already applied "
                              "to it stay)."}),
                "latent": (LATENT, {"tooltip": "The latent(s) to render (e.g. from Invert Image)."}),
                "shift": (WEIGHT_SHIFT, {"tooltip": "The shift whose strength is swept."}),
                "k_min": ("FLOAT", {"default": -3.0, "min": -WS.MAX_K, "max": WS.MAX_K, "step": 0.05,
                                    "tooltip": "The first frame's k (the paper: -3)."}),
                "k_max": ("FLOAT", {"default": 3.0, "min": -WS.MAX_K, "max": WS.MAX_K, "step": 0.05,
                                    "tooltip": "The last frame's k (the paper: 3)."}),
                "frames": ("INT", {"default": 7, "min": 1, "max": 256, "tooltip": "How many values of k, evenly "
                                   "spaced from k_min to k_max (both included)."}),
            },
            "optional": {
                "noise_mode": (NOISE_MODES, {"default": L.DEFAULT_NOISE_MODE, "tooltip": "StyleGAN2 per-pixel "
                               "noise: const (stored maps: frames differ only by k), random, or none."}),
            },
        }

    def sweep(self, generator, latent, shift, k_min, k_max, frames, noise_mode=L.DEFAULT_NOISE_MODE):
        frames = int(frames)
        if frames < 1:
            raise ValueError(f"frames must be at least 1, got {frames}")
        L.check_latent_count(latent.batch_size * frames, f"{latent.batch_size} latent(s) x {frames} frames",
                             split="use fewer frames or render the latents in smaller batches")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        lo, hi = float(k_min), float(k_max)
        ks = [lo + (hi - lo) * i / (frames - 1) for i in range(frames)] if frames > 1 else [lo]
        stack = WS.applied_shifts(generator)
        L.check_compatible(latent, generator)
        # On a shifted generator the frames stack on its shifts (render_k_sweep applies to its base).
        images = WS.render_k_sweep(generator, latent, [(shift, 1.0)], ks, noise_mode=noise_mode)
        out = generator_to_comfy(images, comfy_env.intermediate_device())
        kept = f" on top of {len(stack)} applied shift(s)" if stack else ""
        report = (f"'{shift.label}' at k {ks[0]:g} .. {ks[-1]:g} in {len(ks)} frames{kept}: "
                  f"{out.shape[0]} images")
        return {"ui": {"images": comfy_env.preview_images(out), "text": [report]}, "result": (out, report)}


# ------------------------------------------------------------------------------------------------
# Layer scan


@register_node("SGS_WeightShiftLayerScan", "Weight Shift Layer Scan", optimises=True)
class WeightShiftLayerScan:
    DESCRIPTION = ("Which layer should a weight shift train on? The paper picks it by eye; this node runs a short "
                   "training on each candidate layer and returns a labelled contact sheet (each layer's result), the "
                   "layer whose shift moved CLIP most toward the text, and the ranking. Connect `layer` to Train "
                   "Weight Shift's layer input.")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = ("IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("contact_sheet", "layer", "report")
    OUTPUT_TOOLTIPS = ("One labelled image per layer after its short training.", "The best layer's name (for Train "
                       "Weight Shift's layer).", "The ranking: each layer's CLIP gain and loss before / after.")
    FUNCTION = "scan"
    PRESET_KIND = "weight_shift_scan"

    @classmethod
    def INPUT_TYPES(cls):
        d = D
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator (never modified)."}),
                "clip": (CLIP, {"tooltip": "CLIP from Load CLIP."}),
                "text": ("STRING", {"default": "a face with a big nose", "multiline": True,
                                    "tooltip": "The edit to find a layer for."}),
                "neutral_text": ("STRING", {"default": "a face", "tooltip": "What the image shows now (for the "
                                 "directional loss)."}),
                "layers": ("STRING", {"default": "", "tooltip": "Candidate layers, comma-separated (e.g. "
                                      "'b8.conv1, b16.conv0, b16.conv1, b32.conv0'); empty = every convolution "
                                      "layer."}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip": "Training steps per layer; 0 = "
                                  "the preset's count (" + PR.tooltip("weight_shift_scan") + ")."}),
                "lambda_l2": ("FLOAT", {"default": d.lambda_l2, "min": 0.0, "max": 10.0, "step": 0.005,
                                        "tooltip": "Weight of |x| (as in Train Weight Shift)."}),
            },
            "optional": {
                "latent": (LATENT, {"tooltip": "Optional: the image to scan on (else sampled latents)."}),
                **_loss_inputs(d),
                "preset": preset_input("weight_shift_scan"),
            },
        }

    def scan(self, generator, clip, text, neutral_text, layers, steps, lambda_l2, latent=None,
             loss="directional", lambda_clip=D.lambda_clip, lr=D.lr, k_train=D.k_train, batch=D.batch,
             truncation_psi=D.truncation_psi, seed=0, preset=None):
        text = _check_text(text, "a face with a big nose")
        neutral = str(neutral_text or "").strip()
        loss = _check_loss(loss, neutral)
        names = [n.strip() for n in str(layers or "").split(",") if n.strip()]
        candidates = [WS.find_layer(generator, n).name for n in names] or None   # a wrong name lists the layers
        if latent is not None:
            L.check_compatible(latent, generator)
        steps = resolve_preset("weight_shift_scan", "", preset, steps=int(steps))["steps"]
        count = len(candidates) if candidates else len(WS.conv_layers(generator))

        def run(callback):
            return WS.scan_layers(generator, clip, text, layers=candidates, steps=steps, neutral_text=neutral or None,
                                  latents=latent, lr=float(lr), lambda_clip=float(lambda_clip),
                                  lambda_l2=float(lambda_l2), k_train=float(k_train), loss=loss, batch=int(batch),
                                  truncation_psi=float(truncation_psi), seed=int(seed), callback=callback)

        # Seconds per step of one layer's training (the progress counts steps x layers); the run's size in the cost
        # table is its layer count, so the estimate is layers x the preset's steps per layer.
        state = RunState("weight_shift_scan", "", generator.w_avg.device.type, int(generator.img_resolution),
                         total_units=count)
        result = run_optimisation(steps * count, run, state=state)
        report = result.report()
        if state.finished_early:
            report += f"\n{state.note()} (Finish now): the layers scanned so far"
        best = result.ranking[0] if result.ranking else ""
        sheet = generator_to_comfy(result.sheet, comfy_env.intermediate_device())
        return {"ui": {"text": [report]}, "result": (sheet, str(best), report)}
