"""Invert Image: real images into latents (Image2StyleGAN, NVIDIA's projector, II2S, PTI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..core.deltas import compute_weight_delta, save_weight_delta
from ..core.edits import fs_embedding as FS
from ..core.edits import inversion as I
from ..core.edits import presets as PR
from ..core.latents import Latent, check_fs_generator, generator_ref
from ..core.log import logger
from ..core.optimize import finish_requested
from . import comfy_env
from .caches import ModelCache
from .convert import comfy_to_generator, generator_to_comfy
from .optimize import RunState, output_name, preset_input, resolve_preset, run_optimisation, save_stopped_latent
from .registry import register_node
from .types import CATEGORY_ROOT, ENCODER, GENERATOR, LATENT, WEIGHT_DELTA

_MASK_MODES = ["fit inside mask", "ignore inside mask"]
NODE_METHODS = list(I.METHODS) + [FS.INVERSION_METHOD] + list(I.ENCODER_METHODS)  # ii2s+fs: II2S, then FS
_PRIOR_SUFFIX = ".ii2s-prior"              # not a checkpoint extension, so never listed (see prior_for)
_priors = ModelCache("ii2s_priors", max_items=4)   # by cache file (saves re-reading it; see prior_for)
_nets = ModelCache("perceptual", max_items=4)      # perceptual networks by (name, folders[, layers]): a run needs <= 2


def _steps_tooltip() -> str:
    return ("Optimisation steps (for pti: the pivot); 0 = the preset's count:\n" + PR.tooltip("inversion"))


def prior_for(G, callback=None) -> I.WPrior:
    """The II2S prior of G: from memory, from its cache file, or computed and cached.

    The file is `comfy_env.cache_file(G, ".ii2s-prior", "ii2s_priors")`: `<checkpoint>.ii2s-prior` next to G's
    checkpoint only when that checkpoint is in the model folders and G is its own generator (the same weights),
    else output/ii2s_priors/<fingerprint>-<weights digest>.ii2s-prior. So a tuned copy (Apply Weight Delta, PTI)
    has its own file and never reads or overwrites its base checkpoint's, and a file's recorded source never
    chooses where we write. Memory is keyed by that file, so copies never share an entry either. A cache holding
    another generator's prior is recomputed (`load_w_prior` checks the fingerprint).
    """
    cache = comfy_env.cache_file(G, _PRIOR_SUFFIX, "ii2s_priors")

    def load():
        prior = I.load_w_prior(cache, G)
        if prior is None:
            prior = I.compute_w_prior(G, callback=callback)
            try:
                I.save_w_prior(prior, cache)
            except OSError as e:  # a read-only folder or a full disk: keep it in memory only
                logger.warning("could not cache the II2S prior in %s (%s); it is kept in memory only", cache, e)
        return prior

    return _priors.get_or_load(str(cache), load)


@register_node("SGS_InvertImage", "Invert Image", optimises=True)
class InvertImage:
    DESCRIPTION = ("Finds the latent that makes the generator reproduce an image (GAN inversion): Image2StyleGAN, "
                   "NVIDIA's projector, II2S, PTI (which also tunes a copy of the generator), or II2S followed by "
                   "Barbershop's FS embedding (ii2s+fs: an fs latent, far closer to the photo, still editable in its "
                   "S codes; StyleGAN2 generators of at least 64 px). Align faces first "
                   "(Align Face) for face models. Shows the reconstruction while it runs. preset sets the step "
                   "count (quick: minutes on a CPU for small generators). Finish now ends early with the current "
                   "latent; Stop keeps the latent so far in output/inversions.")
    CATEGORY = f"{CATEGORY_ROOT}/invert"
    RETURN_TYPES = (LATENT, GENERATOR, "IMAGE", "STRING", WEIGHT_DELTA)
    RETURN_NAMES = ("latent", "generator", "reconstruction", "report", "delta")
    OUTPUT_TOOLTIPS = ("The inverted latent (w for projector/PTI, fs for ii2s+fs, w+ otherwise), one per image.",
                       "The generator to render the latent with: the input one, or for PTI its tuned copy.",
                       "The final reconstruction of each image.",
                       "Steps, time, PSNR and LPIPS per image, and any notes (resizing, ...).",
                       "PTI's weight change (tuned − original) for Save Weight Delta; empty for other methods.")
    FUNCTION = "invert"
    PRESET_KIND = "inversion"
    PRESET_DEFAULT_METHOD = I.DEFAULT_METHOD

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator to invert into (it is never modified)."}),
                "image": ("IMAGE", {"tooltip": "Image(s) to invert; a batch is inverted together. Other sizes are "
                                    "resized to the generator's resolution (with a note)."}),
                "method": (NODE_METHODS, {"default": I.DEFAULT_METHOD, "tooltip":
                           "image2stylegan: W+, VGG16 + MSE. projector: NVIDIA's projector.py (one w + noise). "
                           "ii2s: W+ with a learned prior (keeps the latent editable). pti: projector pivot, then "
                           "tunes the generator to the image (best fidelity; outputs a tuned generator). ii2s+fs: "
                           "II2S, then Barbershop's FS embedding of the 32 px features F and the later codes S (an fs "
                           "latent for Synthesize, Save Latent and Segment Composite; StyleGAN2 of at least 64 px). "
                           "e4e / restyle: an encoder (connect encoder), about a second, no optimisation."}),
                "num_steps": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": _steps_tooltip()}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 32 - 1,
                                 "tooltip": "Seeds the random noise some methods use."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Optional mask selecting the pixels to fit (see mask_mode); e.g. ignore "
                                  "the background."}),
                "mask_mode": (_MASK_MODES, {"default": _MASK_MODES[0], "tooltip": "fit inside mask: only masked "
                              "pixels count. ignore inside mask: masked pixels are ignored (LoadImage's MASK marks "
                              "transparent pixels, so use this one with it)."}),
                "learning_rate": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.001,
                                            "tooltip": "0 = the method's reference learning rate."}),
                "tune_steps": ("INT", {"default": 0, "min": 0, "max": 100000,
                                       "tooltip": "PTI: generator tuning steps after the pivot (stops early once "
                                       "LPIPS-AlexNet reaches 0.06). ii2s+fs: FS embedding steps after II2S. Other "
                                       "methods ignore it; 0 = the preset's count."}),
                "preview_every": ("INT", {"default": 10, "min": 1, "max": 1000,
                                          "tooltip": "Show the current reconstruction every this many steps."}),
                "encoder": (ENCODER, {"tooltip": "Optional pSp / e4e / ReStyle encoder (Load Encoder): needed by the "
                            "e4e and restyle methods; with projector, ii2s or pti the optimisation starts exactly at "
                            "the encoder's w+ (initialise from encoder; encoder then PTI is the common recipe). For "
                            "restyle, num_steps sets its passes (0 = 5)."}),
                "preset": preset_input("inversion"),
            },
        }

    def invert(self, generator, image, method, num_steps, seed, mask=None, mask_mode=_MASK_MODES[0],
               learning_rate=0.0, tune_steps=0, preview_every=10, preset=None, encoder=None):
        if method in I.ENCODER_METHODS:
            return self._encode(generator, image, method, num_steps, encoder)
        fs = method == FS.INVERSION_METHOD
        if fs:
            check_fs_generator(generator)  # before any step: a StyleGAN3 or a 32 px generator has no FS space
        cfg = I.METHOD_DEFAULTS["ii2s" if fs else method]
        values = resolve_preset("inversion", method, preset, num_steps=int(num_steps), tune_steps=int(tune_steps))
        steps = values["num_steps"]
        tune = values.get("tune_steps", 0) if cfg.tune_steps or fs else 0
        total = steps + tune
        notes = []
        if image.ndim == 4 and image.shape[-1] == 4:
            notes.append("alpha channel ignored (connect the MASK from Load Image and choose 'ignore inside mask')")
        target = comfy_to_generator(image)
        if mask is not None and mask.numel() and not bool((mask != 0).any()):  # NaN is not 0: core refuses it
            notes.append("the mask is all zero, which is what Load Image gives for a photo without transparency: "
                         "fitted the whole image")
            mask = None
        if mask is not None and mask_mode == _MASK_MODES[1]:
            mask = 1 - mask

        def run(callback):
            prior = prior_for(generator) if cfg.prior_weight else None
            if not fs:
                return I.invert_image(generator, target, method=method, num_steps=steps,
                                      lr=float(learning_rate) or None, mask=mask, prior=prior, tune_steps=tune,
                                      seed=int(seed), callback=callback, perceptual=perceptual_nets(method),
                                      encoder=encoder)
            return invert_fs(generator, target, steps, tune, mask=mask, prior=prior, seed=int(seed),
                             lr=float(learning_rate) or None, callback=callback, encoder=encoder)

        state = RunState("inversion", method, generator.w_avg.device.type, int(generator.img_resolution),
                         save_partial=lambda st: save_stopped_inversion(generator, method, st,
                                                                        wplus=encoder is not None))
        result = run_optimisation(total, run, preview_every=preview_every, state=state)  # PTI may stop early
        if state.finished_early:
            notes.append(state.note() + (" (Finish now; PTI without tuning: the pivot)" if cfg.tune_steps and
                                         state.step <= steps else
                                         " (Finish now in II2S: no FS steps, F made from the II2S latent)"
                                         if fs and state.step <= steps else " (Finish now)"))
        result.notes[:0] = notes
        report = result.report()
        images = generator_to_comfy(result.image, comfy_env.intermediate_device())
        return {"ui": {"text": [report]},
                "result": (result.latent, result.generator, images, report, result.delta)}

    def _encode(self, generator, image, method, num_steps, encoder):
        """Methods e4e / restyle: the encoder, no optimisation (num_steps: ReStyle's passes, 0 = its default)."""
        result = I.invert_image(generator, comfy_to_generator(image), method=method, encoder=encoder,
                                num_iterations=int(num_steps) or None)
        report = result.report()
        images = generator_to_comfy(result.image, comfy_env.intermediate_device())
        return {"ui": {"text": [report]},
                "result": (result.latent, result.generator, images, report, result.delta)}


@dataclass
class FSInversion:
    """What Invert Image's ii2s+fs returns: the II2S run and the FS embedding, reported together."""

    ii2s: I.InversionResult
    fs: FS.FSResult
    latent: Latent
    image: object
    generator: object
    delta: object = None
    notes: list = field(default_factory=list)

    def report(self) -> str:
        return "\n".join(self.notes + [self.ii2s.report(), self.fs.report()])


def invert_fs(generator, target, steps: int, fs_steps: int, *, mask, prior, seed: int, lr, callback,
              encoder=None) -> FSInversion:
    """II2S (`steps`), then the FS embedding (`fs_steps`) from its latent, under one progress count. "Finish now"
    during II2S skips the FS steps (the fs latent is then F made from the II2S latent). With an encoder, II2S starts
    at its w+."""
    total = steps + fs_steps
    finished = []

    def ii2s_progress(p):  # II2S reports its own total; the node's bar counts both phases
        p.total = total
        answer = callback(p)
        if finish_requested(answer):
            finished.append(True)
        return answer

    nets = perceptual_nets("ii2s")
    w = I.invert_image(generator, target, method="ii2s", num_steps=steps, lr=lr, mask=mask, prior=prior, seed=seed,
                       callback=ii2s_progress, perceptual=nets, encoder=encoder)
    r = FS.embed_fs(generator, target, w.latent, num_steps=0 if finished else fs_steps, mask=mask, prior=prior,
                    seed=seed, perceptual=nets, callback=callback, step_offset=len(w.history), total_steps=total)
    return FSInversion(ii2s=w, fs=r, latent=r.latent, image=r.image, generator=generator)


def save_stopped_inversion(generator, method: str, state: RunState, wplus: bool = False):
    """Stop: write the latent of the last completed step (PTI in its tuning phase: the pivot and the weight change
    so far) to output/inversions/; the sentence saying where. None when no step has finished."""
    params = state.last_params or {}
    ws = params.get("ws")
    if ws is None:
        return None
    if "features" in params:  # ii2s+fs in its FS phase (Barbershop's drop convention: no stored skip)
        latent = Latent(ws.detach().float().cpu().contiguous(), "fs", generator_ref(generator),
                        features=params["features"].detach().float().cpu().contiguous())
    else:  # an encoder start optimises w+ for every method
        space = "w" if I.METHOD_DEFAULTS.get(method, I.METHOD_DEFAULTS["ii2s"]).space == "w" and not wplus else "w+"
        tensor = ws[:, 0] if space == "w" else ws
        latent = Latent(tensor.detach().float().cpu().contiguous(), space, generator_ref(generator))
    where = save_stopped_latent(latent, f"inversions/{method}_stopped")
    tuned = getattr(state.last, "model", None)
    if tuned is not None:  # PTI's tuning phase: keep the weights tuned so far too
        delta = compute_weight_delta(generator, tuned, kind="pti", dtype="float16",
                                     metadata={"method": method, "steps": state.step, "stopped": True})
        if delta.tensors:
            path = comfy_env.next_output_path(f"inversions/{method}_stopped_delta", comfy_env.LATENT_EXTENSION)
            save_weight_delta(delta, path)
            where += (f"; the tuned weights so far as {output_name(path)} — apply them with Apply Weight Delta "
                      f"(the latent is the pivot)")
    return where


def perceptual_nets(method: str) -> dict:
    """The perceptual networks `method` needs, from the pack's perceptual model folders (cached)."""
    return {name: perceptual_net(name) for name in I.PERCEPTUAL_NEEDS[method]}


def perceptual_net(name: str, layers: Optional[tuple[str, ...]] = None):
    """One perceptual network ('lpips_vgg', 'lpips_alex' or 'vgg16_features' tapped at `layers`, default
    Image2StyleGAN's) from the pack's perceptual model folders, cached: Invert Image and Segment Composite share
    one copy."""
    from ..core.losses import perceptual as P

    if name not in ("lpips_vgg", "lpips_alex", "vgg16_features"):
        raise ValueError(f"unknown perceptual network {name!r}: 'lpips_vgg', 'lpips_alex' or 'vgg16_features'")
    dirs = comfy_env.perceptual_dirs()

    def load():
        if name == "vgg16_features":
            return P.load_vgg16_features(layers or P.IMAGE2STYLEGAN_LAYERS, model_dirs=dirs)
        return P.load_lpips("vgg" if name == "lpips_vgg" else "alex", model_dirs=dirs)

    key = (name, tuple(map(str, dirs))) + ((tuple(layers),) if layers else ())
    return _nets.get_or_load(key, load)
