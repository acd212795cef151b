"""CLIP Latent Optimize: StyleCLIP's latent optimisation, edits a latent toward a text."""

from __future__ import annotations

import dataclasses

from ..core import latents as L
from ..core.edits import clip_optimize as SC
from ..core.edits import presets as PR
from . import comfy_env
from .convert import generator_to_comfy
from .models import check_arcface_device
from .optimize import RunState, preset_input, resolve_preset, run_optimisation, save_stopped_latent
from .registry import register_node
from .types import ARCFACE, CATEGORY_ROOT, CLIP, GENERATOR, LATENT


@register_node("SGS_CLIPLatentOptimize", "CLIP Latent Optimize", optimises=True)
class CLIPLatentOptimize:
    DESCRIPTION = ("StyleCLIP latent optimisation: edits a latent so its image matches a text (e.g. 'a smiling face'),"
                   " while an L2 term (and optionally ArcFace identity) keeps it close to the start. Optimises in W+ "
                   "or StyleSpace S with Adam under the reference schedule (300 steps; preset quick / balanced for fewer). "
                   "Shows the image while it runs; Finish now ends early with the current latent, Stop keeps it in "
                   "output/clip_edits.")
    CATEGORY = f"{CATEGORY_ROOT}/edit"
    RETURN_TYPES = (LATENT, "IMAGE", "STRING")
    RETURN_NAMES = ("latent", "image", "report")
    OUTPUT_TOOLTIPS = ("The edited latent: w+ (space w+) or s (space s; render it with Synthesize).",
                       "The edited image(s).", "Steps, time and the CLIP distance to the text before and after.")
    FUNCTION = "optimize"
    PRESET_KIND = "clip_optimize"

    @classmethod
    def INPUT_TYPES(cls):
        d = SC.DEFAULTS
        return {
            "required": {
                "generator": (GENERATOR, {"tooltip": "The generator the latent belongs to (never modified)."}),
                "latent": (LATENT, {"tooltip": "The latent(s) to edit (z, w, w+, or s from an earlier S-space "
                                    "edit); a batch is edited together."}),
                "clip": (CLIP, {"tooltip": "CLIP from Load CLIP."}),
                "text": ("STRING", {"default": "a face with a big smile", "multiline": True,
                                    "tooltip": "What the image should show."}),
                "space": (list(SC.SPACES), {"default": d.space, "tooltip": "w+: one w per layer (the reference). "
                          "s: StyleSpace, every layer's style channels (more local edits); outputs an s latent."}),
                "num_steps": ("INT", {"default": 0, "min": 0, "max": 100000,
                                      "tooltip": "Optimisation steps; 0 = the preset's count (" +
                                      PR.tooltip("clip_optimize") + ")."}),
                "l2_lambda": ("FLOAT", {"default": d.l2_lambda, "min": 0.0, "max": 10.0, "step": 0.001,
                                        "tooltip": "Weight of ||w - w_start||^2: higher stays closer to the start "
                                        "(reference 0.008)."}),
            },
            "optional": {
                "neutral_text": ("STRING", {"default": "", "multiline": False, "tooltip": "Optional: what the image "
                                 "shows now (e.g. 'a face'). Then only the difference between the texts is applied "
                                 "(directional CLIP loss), which changes less of everything else."}),
                "arcface": (ARCFACE, {"tooltip": "Optional: ArcFace from Load ArcFace, for the identity loss."}),
                "id_lambda": ("FLOAT", {"default": d.id_lambda, "min": 0.0, "max": 10.0, "step": 0.01,
                                        "tooltip": "Weight of the ArcFace identity loss (needs arcface). The "
                                        "reference's default is 0; raise it if an edited face stops looking like "
                                        "the person."}),
                "learning_rate": ("FLOAT", {"default": d.lr, "min": 0.0001, "max": 10.0, "step": 0.001,
                                            "tooltip": "Adam's peak learning rate (reference 0.1)."}),
                "clip_normalize": ("BOOLEAN", {"default": d.clip_normalize, "tooltip": "Feed CLIP properly "
                                   "normalised images. Off reproduces the reference's bug (raw [-1, 1] images), "
                                   "for comparisons only."}),
                "preview_every": ("INT", {"default": 10, "min": 1, "max": 1000,
                                          "tooltip": "Show the current image every this many steps."}),
                "preset": preset_input("clip_optimize"),
            },
        }

    def optimize(self, generator, latent, clip, text, space, num_steps, l2_lambda, neutral_text="", arcface=None,
                 id_lambda=SC.DEFAULTS.id_lambda, learning_rate=SC.DEFAULTS.lr,
                 clip_normalize=SC.DEFAULTS.clip_normalize, preview_every=10, preset=None):
        if not text.strip():
            raise ValueError("the text is empty: describe the edit, e.g. 'a face with a big smile'")
        if id_lambda > 0 and arcface is None:
            raise ValueError(f"id_lambda is {id_lambda:g} but no ArcFace is connected: connect Load ArcFace, or set "
                             f"id_lambda to 0")
        steps = resolve_preset("clip_optimize", "", preset, num_steps=int(num_steps))["num_steps"]
        config = dataclasses.replace(SC.DEFAULTS, num_steps=steps, lr=float(learning_rate),
                                     l2_lambda=float(l2_lambda), id_lambda=float(id_lambda), space=space,
                                     clip_normalize=bool(clip_normalize))
        text_emb = clip.encode_text(text.strip())
        neutral = clip.encode_text(neutral_text.strip()) if neutral_text.strip() else None
        id_loss = None
        if arcface is not None and id_lambda > 0:
            from ..core.losses.arcface import IDLoss

            check_arcface_device(arcface, generator)
            id_loss = IDLoss(arcface)

        def run(callback):
            return SC.clip_optimize(generator, latent, text_emb, clip, config=config, neutral_embedding=neutral,
                                    id_loss=id_loss, callback=callback)

        def save_partial(st: RunState):
            params = st.last_params or {}
            if "ws" in params:
                part = L.Latent(params["ws"].detach().float().cpu().contiguous(), "w+", latent.generator, c=latent.c)
            elif params:
                styles = {k[len("styles/"):]: v for k, v in params.items() if k.startswith("styles/")}
                part = L.styles_to_latent(generator, styles, c=latent.c)
            else:
                return None
            return save_stopped_latent(part, "clip_edits/clip_stopped")

        state = RunState("clip_optimize", "", generator.w_avg.device.type, int(generator.img_resolution),
                         save_partial=save_partial)
        result = run_optimisation(config.num_steps, run, preview_every=preview_every, state=state)
        report = result.report()
        if state.finished_early:
            report += f"\n{state.note()} (Finish now)"
        images = generator_to_comfy(result.image, comfy_env.intermediate_device())
        return {"ui": {"text": [report]}, "result": (result.latent, images, report)}

