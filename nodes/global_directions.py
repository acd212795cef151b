"""Nodes for StyleCLIP global directions: precompute the channel relevance once per generator and CLIP model
(cached next to the checkpoint, resumable), then text edits in StyleSpace in milliseconds."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch

from ..core.edits import global_directions as GD
from ..core.edits import presets as PR
from ..core import latents as L
from . import comfy_env
from .caches import ModelCache
from .optimize import RunState, output_name, preset_input, resolve_preset, run_optimisation
from .registry import register_node
from .types import CATEGORY_ROOT, CLIP, DIRECTIONS, GENERATOR, LATENT

D = GD.DEFAULTS
_LAYER_CHOICES = ["all conv layers", "conv layers up to 128 px (reference fs3)"]
_NO_REFERENCE = "none (compute)"
_CACHE_SUFFIX = ".global-directions"       # next to the checkpoint; not a checkpoint extension, so not listed
_REFERENCE_STATS = "S_mean_std"            # StyleCLIP keeps it beside fs3.npy (global_directions/npy/<dataset>/)
_cache = ModelCache("global_directions", max_items=4)   # by cache path (or reference file + generator)


def reference_files() -> list[str]:
    """StyleCLIP `fs3*.npy` files in the StyleGAN model folders."""
    return [n for n in comfy_env.list_files(comfy_env.model_dirs(), (".npy",)) if Path(n).name.startswith("fs3")]


def _settings_key(G, clip, num_images: int, num_samples: int, layers: str) -> str:
    """A short hash of everything the relevance depends on, so each setting gets its own cache file."""
    parts = [L.generator_ref(G).fingerprint, GD.clip_fingerprint(clip), num_images, num_samples, layers, D.alpha,
             D.seed, D.truncation_psi]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def cache_path(G, key: str) -> Path:
    """Where the directions of G are cached: `comfy_env.cache_file`'s rule (next to its checkpoint only when that
    is in the model folders, writable, and G is its own generator; else output/global_directions/), with `key`
    (which includes G's fingerprint) telling settings apart."""
    return comfy_env.cache_file(G, _CACHE_SUFFIX, "global_directions", key)


@register_node("SGS_ComputeGlobalDirections", "Compute Global Directions", optimises=True)
class ComputeGlobalDirections:
    DESCRIPTION = ("Precomputes StyleCLIP's global directions for a generator and a CLIP model: the statistics of "
                   "every StyleSpace channel and how each channel moves CLIP's image embedding (the relevance "
                   "matrix). Slow the first time (days on a CPU; use a GPU; progress is saved, so a cancelled run "
                   "continues where it stopped; Finish now returns the channels measured so far, which edits can "
                   "use); cached next to the checkpoint and reused instantly afterwards. preset quick measures fewer "
                   "images per channel. A StyleCLIP fs3.npy can be used instead.")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = (DIRECTIONS, "STRING")
    RETURN_NAMES = ("directions", "info")
    OUTPUT_TOOLTIPS = ("The directions for Global Direction Edit.", "What was computed or loaded, and where it is "
                       "cached.")
    FUNCTION = "compute"
    PRESET_KIND = "global_directions"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator to measure (never modified)."}),
                "clip": (CLIP, {"tooltip": "The CLIP model (StyleCLIP used ViT-B-32 'openai'); edits must use the "
                                "same one."}),
                "num_images": ("INT", {"default": 0, "min": 0, "max": 10000, "tooltip": "Images per channel "
                                       "(reference 100); fewer is faster and noisier. 0 = the preset's (" +
                                       PR.tooltip("global_directions") + ")."}),
                "num_samples": ("INT", {"default": 0, "min": 0, "max": 10_000_000, "tooltip":
                                        "Mapped samples for each channel's mean and spread (reference 100,000); "
                                        "0 = the preset's."}),
                "layers": (_LAYER_CHOICES, {"default": _LAYER_CHOICES[0], "tooltip": "Which style layers to "
                           "measure. The reference's published fs3 covers layers up to 128 px only (faster); ToRGB "
                           "layers are never measured."}),
            },
            "optional": {
                "reference_fs3": ([_NO_REFERENCE] + reference_files(), {"default": _NO_REFERENCE, "tooltip":
                                  "Use StyleCLIP's precomputed fs3.npy from models/stylegan instead of computing "
                                  "(its S_mean_std next to it is used when present). It must belong to this "
                                  "generator (e.g. FFHQ config-f 1024) and CLIP ViT-B-32."}),
                "batch_size": ("INT", {"default": D.batch_size, "min": 1, "max": 4096, "tooltip": "Renders per "
                                       "pass: larger is faster on a GPU, needs more memory."}),
                "preset": preset_input("global_directions"),
            },
        }

    def compute(self, generator, clip, num_images, num_samples, layers, reference_fs3=_NO_REFERENCE,
                batch_size=D.batch_size, preset=None):
        if reference_fs3 != _NO_REFERENCE:
            return self._reference(generator, clip, reference_fs3)
        values = resolve_preset("global_directions", "", preset, num_images=int(num_images),
                                num_samples=int(num_samples))
        num_images, num_samples = values["num_images"], values["num_samples"]
        if num_samples < 2:
            raise ValueError(f"num_samples must be at least 2 (or 0 for the preset's), got {num_samples}")
        key = _settings_key(generator, clip, int(num_images), int(num_samples), layers)
        path = cache_path(generator, key)
        cached = _cache.get(str(path))
        if cached is not None and path.is_file():  # a deleted cache file means: compute again
            info = f"{cached.describe()}\n(cached in memory; file {path})"
            return {"ui": {"text": [info]}, "result": (cached, info)}  # the node shows its report either way
        t0 = time.perf_counter()
        layer_names = None
        if layers == _LAYER_CHOICES[1]:
            layer_names = GD.reference_layer_names(generator, GD.REFERENCE_MAX_LAYER_RESOLUTION)
            if not layer_names:
                raise ValueError(f"'{layers}' follows StyleGAN2's block resolutions, which {generator.info.name} "
                                 f"({generator.arch}) does not have: choose '{_LAYER_CHOICES[0]}'")

        def run(callback):
            stats = None
            if not path.is_file():  # the statistics are part of the cache file: only a first run measures them
                progress = comfy_env.Progress(int(num_samples))
                stats = GD.compute_s_statistics(generator, num_samples=int(num_samples),
                                                callback=lambda done, total: progress.update(done))
            # The relevance reports its channels as steps (no loss terms); the total is known to core only.
            return GD.compute_relevance(generator, clip, stats, num_images=int(num_images), layers=layer_names,
                                        batch_size=int(batch_size), callback=callback, checkpoint=path)

        def save_partial(st: RunState):
            if not path.is_file():
                return None
            return (f"the {st.step} channels measured so far are saved in {output_name(path)} — queue again to "
                    f"continue from there")

        state = RunState("global_directions", "", generator.w_avg.device.type, int(generator.img_resolution),
                         units_per_step=float(num_images), save_partial=save_partial)
        directions = run_optimisation(1, run, state=state)
        info = f"{directions.describe()}\n{time.perf_counter() - t0:.1f} s; cached in {path}"
        if state.finished_early:
            # Not kept in memory: queued again, the node continues from the file instead of returning this.
            info += (f"\n{state.note()} channels (Finish now): edits use the {directions.num_done} measured "
                     f"channels only; queue again to measure the rest")
        else:
            _cache.put(str(path), directions)
        return {"ui": {"text": [info]}, "result": (directions, info)}

    @staticmethod
    def _reference(generator, clip, name: str):
        path = comfy_env.model_path(name)
        stats_file = path.with_name(_REFERENCE_STATS)
        key = f"{path}|{L.generator_ref(generator).fingerprint}"

        def load():
            GD.check_clip_arch(clip, GD.REFERENCE_CLIP_ARCH, GD.REFERENCE_CLIP_TAG)  # before minutes of statistics
            progress = comfy_env.Progress(D.num_samples)
            return GD.load_reference_fs3(path, generator, s_mean_std=stats_file if stats_file.is_file() else None,
                                         callback=lambda done, total: progress.update(done))

        directions = _cache.get_or_load(key, load)
        directions.check_clip(clip)
        info = f"{directions.describe()}\nfrom {path}" + (f" with {stats_file}" if stats_file.is_file() else "")
        note = directions.clip_weights_note(clip)
        if note:
            info += f"\n{note}"
        return {"ui": {"text": [info]}, "result": (directions, info)}


@register_node("SGS_GlobalDirectionEdit", "Global Direction Edit")
class GlobalDirectionEdit:
    DESCRIPTION = ("StyleCLIP global-direction edit: moves a latent along the StyleSpace direction that turns the "
                   "neutral text into the target text (e.g. 'a face' -> 'a smiling face'). alpha is the strength "
                   "(negative reverses it), beta the disentanglement threshold (higher changes fewer channels). "
                   "Milliseconds once the directions are computed, so it is good for sliders and alpha sweeps.")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = (LATENT, "STRING")
    RETURN_NAMES = ("latent", "report")
    OUTPUT_TOOLTIPS = ("The edited latent(s) in StyleSpace (s): render with Synthesize. With sweep_frames N, N "
                       "edits per input latent with alpha from -alpha to +alpha.",
                       "How many channels the edit changes, and how long it took.")
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        lo, hi = GD.EDIT_ALPHA_RANGE
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator the latent and the directions belong to."}),
                "latent": (LATENT, {"tooltip": "The latent(s) to edit (z, w, w+ or s)."}),
                "clip": (CLIP, {"tooltip": "The CLIP model the directions were computed with."}),
                "directions": (DIRECTIONS, {"tooltip": "From Compute Global Directions."}),
                "target_text": ("STRING", {"default": "a smiling face", "tooltip": "What the edit should lead to."}),
                "neutral_text": ("STRING", {"default": "a face", "tooltip": "The same description without the "
                                 "change; only the difference between the two texts is applied."}),
                "alpha": ("FLOAT", {"default": D.edit_alpha, "min": lo, "max": hi, "step": 0.1, "tooltip":
                                    "Strength; negative goes the other way (reference range -10..10)."}),
                "beta": ("FLOAT", {"default": D.edit_beta, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                   "Disentanglement: channels less relevant to the text than this are left alone "
                                   "(reference 0.08-0.3; higher = more targeted, 0 = every channel)."}),
            },
            "optional": {
                "sweep_frames": ("INT", {"default": 1, "min": 1, "max": 256, "tooltip": "1 = one edit at alpha. "
                                         "N > 1 = N edits per latent with alpha evenly from -alpha to +alpha, as one "
                                         "batch (e.g. for a video or a contact sheet)."}),
            },
        }

    def edit(self, generator, latent, clip, directions, target_text, neutral_text, alpha, beta, sweep_frames=1):
        t0 = time.perf_counter()
        n = latent.tensor.shape[0]
        L.check_latent_count(n * max(int(sweep_frames), 1), f"{n} latent(s) x {int(sweep_frames)} sweep frames",
                             split="use fewer sweep frames or edit the latents in smaller batches")
        directions.check_clip(clip)
        GD.check_generator(directions, generator, strict=False)  # layout must fit; other weights are only logged
        delta_t = GD.direction_from_text(clip, target_text.strip(), neutral_text.strip())
        styles = L.convert_latent(generator, latent, "s").tensor  # [N, C] on CPU
        frames = int(sweep_frames)
        alphas = [float(alpha)] if frames <= 1 else torch.linspace(-float(alpha), float(alpha), frames).tolist()
        edited, count = [], 0
        for a in alphas:
            out, count = GD.global_direction_edit(styles, directions, delta_t, alpha=a, beta=float(beta))
            edited.append(out)
        # Latent-major order: every frame of the first latent, then the second's (like Interpolate Latents).
        flat = torch.stack(edited, dim=1).reshape(-1, styles.shape[1])
        c = None if latent.c is None else latent.c.repeat_interleave(len(alphas), 0)
        result = L.styles_to_latent(generator, flat, c)
        ms = (time.perf_counter() - t0) * 1000
        sweep = f"alpha {alphas[0]:g} .. {alphas[-1]:g} in {len(alphas)} frames" if len(alphas) > 1 else \
            f"alpha {alphas[0]:g}"
        report = (f"'{neutral_text.strip()}' -> '{target_text.strip()}': {sweep}, beta {float(beta):g}: {count} of "
                  f"{directions.num_done} measured channels changed ({ms:.1f} ms)")
        if count == 0:
            report += "; beta is above every channel's relevance to this text: lower beta"
        return {"ui": {"text": [report]}, "result": (result, report)}

