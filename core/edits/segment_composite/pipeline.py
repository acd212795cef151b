"""Segment Composite (Barbershop, Zhu et al. 2021): take a region (hair, ...) of a reference photo into a base photo
in StyleGAN2's FS space, optionally with the colour and texture of a third photo (the appearance).

`segment_composite(G, base, reference, region, ...)` follows ZPdesu/Barbershop (methods-edits.md B.1):

1. Embeddings of each photo: II2S W+ (1100 steps) then FS (250 steps: F after the 32 px block + the codes after
   it, S), cached (`EmbeddingCache`). An fs `Latent` input skips its embedding. The same photo given twice (base =
   reference, reference = appearance, ...: the same pixels at G's resolution) is embedded once per run, whatever
   the cache keeps.
2. With a face `parser` (full Barbershop):
   - target segmentation: the base's labels with its region removed, the region where the reference has it (or
     `target_region`); pixels the reference covers with face/neck where the base is background ("disoccluded")
     are filled with the nearest label (the reference uses cv2.inpaint, see `masks.fill_labels`), then two CE-only
     passes of `target_fill_steps` (80) optimise ws[:6] from the mean w and take the parser's labels of the result
     for the region the base loses and for the disoccluded pixels (realistic: CE without the background class +
     CE on the background only; fidelity: plain CE);
   - alignment 1: ws[:6] of the base (from its W+) with its FS codes after, `align_steps1` (140) steps of CE to
     the target; alignment 2: the same for the reference with CE + `style_lambda` (4e4) × the masked Gram style loss
     (VGG16 relu1_2/2_2/3_3/4_3 at 256 px, `core.losses.style` 'barbershop': one Gram implementation with Neural
     Style) between the region of its unaligned image and of the current one, `align_steps2` (100) steps;
   - F mixing at 32x32 with masks dilated / eroded `smooth` (5) times at 256 px and resized bicubically: the
     reference's own F inside the eroded (its region ∩ target), the aligned reference's F inside the eroded target,
     the aligned base's F in the dilated (base region ∪ target) band, the base's F elsewhere.
   With an appearance photo other than the reference, the base is aligned to it as well (its own region as the
   target) for the blending below, as the reference does.
3. Without a parser (mask-only): no alignment; F mixing with the given masks: the reference's F inside the eroded
   (region ∩ target_region), the base's elsewhere. A region cannot move there: `target_region` only restricts it.
4. S blending: u ∈ [0, 1]^{S×w_dim} from 0, Adam then a clamp to [0, 1] each step, `blend_steps` (400), codes
   S = S_base + u ⊙ (S_appearance − S_base), rendered with the F aligned to the appearance; loss = masked LPIPS
   (VGG blocks 1-3 at 256 px) to the base on (1 − dilated base region)(1 − dilated appearance region)(1 − dilated
   region of the current composite) ∪ keep_region + masked LPIPS to the appearance on its eroded region. The result
   renders the blended S with the F aligned to the reference.

Differences from the reference (deliberate, documented): runs on any device (the reference hard-codes CUDA);
labels by class NAME from any parser schema (its class ids are hard-coded for its 16-class BiSeNet, #27); the
disoccluded fill is a nearest-label diffusion (no OpenCV); erosion does not eat regions from the image border;
alignment and blending render with the generator's stored noise (the reference draws fresh noise every step) so a
run is deterministic for a seed; the style loss's VGG gets ImageNet-normalised input (the reference feeds [-1, 1]
images unnormalised); images are resized with an area filter (the reference's own bicubic kernel / LANCZOS); the
parser, its label maps and the cross-entropy run at min(seg_size, G's resolution): 512 px at 1024 px as the
reference (its BiSeNet's own input size), but a smaller generator's images are parsed at their own size rather than
upsampled to 512 px in every target-fill and alignment step (a 256 px generator: 4x less parser work a step, a
64 px one 64x; the trade-off: the BiSeNet then sees faces smaller than the 512 px it was trained on. A seg_size
below the resolution parses smaller still, for speed; above it, it changes nothing).

Progress: `callback(StepProgress)` after every step of every stage with one step count over the whole run (the
total is known up front; cached embeddings are left out of it); `phase` names the stage ('w+ base', 'fs
reference', 'target', 'align base', 'align reference', 'blend', ...). Returning `core.optimize.FINISH` ends the
CURRENT stage after that step and the run goes on with the next (an embedding finished early is used but not
cached); raising cancels the run: the generator, the parser and the cache keep what they had, plus every embedding
completed before the cancel.

Presets (`core.edits.presets`, kind 'segment_composite'): reference = the values above; balanced and quick
(the issue's 'fast') cut the steps (quick: W+ 250, FS 60, fill 2 x 20, align 40 + 30, blend 100). Quick's loss gap,
measured by `bench/bench_segment_composite.py --quality` (a 64 px tiny generator with random-weight LPIPS / VGG /
BiSeNet stand-ins: INDICATIVE ONLY; each stage's loss at quick's step count and at the reference's, from the same
start; "gap" = the share of the reference's loss reduction that quick leaves undone; 22.5 min on this 2-core CPU):

    stage              start    quick   reference   gap
    FS embedding       0.804    0.166   0.019       19 %
    target fill        0.741    0.148   0.085       10 %   (first pass)
    align base         1.170    0.108   0.070        3 %
    align reference    1.302    0.237   0.101       11 %
    blend              0        0       0            -     (the random parser found no hair: both masks empty)

The W+ (II2S) stage was not measured (1100 steps of a 64 px inversion take over half an hour here).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ...errors import LatentError
from ...latents import Latent, check_compatible, check_fs_generator, fs_first_w, generator_ref, synthesize_fs
from ...optimize import autograd_ready, check_finite, descend, has_inference_tensors, loss_values, trainable
from ..inversion import downsample_to, prepare_target
from .config import MODES, CompositeConfig, composite_config
from .embed import (DEFAULT_CACHE, EmbeddingCache, cache_key, embed_fs, embed_wplus, fs_settings, image_digest,
                    wplus_settings)
from .masks import check_mask, dilate, erode, fill_labels, mix_weight, nearest, resize_mask, scaled_iterations
from .progress import Stages

Region = Union[str, Sequence[str], torch.Tensor]
STYLE_LAYERS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3")   # relu1_2, relu2_2, relu3_3, relu4_3 (indices 3, 8, 15, 22)
BLEND_BLOCKS = (1, 2, 3)


@dataclass
class CompositeResult:
    """image `[1, 3, R, R]` in [-1, 1] (CPU); latent: the composite as an fs `Latent` (F aligned to the reference,
    blended S); mask `[1, R, R]`: the region as placed in the composite (the target region); intermediates:
    `[1, 3, R, R]` images in [-1, 1] (FS reconstructions, aligned images, the target label map in colour); seconds
    per stage; mode: 'parser' or 'mask-only'."""

    image: torch.Tensor
    latent: Latent
    mask: torch.Tensor
    intermediates: dict[str, torch.Tensor]
    seconds: dict[str, float]
    mode: str
    steps: int
    total_steps: int
    cached: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report(self) -> str:
        total = self.seconds.get("total", sum(self.seconds.values()))
        lines = [f"Segment Composite ({self.mode}): {self.steps:,} of {self.total_steps:,} steps in {total:.1f} s"]
        lines += [f"  {name}: {s:.1f} s" for name, s in self.seconds.items() if name != "total"]
        if self.cached:
            lines.append(f"cached embeddings: {', '.join(self.cached)}")
        lines.extend(self.notes)
        return "\n".join(lines)


@dataclass
class _Source:
    name: str
    image: torch.Tensor                  # [1, 3, R, R] on the device
    digest: str
    latent: Optional[Latent] = None      # given as an fs latent
    wplus: Optional[torch.Tensor] = None
    ws: Optional[torch.Tensor] = None    # fs codes [1, num_ws, w_dim]
    feats: Optional[torch.Tensor] = None  # F [1, C, 32, 32]
    cached: bool = False


def _place(module, device):
    """`module` usable by autograd on `device`, without moving or changing the caller's module."""
    if module is None:
        return None
    module = autograd_ready(module)
    p = next(iter(list(module.parameters()) + list(module.buffers())), None)
    if p is not None and p.device != torch.device(device):
        module = copy.deepcopy(module).to(device)
    return module.eval()


def _source(G, x, name: str, device) -> _Source:
    R = G.img_resolution
    if isinstance(x, Latent):
        if x.space != "fs":
            raise LatentError(f"{name} is a {x.space} latent; Segment Composite takes an image or an fs latent "
                              f"(make one with core.latents.fs_from_wplus or the FS embedding)")
        if x.batch_size != 1:
            raise LatentError(f"{name} holds {x.batch_size} fs latents; connect one")
        ref = generator_ref(G)
        check_compatible(x, G)
        if x.generator.fingerprint != ref.fingerprint:
            raise LatentError(f"the {name} fs latent was made with {x.generator.name} (fingerprint "
                              f"{x.generator.fingerprint}), not with {ref.name} ({ref.fingerprint}): its F and S "
                              f"codes mean something else there; embed the photo with this generator")
        if x.features_img is not None:
            raise LatentError(f"the {name} fs latent keeps the 32 px skip ('keep'); Segment Composite mixes F in "
                              f"Barbershop's 'drop' convention: make the latent with skip='drop'")
        ws = x.tensor.to(device, torch.float32)
        feats = x.features.to(device, torch.float32)
        with torch.no_grad():
            image = synthesize_fs(G, ws, feats, None, noise_mode="const").clamp(-1, 1)
        return _Source(name, image, image_digest(image), latent=x, wplus=ws, ws=ws, feats=feats)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be an image tensor [1, 3, H, W] in [-1, 1] or an fs Latent, got "
                        f"{type(x).__name__}")
    if x.ndim == 4 and x.shape[0] != 1:
        raise ValueError(f"{name} is a batch of {x.shape[0]} images; Segment Composite takes one image per input")
    if x.ndim == 4 and x.shape[2] != x.shape[3]:
        raise ValueError(f"{name} is {x.shape[3]}x{x.shape[2]}: align the face first (a square aligned crop)")
    image, _ = prepare_target(x.detach().clone(), R)
    image = image.to(device)
    return _Source(name, image, image_digest(image))


def _frame(x) -> Optional[tuple[int, int]]:
    return tuple(x.shape[-2:]) if isinstance(x, torch.Tensor) else None


def segment_composite(G, base, reference, region: Region, *, appearance=None, appearance_region: Optional[Region] = None,
                      target_region: Optional[torch.Tensor] = None, keep_region: Optional[torch.Tensor] = None,
                      parser=None, mode: str = "realistic", preset: str = "reference",
                      config: Optional[CompositeConfig] = None, lpips=None, vgg=None,
                      cache: Optional[EmbeddingCache] = None, seed: int = 0, callback=None) -> CompositeResult:
    """Composite `region` of `reference` into `base` (see the module docstring for the pipeline).

    Args:
        G: StyleGAN2 generator of at least 64 px (not modified).
        base, reference, appearance: aligned photos `[1, 3, H, W]` in [-1, 1] (resized to G's resolution) or fs
            `Latent`s of G (their embedding is skipped). appearance None: the reference (Barbershop's im3 = im2).
        region: where to take from the reference: a mask `[1, H, W]` in [0, 1] in the reference's frame, or class
            names ('hair', 'hair,hat', a list) of the parser's schema (needs `parser`).
        appearance_region: the same for the appearance (default: `region`).
        target_region: mask of where the region must end up (default: the reference's region: Barbershop's
            structure mode). keep_region: mask of base pixels that must not change (their F stays the base's and
            the blending keeps them close to the base).
        parser: a `FaceParser` (core.models.face_parsing); None = mask-only mode.
        mode: 'realistic' or 'fidelity' (the target fill's loss, as the reference's `sign`).
        preset: 'quick' ('fast'), 'balanced' or 'reference' when `config` is None (`composite_config`).
        config: every setting (`CompositeConfig`); wins over `preset`.
        lpips: LPIPS-VGG (`core.losses.perceptual.LPIPS`; loaded with real weights when None); vgg: VGG16 features
            at relu1_2/2_2/3_3/4_3 for the style loss (loaded when None and needed).
        cache: `EmbeddingCache` (None: the session's `DEFAULT_CACHE`).
        seed: the embeddings' random noise.
        callback: `StepProgress` after every step; FINISH ends the current stage, raising cancels (module docstring).

    Masks: `[1, H, W]` (or `[H, W]`) square, in [0, 1], soft values kept for blending and binarised at 0.5 for labels;
    refused with a ValueError: another batch or aspect ratio, NaN, values outside [0, 1], empty, and full where a full
    mask leaves nothing to do (keep_region; region / target_region with a parser, which needs base pixels outside).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    cfg = config if config is not None else composite_config(preset)
    if not isinstance(cfg, CompositeConfig):
        raise TypeError(f"config must be a CompositeConfig, got {type(cfg).__name__}")
    check_fs_generator(G)
    cache = DEFAULT_CACHE if cache is None else cache
    t_start = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        return _run(G, base, reference, region, appearance, appearance_region, target_region, keep_region, parser,
                    mode, cfg, lpips, vgg, cache, int(seed), callback, t_start)


def _region_names(region) -> Optional[list[str]]:
    if isinstance(region, str):
        return [region]
    if isinstance(region, (list, tuple)) and all(isinstance(r, str) for r in region):
        return list(region)
    return None


def _run(G, base, reference, region, appearance, appearance_region, target_region, keep_region, parser, mode,
         cfg: CompositeConfig, lpips, vgg, cache: EmbeddingCache, seed: int, callback, t_start) -> CompositeResult:
    device = G.w_avg.device
    work = autograd_ready(G) if has_inference_tensors(G) else G
    R = G.img_resolution
    first = fs_first_w(G)
    if cfg.align_layers > first:
        raise ValueError(f"align_layers ({cfg.align_layers}) must be at most {first}: the codes from {first} on are "
                         f"the FS codes (S)")
    names = _region_names(region)
    app_names = _region_names(appearance_region) if appearance_region is not None else None
    if parser is None and (names is not None or app_names is not None):
        raise ValueError(f"the region is given as class names ({', '.join(names or app_names)}), which needs a face "
                         f"parser; connect one, or give the region as a MASK")
    if names is None and not isinstance(region, torch.Tensor):
        raise TypeError(f"region must be a mask tensor [1, H, W] or class names, got {type(region).__name__}")
    full_hint = (": with a parser the alignment needs base pixels outside the region; give a smaller region, or "
                 "connect no parser (mask-only mode) to replace the whole image")
    if parser is not None:
        parser = _parse_at(_place(parser, device), min(cfg.seg_size, R))
        cfg = replace(cfg, seg_size=min(cfg.seg_size, R))
        if names is not None:
            parser.schema.indices(names)  # unknown names: the schema's error lists the valid ones
        if app_names is not None:
            parser.schema.indices(app_names)
    region_mask = None if names is not None else check_mask(region, "region (the reference's mask)", _frame(reference),
                                                            allow_full=parser is None, hint_full=full_hint)
    app_mask = None
    if appearance_region is not None and app_names is None:
        app_mask = check_mask(appearance_region, "appearance_region", _frame(appearance if appearance is not None
                                                                              else reference))
    target_mask = None if target_region is None else check_mask(
        target_region, "target_region", _frame(base), allow_full=parser is None, hint_full=full_hint)
    keep_mask = None if keep_region is None else check_mask(
        keep_region, "keep_region", _frame(base), allow_empty=True, allow_full=False,
        hint_full=": nothing could change; leave the region to replace at 0")
    if appearance_region is None:
        app_names, app_mask = names, region_mask

    # --- inputs and the plan --------------------------------------------------------------------------------
    src_base = _source(work, base, "base", device)
    src_ref = _source(work, reference, "reference", device)
    src_app = src_ref if appearance is None else _source(work, appearance, "appearance", device)
    if src_app is not src_ref and src_app.digest == src_ref.digest and src_app.latent is None and \
            src_ref.latent is None:
        src_app = src_ref       # the same photo twice: Barbershop's im3 == im2
    sources = [src_base, src_ref] + ([src_app] if src_app is not src_ref else [])
    distinct_app = src_app is not src_ref

    gdigest = _weights_digest(work)
    plan: list[tuple[str, int]] = []
    keys, planned = {}, set()
    for s in sources:
        if s.latent is not None:
            continue
        kw = cache_key("w+", s.digest, gdigest, wplus_settings(cfg, seed))
        kf = cache_key("fs", s.digest, gdigest, fs_settings(cfg, seed))
        keys[s.name] = (kw, kf)
        if cache.contains(kf) or kf in planned:       # cached, or the same photo twice (cached by then)
            continue
        planned.add(kf)
        if not cache.contains(kw):
            plan.append((f"w+ {s.name}", cfg.w_steps))
        plan.append((f"fs {s.name}", cfg.fs_steps))
    pairs = [("reference", src_ref)] + ([("appearance", src_app)] if distinct_app else [])
    if parser is not None:
        for label, _ in pairs:
            suffix = "" if label == "reference" else " (appearance)"
            plan += [(f"target{suffix}", 2 * cfg.target_fill_steps), (f"align base{suffix}", cfg.align_steps1),
                     (f"align {label}", cfg.align_steps2)]
    plan.append(("blend", cfg.blend_steps))
    stages = Stages(plan, callback)
    notes: list[str] = []

    # --- networks -------------------------------------------------------------------------------------------
    if lpips is None:
        from ...losses.perceptual import load_lpips
        lpips = load_lpips("vgg")
    lpips = _place(lpips, device).requires_grad_(False)
    if parser is not None and cfg.align_steps2 and cfg.style_lambda:
        if vgg is None:
            from ...losses.perceptual import load_vgg16_features
            vgg = load_vgg16_features(STYLE_LAYERS)
        vgg = _place(vgg, device).requires_grad_(False)

    # --- 1. embeddings ----------------------------------------------------------------------------------------
    cached = []
    embedded: dict[str, _Source] = {}      # FS key -> the source embedded under it in this run
    for s in sources:
        if s.latent is not None:
            continue
        twin = embedded.get(keys[s.name][1])
        if twin is not None:               # the same photo (pixels) for the same generator and settings: once
            s.wplus, s.ws, s.feats = twin.wplus, twin.ws, twin.feats
            notes.append(f"{s.name}: the same photo as the {twin.name}, embedded once")
            continue
        _embed(work, s, cfg, lpips, cache, keys[s.name], seed, stages)
        embedded[keys[s.name][1]] = s
        if s.cached:
            cached.append(s.name)

    ms = min(cfg.lpips_size, R)                          # mask / loss size (256 px in the reference)
    it = scaled_iterations(cfg.smooth, ms)
    keep_ms = None if keep_mask is None else resize_mask(keep_mask, ms).to(device)
    intermediates: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for s in sources:
            intermediates[f"reconstruction {s.name}"] = _render(work, s.ws, s.feats)

    # --- 2./3. F mixing (with alignment when there is a parser) -------------------------------------------------
    if parser is not None:
        schema = parser.schema
        labels = {s.name: _labels(parser, s.image, cfg.seg_size) for s in sources}
        classes_ref = _classes(schema, names, region_mask, labels["reference"], cfg.seg_size, "region")
        classes_app = (classes_ref if not distinct_app else
                       _classes(schema, app_names, app_mask, labels["appearance"], cfg.seg_size, "appearance_region"))
        mixed = {}
        region_final = None
        for label, s in pairs:
            classes = classes_ref if label == "reference" else classes_app
            given = region_mask if label == "reference" else app_mask
            r_s = (_isin(labels[s.name], classes) if given is None else
                   (resize_mask(given, cfg.seg_size)[0, 0] >= 0.5).to(device))
            t_given = None
            if label == "reference" and target_mask is not None:
                t_given = (resize_mask(target_mask, cfg.seg_size)[0, 0] >= 0.5).to(device)
            suffix = "" if label == "reference" else " (appearance)"
            target, h_target, r_base = _target_segmentation(
                work, parser, labels["base"], labels[s.name], r_s, t_given, classes, mode, cfg, stages,
                f"target{suffix}")
            intermediates[f"target{suffix}"] = _colour(target, schema, R)
            fa1 = _align(work, parser, src_base, target, None, classes, cfg, cfg.align_steps1, stages,
                         f"align base{suffix}")
            fo = _align(work, parser, s, target, vgg, classes, cfg, cfg.align_steps2, stages, f"align {label}")
            mixed[label] = _mix_aligned(src_base.feats, s.feats, fa1, fo, r_base, h_target, r_s, keep_ms, ms, it)
            if label == "reference":
                region_final = h_target.float()[None, None]
                r_base_final = r_base
            else:
                r_app_seg = r_s
        if not distinct_app:
            r_app_seg = _isin(labels["reference"], classes_ref) if region_mask is None else \
                (resize_mask(region_mask, cfg.seg_size)[0, 0] >= 0.5).to(device)
        f12 = mixed["reference"]
        f13 = mixed.get("appearance", f12)
        with torch.no_grad():
            x13 = _render(work, src_base.ws, f13)
            hm_x = nearest(_isin(_labels(parser, x13, cfg.seg_size), classes_app).float()[None, None], ms)
        hm1 = nearest(r_base_final.float()[None, None], ms)
        hm3 = nearest(r_app_seg.float()[None, None], ms)
        mask_out = resize_mask(region_final.cpu(), R)
    else:
        m2 = resize_mask(region_mask, ms).to(device)
        t12 = m2 if target_mask is None else torch.minimum(m2, resize_mask(target_mask, ms).to(device))
        f12 = _mix_masks(src_base.feats, src_ref.feats, t12, keep_ms, it)
        m3 = resize_mask(app_mask, ms).to(device)
        f13 = _mix_masks(src_base.feats, src_app.feats, m3, keep_ms, it) if distinct_app else f12
        hm1 = t12 if target_mask is None else resize_mask(target_mask, ms).to(device)
        hm3, hm_x = m3, m3
        mask_r = resize_mask(region_mask, R)
        mask_out = mask_r if target_mask is None else torch.minimum(mask_r, resize_mask(target_mask, R))
    with torch.no_grad():
        intermediates["aligned"] = _render(work, src_base.ws, f12)
        if distinct_app:
            intermediates["aligned (appearance)"] = _render(work, src_base.ws, f13)

    # --- 4. S blending ------------------------------------------------------------------------------------------
    face = (1 - dilate(hm1, it)) * (1 - dilate(hm3, it)) * (1 - dilate(hm_x, it))
    if keep_ms is not None:
        face = torch.maximum(face, keep_ms)
    hair = erode(hm3, it)
    ws = _blend(work, lpips, src_base, src_app, f13, face, hair, ms, cfg, stages)
    with torch.no_grad():
        image = _render(work, ws, f12)
    latent = Latent(ws.detach().to("cpu", torch.float32).contiguous(), "fs", generator_ref(work),
                    features=f12.detach().to("cpu", torch.float32).contiguous())
    seconds = dict(stages.seconds)
    seconds["total"] = time.perf_counter() - t_start
    return CompositeResult(image=image.clamp(-1, 1).cpu(), latent=latent, mask=mask_out[0].clamp(0, 1).cpu(),
                           intermediates={k: v.detach().float().clamp(-1, 1).cpu() for k, v in intermediates.items()},
                           seconds=seconds, mode="parser" if parser is not None else "mask-only",
                           steps=stages.done, total_steps=stages.total, cached=cached, notes=notes)


# ------------------------------------------------------------------------------------------------
# Pieces


def _weights_digest(G) -> str:
    from ...latents import weights_digest
    return weights_digest(G)


def _render(G, ws, feats) -> torch.Tensor:
    return synthesize_fs(G, ws, feats, None, noise_mode="const")


def _embed(G, s: _Source, cfg: CompositeConfig, lpips, cache: EmbeddingCache, keys, seed: int,
           stages: Stages) -> None:
    kw, kf = keys
    num_ws, w_dim = G.num_ws, G.w_dim
    c_f = int(getattr(G.synthesis, "b32").conv1.out_channels)
    shapes_f = {"wplus": (1, num_ws, w_dim), "ws": (1, num_ws, w_dim), "features": (1, c_f, 32, 32)}
    got = cache.get(kf, shapes_f)
    device = s.image.device
    if got is not None:
        s.wplus, s.ws, s.feats = (got[k].to(device) for k in ("wplus", "ws", "features"))
        s.cached = True
        return
    meta = {"image": s.digest, "generator": _weights_digest(G)}
    got = cache.get(kw, {"wplus": (1, num_ws, w_dim)})
    if got is not None:
        s.wplus = got["wplus"].to(device)
    else:
        prior = cache.prior(G, cfg.prior_samples) if cfg.p_norm_lambda and cfg.w_steps else None
        stage = f"w+ {s.name}"
        stages.ensure(stage, cfg.w_steps)
        stages.begin(stage)
        s.wplus, done = embed_wplus(G, s.image, cfg, lpips, prior, seed, stages, stage)
        stages.end(stage)
        if done:
            cache.put(kw, {"wplus": s.wplus}, {**meta, "kind": "w+"})
    prior = cache.prior(G, cfg.prior_samples) if cfg.p_norm_lambda and cfg.fs_steps else None
    stage = f"fs {s.name}"
    stages.ensure(stage, cfg.fs_steps)
    stages.begin(stage)
    s.ws, s.feats, done = embed_fs(G, s.image, s.wplus, cfg, lpips, prior, seed, stages, stage)
    stages.end(stage)
    if done:
        cache.put(kf, {"wplus": s.wplus, "ws": s.ws, "features": s.feats}, {**meta, "kind": "fs"})


def _parse_at(parser, size: int):
    """The parser running at `size` px (its input, its logits, the label maps and the cross-entropy): min(seg_size,
    generator resolution). A 1024 px generator parses at 512 as the reference does (its BiSeNet's own size, images
    downsampled 2x); a smaller generator parses at its own resolution instead of upsampling every alignment step's
    image to 512 px (4x to 64x the parser's work for the same pixels). A shallow copy: the caller's parser is not
    changed."""
    if getattr(parser, "input_size", size) == size:
        return parser
    view = copy.copy(parser)
    view.input_size = int(size)
    return view


def _seg_logits(parser, img: torch.Tensor, size: int) -> torch.Tensor:
    lg = parser.logits(img).float()
    if lg.shape[-1] != size or lg.shape[-2] != size:
        lg = F.interpolate(lg, size=(size, size), mode="bilinear", align_corners=False)
    return lg


def _labels(parser, img: torch.Tensor, size: int) -> torch.Tensor:
    """The parser's label map `[S, S]` (long) of an image `[1, 3, R, R]`."""
    with torch.no_grad():
        return _seg_logits(parser, img, size).argmax(1)[0]


def _isin(labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    return torch.isin(labels, torch.tensor(list(classes), device=labels.device))


def _classes(schema, names, mask, labels, size: int, what: str) -> list[int]:
    """The parser's classes of the region: those of the names, or the most frequent label inside a mask."""
    if names is not None:
        return schema.indices(names)
    inside = (resize_mask(mask, size)[0, 0] >= 0.5).to(labels.device)
    counts = torch.bincount(labels[inside].flatten(), minlength=schema.num_classes)
    cls = int(counts.argmax())
    if cls in schema.indices("background"):
        raise ValueError(f"the {what} mask covers mostly background according to the face parser ({schema.name}); "
                         f"a region must be part of the face or hair (or connect no parser: mask-only mode)")
    return [cls]


def _colour(labels: torch.Tensor, schema, R: int) -> torch.Tensor:
    from ...models.face_parsing import colorize_labels
    rgb = colorize_labels(labels[None].cpu(), schema)
    return F.interpolate(rgb, size=(R, R), mode="nearest") * 2 - 1


def _ce(logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cross-entropy as torch.nn.CrossEntropyLoss (weighted mean); 0 when no pixel has weight (the reference would
    divide by zero)."""
    if weight is not None and not bool((weight[target] > 0).any()):
        return logits.sum() * 0
    return F.cross_entropy(logits, target[None], weight=weight)


def _target_segmentation(G, parser, l1, l2, r2, t_given, classes, mode, cfg, stages, stage):
    """Barbershop's `create_target_segmentation_mask`, with the region as `classes` (and the reference's region
    `r2`, from its labels or the user's mask). Returns (target labels [S, S], target region [S, S] bool, base region
    [S, S] bool)."""
    schema = parser.schema
    device = l1.device
    bg = schema.indices("background")[0]
    cloth = schema.indices("cloth") if "cloth" in schema.valid_names() else []
    main = classes[0]
    r1 = _isin(l1, classes)
    h = r2 if t_given is None else t_given
    seg1 = torch.where(r1, torch.full_like(l1, bg), l1)
    ob = ~r2 & (l2 != bg) & ~_isin(l2, cloth or [-1]) & (seg1 == bg)
    region_label = torch.where(_isin(l2, classes), l2, torch.full_like(l2, main))
    new_target = torch.where(h, region_label, seg1)
    unknown = ((new_target != bg) & ~_isin(new_target, classes)) | ob
    filled = fill_labels(new_target.cpu(), unknown.cpu(), [bg] + list(classes), wanted=ob.cpu()).to(device)
    target = torch.where(ob, filled, new_target)
    ggg = torch.where((l1 != bg) | r2, torch.full_like(l1, main), torch.full_like(l1, bg))
    weight_fg = torch.ones(schema.num_classes, device=device)
    weight_fg[bg] = 0
    weight_bg = 1 - weight_fg

    stages.begin(stage)
    n = cfg.target_fill_steps

    def fill_pass(tgt, offset):
        w = trainable(G.w_avg.detach().float().reshape(1, 1, -1).repeat(1, G.num_ws, 1))
        rest = w[:, cfg.align_layers:].detach().clone()
        opt = torch.optim.Adam([w], lr=cfg.lr)
        gen = None
        for step in range(n):
            ws = torch.cat([w[:, :cfg.align_layers], rest], 1)
            lg = _seg_logits(parser, G.synthesis(ws, noise_mode="const"), cfg.seg_size)
            if mode == "realistic":
                terms = {"ce": cfg.ce_lambda * _ce(lg, tgt, weight_fg), "ce_bg": cfg.ce_lambda * _ce(lg, ggg, weight_bg)}
            else:
                terms = {"ce": cfg.ce_lambda * _ce(lg, tgt)}
            total = sum(terms.values())
            check_finite(total, terms, step=stages.done + offset + step + 1, what="the target segmentation")
            gen = lg.detach().argmax(1)[0]
            descend(opt, total, [w])
            if stages.report(stage, offset + step + 1, loss_values(terms, total)):
                return gen, True
        return gen, False

    gen, stop = fill_pass(target, 0) if n else (None, False)
    if gen is not None:
        target = torch.where(r1 & ~r2, gen, target)
    previous = target.clone()
    if not stop and n:
        gen, _ = fill_pass(torch.where(ob, torch.full_like(target, bg), target), n)
        target = torch.where(ob & (gen != bg), gen, previous)
    stages.end(stage)
    return target, _isin(target, classes), r1


def _align(G, parser, s: _Source, target, vgg, classes, cfg: CompositeConfig, steps: int, stages: Stages,
           stage: str):
    """One alignment (Barbershop's `align_images` steps 1 and 2): ws[:align_layers] from the photo's W+ codes, the
    rest its FS codes; CE to the target (+ the masked style loss with `vgg`). Returns F `[1, C, 32, 32]` of the
    aligned codes."""
    L = cfg.align_layers
    w = trainable(s.wplus[:, :L])
    rest = s.ws[:, L:].detach()
    opt = torch.optim.Adam([w], lr=cfg.lr)
    ms = min(cfg.lpips_size, G.img_resolution)
    style_on = vgg is not None and cfg.style_lambda > 0
    if style_on:
        from ...losses.style import gram_matrix, style_loss
        with torch.no_grad():
            img0 = G.synthesis(torch.cat([w, rest], 1), noise_mode="const")
            hm_s = nearest(_isin(_seg_logits(parser, img0, cfg.seg_size).argmax(1), classes).float()[:, None], ms)
            feats0 = vgg(downsample_to(img0, ms) * hm_s)
            grams = [gram_matrix(f, nearest(hm_s, f.shape[-1]), normalize="barbershop") for f in feats0]
    stages.begin(stage)
    for step in range(steps):
        ws = torch.cat([w, rest], 1)
        img = G.synthesis(ws, noise_mode="const")
        lg = _seg_logits(parser, img, cfg.seg_size)
        terms = {"ce": cfg.ce_lambda * _ce(lg, target)}
        if style_on:
            hm_g = nearest(_isin(lg.detach().argmax(1), classes).float()[:, None], ms)
            feats = vgg(downsample_to(img, ms) * hm_g)
            terms["style"] = cfg.style_lambda * style_loss(
                feats, grams, normalize="barbershop", weights=[1 / len(feats)] * len(feats),
                masks=[nearest(hm_g, f.shape[-1]) for f in feats]).sum()
        total = sum(terms.values())
        check_finite(total, terms, step=stages.done + step + 1, what=f"the alignment ({stage})",
                     hint=f"lower the learning rate (was {cfg.lr})")
        descend(opt, total, [w])
        if stages.report(stage, step + 1, loss_values(terms, total), img):
            break
    stages.end(stage)
    with torch.no_grad():
        return G.synthesis.run(torch.cat([w.detach(), rest], 1), stop=32, noise_mode="const", force_fp32=True).x.float()


def _mix_aligned(f1, f2, fa1, fo, r1, h_target, r2, keep_ms, ms: int, it: int) -> torch.Tensor:
    """Barbershop's F mixing after alignment (masks at the seg size, nearest to `ms`, dilated / eroded `it` times,
    bicubic to 32x32): the reference's F inside the eroded (r2 ∩ target), the aligned reference's inside the eroded
    target, the aligned base's in the dilated (r1 ∪ target), the base's outside."""
    def at_ms(b):
        return nearest(b.float()[None, None], ms)
    low = 1 - mix_weight(dilate(at_ms(r1 | h_target), it))
    fm = fa1 + low * (f1 - fa1)
    low = 1 - mix_weight(erode(at_ms(h_target), it))
    fm = fo + low * (fm - fo)
    low = 1 - mix_weight(erode(at_ms(r2 & h_target), it))
    fm = f2 + low * (fm - f2)
    return _keep(fm, f1, keep_ms, it)


def _mix_masks(f1, f2, region, keep_ms, it: int) -> torch.Tensor:
    """Mask-only F mixing: the reference's F inside the eroded region (soft), the base's elsewhere."""
    w = mix_weight(erode(region, it))
    return _keep(f1 + w * (f2 - f1), f1, keep_ms, it)


def _keep(fm, f1, keep_ms, it: int) -> torch.Tensor:
    if keep_ms is None:
        return fm
    k = mix_weight(dilate(keep_ms, it)).clamp(0, 1)
    return fm + k * (f1 - fm)


def _blend(G, lpips, s1: _Source, s3: _Source, f13, face, hair, ms: int, cfg: CompositeConfig,
           stages: Stages) -> torch.Tensor:
    """Barbershop's `blend_images`: u in [0, 1] (Adam, then clamped each step: its ClampOptimizer) mixing the base's
    and the appearance's S codes, on masked LPIPS (VGG blocks 1-3) to the base on `face` and to the appearance on
    `hair`. Returns the blended codes `[1, num_ws, w_dim]`."""
    first = fs_first_w(G)
    head, s_1, s_3 = s1.ws[:, :first], s1.ws[:, first:], s3.ws[:, first:]
    u = trainable(torch.zeros_like(s_1))
    opt = torch.optim.Adam([u], lr=cfg.lr)
    upto = max(BLEND_BLOCKS)
    with torch.no_grad():   # the targets' features once (the reference runs the network on them every step)
        t1 = lpips.unit_features(downsample_to(s1.image, ms), upto=upto)
        t3 = lpips.unit_features(downsample_to(s3.image, ms), upto=upto)
    stage = "blend"
    stages.begin(stage)
    for step in range(cfg.blend_steps):
        ws = torch.cat([head, s_1 + u * (s_3 - s_1)], 1)
        img = synthesize_fs(G, ws, f13, None, noise_mode="const")
        fx = lpips.unit_features(downsample_to(img, ms), upto=upto)   # one pass for both terms
        terms = {"face": lpips.masked_distance(fx, t1, face, BLEND_BLOCKS, size=(ms, ms)).sum(),
                 "hair": lpips.masked_distance(fx, t3, hair, BLEND_BLOCKS, size=(ms, ms)).sum()}
        total = terms["face"] + terms["hair"]
        check_finite(total, terms, step=stages.done + step + 1, what="the blending",
                     hint=f"lower the learning rate (was {cfg.lr})")
        descend(opt, total, [u])
        with torch.no_grad():
            u.clamp_(0, 1)
        if stages.report(stage, step + 1, loss_values(terms, total), img, params={"u": u.detach().clone()}):
            break
    stages.end(stage)
    return torch.cat([head, s_1 + u.detach() * (s_3 - s_1)], 1)


__all__ = ["CompositeResult", "segment_composite", "STYLE_LAYERS", "BLEND_BLOCKS"]
