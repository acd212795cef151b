"""Nodes for StyleCLIP latent mappers: train a mapper for one text (checkpointed, resumable), load one (ours or the
reference's published .pt files), and apply it to any latent in one forward pass."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import torch

from ..core import latents as L
from ..core.edits import latent_mapper as M
from ..core.edits import presets as PR
from ..core.log import logger
from . import comfy_env
from .caches import ModelCache
from .models import check_arcface_device
from .optimize import RunState, output_name, preset_input, resolve_preset, run_optimisation
from .registry import register_node
from .types import ARCFACE, CATEGORY_ROOT, CLIP, GENERATOR, LATENT, MAPPER

D = M.DEFAULTS
MAPPER_SUFFIXES = (".safetensors", ".pt", ".pth")
CHECKPOINT_SUFFIX = ".training.safetensors"   # output/latent_mappers/<name>.training.safetensors
_PIXEL_NORMS = {"per w": "w", "over layers (reference)": "layers"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,99}$")
_cache = ModelCache("latent_mappers", max_items=1)   # by (path, mtime, size); mappers are small: the newest only


def mapper_files() -> list[str]:
    return comfy_env.list_files(comfy_env.mapper_dirs(), MAPPER_SUFFIXES)


def _mapper_path(name: str) -> Path:
    # comfy_env's rule: the name is checked as written; a mapper file or folder linked into the folder is fine.
    comfy_env.check_name(name, "latent mapper", f"models/{comfy_env.MAPPER_FOLDER}")
    path = comfy_env.find_in_folders(comfy_env.mapper_dirs(), name)
    if path is not None:
        return path
    raise FileNotFoundError(f"latent mapper {name!r} not found in {', '.join(map(str, comfy_env.mapper_dirs()))}; "
                            f"put mappers (.safetensors from Train Latent Mapper, or StyleCLIP's .pt) in "
                            f"models/{comfy_env.MAPPER_FOLDER}")


def training_paths(name: str) -> tuple[Path, Path]:
    """(checkpoint, final mapper file) of the training run called `name`."""
    name = name.strip()
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"mapper_name {name!r} is not a plain file name: use letters, digits, spaces and _ . + - "
                         f"(e.g. 'mohawk')")
    return (comfy_env.output_dir() / comfy_env.MAPPER_FOLDER / f"{name}{CHECKPOINT_SUFFIX}",
            comfy_env.mapper_dirs()[0] / f"{name}.safetensors")


def describe(mapper: M.LatentMapper) -> str:
    info = mapper.info
    trained_for = info.generator.name if info.generator is not None else "an unknown generator"
    return (f"latent mapper '{info.text}': groups {', '.join(mapper.groups)}; w+ {mapper.num_ws} x {mapper.w_dim} "
            f"(trained for {trained_for})")


@register_node("SGS_TrainLatentMapper", "Train Latent Mapper", optimises=True)
class TrainLatentMapper:
    DESCRIPTION = ("StyleCLIP latent mapper: trains a small network that applies one text edit (e.g. 'mohawk "
                   "hairstyle') to any latent in a single step. Slow once (the reference trains 50,000 steps: hours "
                   "on a GPU), then instant with Apply Latent Mapper. Progress is checkpointed: queued again, a "
                   "cancelled run continues from the step it stopped at, a crashed one from its last checkpoint; "
                   "Finish now saves the mapper as trained so far. preset quick / balanced train fewer steps. "
                   "Saves models/latent_mappers/<mapper_name>.safetensors.")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = (MAPPER, "STRING")
    RETURN_NAMES = ("mapper", "report")
    OUTPUT_TOOLTIPS = ("The trained mapper, for Apply Latent Mapper.", "Steps, time, the loss terms at the start "
                       "and the end, and where the mapper was saved.")
    FUNCTION = "train"
    PRESET_KIND = "latent_mapper"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator the mapper edits (never modified)."}),
                "clip": (CLIP, {"tooltip": "CLIP from Load CLIP (the reference used ViT-B-32 'openai')."}),
                "text": ("STRING", {"default": "mohawk hairstyle", "multiline": True,
                                    "tooltip": "The edit the mapper learns."}),
                "mapper_name": ("STRING", {"default": "mohawk", "tooltip": "File name of the mapper (saved as "
                                "models/latent_mappers/<name>.safetensors) and of its training checkpoint."}),
                "num_steps": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip":
                                      "Training steps; 0 = the preset's count (" + PR.tooltip("latent_mapper") +
                                      "). Raise it (or the preset) later to train further."}),
                "coarse": ("BOOLEAN", {"default": D.coarse, "tooltip": "Train the mapper for layers 0-3 (pose, "
                           "face shape)."}),
                "medium": ("BOOLEAN", {"default": D.medium, "tooltip": "Train the mapper for layers 4-7 (features, "
                           "hairstyle)."}),
                "fine": ("BOOLEAN", {"default": D.fine, "tooltip": "Train the mapper for layers 8+ (colours, "
                         "texture). Off keeps the colours (the reference's advice for hairstyles)."}),
            },
            "optional": {
                "latents": (LATENT, {"tooltip": "Optional training set (e.g. inverted photos, as the reference "
                                     "recommends). Without it, num_train_latents latents are sampled."}),
                "arcface": (ARCFACE, {"tooltip": "ArcFace from Load ArcFace, for the identity term (faces)."}),
                "id_lambda": ("FLOAT", {"default": D.id_lambda, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip":
                              "Weight of the ArcFace identity loss (reference 0.1; needs arcface). 0 for "
                              "generators that do not make faces."}),
                "clip_lambda": ("FLOAT", {"default": D.clip_lambda, "min": 0.0, "max": 10.0, "step": 0.01,
                                          "tooltip": "Weight of the CLIP loss (reference 1)."}),
                "l2_lambda": ("FLOAT", {"default": D.l2_lambda, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip":
                              "Weight of the latent L2 loss that keeps edits small (reference 0.8)."}),
                "learning_rate": ("FLOAT", {"default": D.lr, "min": 1e-5, "max": 10.0, "step": 0.01,
                                            "tooltip": "Ranger's learning rate (reference 0.5)."}),
                "batch_size": ("INT", {"default": D.batch_size, "min": 1, "max": 64,
                                       "tooltip": "Latents per step (reference 2)."}),
                "num_train_latents": ("INT", {"default": D.num_train_latents, "min": 1, "max": 1_000_000,
                                              "tooltip": "Sampled training latents when none are connected "
                                              "(reference 5000)."}),
                "truncation_psi": ("FLOAT", {"default": D.truncation_psi, "min": 0.0, "max": 1.0, "step": 0.05,
                                             "tooltip": "Truncation of the sampled latents (reference 0.7)."}),
                "pixel_norm": (list(_PIXEL_NORMS), {"default": "per w", "tooltip": "How the mapper normalises "
                               "its input: per w (each layer's w, as StyleGAN does), or over layers as the "
                               "reference's code does (which keeps only each channel's sign when all layers are "
                               "equal)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip": "Initial weights, sampled "
                                 "latents and data order."}),
                "resume": ("BOOLEAN", {"default": True, "tooltip": "Continue the checkpoint of an earlier run with "
                           "this name and the same settings. Off starts over and overwrites it (switch it back on "
                           "to continue a run you cancelled)."}),
                "checkpoint_every": ("INT", {"default": M.DEFAULT_CHECKPOINT_EVERY, "min": 1, "max": 1_000_000,
                                             "tooltip": "Steps between checkpoints (also written on cancel)."}),
                "preview_every": ("INT", {"default": M.DEFAULT_PREVIEW_EVERY, "min": 1, "max": 100_000,
                                          "tooltip": "Show a training latent before | after every this many "
                                          "steps."}),
                "preset": preset_input("latent_mapper"),
            },
        }

    def train(self, generator, clip, text, mapper_name, num_steps, coarse, medium, fine, latents=None, arcface=None,
              id_lambda=D.id_lambda, clip_lambda=D.clip_lambda, l2_lambda=D.l2_lambda, learning_rate=D.lr,
              batch_size=D.batch_size, num_train_latents=D.num_train_latents, truncation_psi=D.truncation_psi,
              pixel_norm="per w", seed=0, resume=True, checkpoint_every=M.DEFAULT_CHECKPOINT_EVERY,
              preview_every=M.DEFAULT_PREVIEW_EVERY, preset=None):
        if not text.strip():
            raise ValueError("the text is empty: describe the edit, e.g. 'mohawk hairstyle'")
        if id_lambda > 0 and arcface is None:
            raise ValueError(f"id_lambda is {id_lambda:g} but no ArcFace is connected: connect Load ArcFace "
                             f"(model_ir_se50.pth in models/arcface), or set id_lambda to 0 (for generators that do "
                             f"not make faces, or to train without the identity term)")
        if pixel_norm not in _PIXEL_NORMS:
            raise ValueError(f"pixel_norm must be one of {list(_PIXEL_NORMS)}, got {pixel_norm!r}")
        checkpoint, final = training_paths(mapper_name)
        steps = resolve_preset("latent_mapper", "", preset, num_steps=int(num_steps))["num_steps"]
        config = dataclasses.replace(D, num_steps=steps, coarse=bool(coarse), medium=bool(medium),
                                     fine=bool(fine), id_lambda=float(id_lambda), clip_lambda=float(clip_lambda),
                                     l2_lambda=float(l2_lambda), lr=float(learning_rate), batch_size=int(batch_size),
                                     num_train_latents=int(num_train_latents),
                                     truncation_psi=float(truncation_psi), pixel_norm=_PIXEL_NORMS[pixel_norm])
        if latents is not None:
            L.check_compatible(latents, generator)
        id_loss = None
        if arcface is not None and id_lambda > 0:
            from ..core.losses.arcface import IDLoss

            check_arcface_device(arcface, generator)
            id_loss = IDLoss(arcface)
        text_emb = clip.encode_text(text.strip())

        def run(callback):
            return M.train_latent_mapper(generator, clip, text_emb, config=config, latents=latents, id_loss=id_loss,
                                         checkpoint_path=checkpoint, checkpoint_every=int(checkpoint_every),
                                         resume=bool(resume), callback=callback, preview_every=int(preview_every),
                                         seed=int(seed))

        def save_partial(st: RunState):
            if not checkpoint.is_file():
                return None
            return (f"the training so far (step {st.step}) is saved in the checkpoint {output_name(checkpoint)} — "
                    f"queue again with resume on to continue from there")

        state = RunState("latent_mapper", "", generator.w_avg.device.type, int(generator.img_resolution),
                         save_partial=save_partial)
        try:
            # The core loop renders its before | after preview every preview_every steps: show each one.
            result = run_optimisation(config.num_steps, run, state=state)
        except ValueError as e:
            if "different training run" in str(e) or "already trained" in str(e):
                raise ValueError(f"{e}. Here: choose another mapper_name, raise num_steps, or switch resume off to "
                                 f"overwrite that run") from e
            raise
        mapper = result.mapper
        M.save_mapper(mapper, final, generator_ref=generator, text=text.strip(), config=config)
        mapper.info.text = text.strip()
        report = f"{result.report()}\nsaved {final} (checkpoint {checkpoint})"
        if state.finished_early:
            report += (f"\n{state.note()} (Finish now): the mapper as trained so far; queue again with resume on "
                       f"to train on")
        return {"ui": {"text": [report]}, "result": (mapper, report)}


@register_node("SGS_LoadLatentMapper", "Load Latent Mapper")
class LoadLatentMapper:
    DESCRIPTION = ("Loads a latent mapper from models/latent_mappers: one trained by Train Latent Mapper "
                   "(.safetensors), or one of StyleCLIP's published mappers (.pt, e.g. mohawk.pt, afro.pt; read "
                   "safely, nothing in the file is executed).")
    CATEGORY = f"{CATEGORY_ROOT}/loaders"
    RETURN_TYPES = (MAPPER, "STRING")
    RETURN_NAMES = ("mapper", "info")
    OUTPUT_TOOLTIPS = ("The mapper, for Apply Latent Mapper.", "Its text, layer groups and the generator it was "
                       "trained for.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mapper_name": (mapper_files(), {"tooltip": "A file from models/latent_mappers."}),
        }}

    @classmethod
    def IS_CHANGED(cls, mapper_name):
        # Train Latent Mapper rewrites the file under the same name: reload when it changes.
        stat = _mapper_path(mapper_name).stat()
        return f"{stat.st_mtime_ns}-{stat.st_size}"

    def load(self, mapper_name):
        path = _mapper_path(mapper_name)
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)

        def read():
            with torch.inference_mode(False):
                return M.load_mapper(path)

        mapper = _cache.get_or_load(key, read)
        info = describe(mapper)
        return {"ui": {"text": [info]}, "result": (mapper, info)}


@register_node("SGS_ApplyLatentMapper", "Apply Latent Mapper")
class ApplyLatentMapper:
    DESCRIPTION = ("Applies a trained latent mapper: w' = w + strength * 0.1 * M(w), the text edit it learned, in "
                   "one forward pass (milliseconds). Outputs w+ latents for Synthesize.")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = (LATENT, "STRING")
    RETURN_NAMES = ("latent", "report")
    OUTPUT_TOOLTIPS = ("The edited w+ latent(s). With sweep_frames N, N per input latent with strength from 0 to "
                       "strength (latent-major order).", "The mapper and how far the latents moved.")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator the latent belongs to."}),
                "latent": (LATENT, {"tooltip": "The latent(s) to edit (z, w or w+; e.g. from Invert Image)."}),
                "mapper": (MAPPER, {"tooltip": "From Train Latent Mapper or Load Latent Mapper."}),
                "strength": ("FLOAT", {"default": 1.0, "min": -3.0, "max": 3.0, "step": 0.05, "tooltip":
                                       "1 = the trained edit, 0 = unchanged, between = partway; above 1 "
                                       "exaggerates, below 0 reverses (neither was trained)."}),
            },
            "optional": {
                "sweep_frames": ("INT", {"default": 1, "min": 1, "max": 256, "tooltip": "1 = one edit at "
                                         "strength. N > 1 = N edits per latent with strength evenly from 0 to "
                                         "strength, as one batch (a video of the edit)."}),
            },
        }

    def apply(self, generator, latent, mapper, strength, sweep_frames=1):
        t0 = time.perf_counter()
        if latent.space == "s":
            raise ValueError("latent mappers edit w+ latents, and an s latent has no w+ form: apply the mapper "
                             "before the StyleSpace edit")
        L.check_compatible(latent, generator)
        n = latent.tensor.shape[0]
        L.check_latent_count(n * max(int(sweep_frames), 1), f"{n} latent(s) x {int(sweep_frames)} sweep frames",
                             split="use fewer sweep frames or map the latents in smaller batches")
        ref = L.generator_ref(generator)
        trained = mapper.info.generator
        name = trained.name if trained is not None else "another generator"
        if (ref.num_ws, ref.w_dim) != (mapper.num_ws, mapper.w_dim):
            raise ValueError(f"this mapper was trained for {name} (w+ {mapper.num_ws} x {mapper.w_dim}), but "
                             f"{ref.name} has w+ {ref.num_ws} x {ref.w_dim}: use the generator it was trained for")
        if trained is not None and trained.fingerprint and trained.fingerprint != ref.fingerprint:
            logger.warning("latent mapper '%s' was trained for %s; applying it to %s (same shape, other weights) "
                           "gives a different edit", mapper.info.text, name, ref.name)
        with torch.inference_mode(False):
            ws = L.latent_to_ws(generator, latent).detach().clone()  # [N, num_ws, w_dim]
            frames = int(sweep_frames)
            strengths = [float(strength)] if frames <= 1 else torch.linspace(0, float(strength), frames).tolist()
            edited = torch.stack([M.apply_latent_mapper(mapper, ws, strength=s) for s in strengths], dim=1)
        out = edited.reshape(-1, ws.shape[1], ws.shape[2]).cpu()
        c = None if latent.c is None else latent.c.repeat_interleave(len(strengths), 0)
        result = L.Latent(out, "w+", ref, c=c)
        moved = (edited[:, -1] - ws).norm(dim=-1).mean().item()
        ms = (time.perf_counter() - t0) * 1000
        sweep = (f"strength {strengths[0]:g} .. {strengths[-1]:g} in {len(strengths)} frames" if len(strengths) > 1
                 else f"strength {strengths[0]:g}")
        report = (f"'{mapper.info.text}' mapper ({', '.join(mapper.groups)}), {sweep}: mean per-layer |w' - w| "
                  f"{moved:.3f} ({ms:.1f} ms for {ws.shape[0]} latent{'s' if ws.shape[0] != 1 else ''})")
        return {"ui": {"text": [report]}, "result": (result, report)}

