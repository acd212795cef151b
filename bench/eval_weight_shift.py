"""Evaluate a weight shift the way issue 15 asks: edit strength against drift, beside Global Direction Edit at
matched strength, and (optionally) FID of the seed paper's protocol.

For N seeds (default 64, psi 0.7) and each k in --ks (default -3..3) the base image (k = 0) and the edited one
(`apply_weight_shifts(G, [(shift, k)])`, same w, 'const' noise) are compared:

  * CLIP directional strength, StyleGAN-NADA's definition: cos(E_I(edited) - E_I(base), dT), with
    dT = normalise(E_T(text) - E_T(neutral)) (template-averaged prompts, `global_directions.direction_from_text`,
    the same dT Global Direction Edit uses). Column `clip_dir_cos`; 0 where the image did not change.
  * its magnitude along dT: (E_I(edited) - E_I(base)) . dT, column `clip_dir_proj`. The cosine says whether an
    edit goes the text's way, not how far: a tiny edit in the right direction already scores high, and the
    cosine of a latent edit is nearly constant in its strength for small strengths. The projection grows with
    the edit, so it is what strengths are matched on by default (`--match proj`; `--match cos` matches the
    cosine itself, which may have no solution; the table then says `match_converged` False).
  * identity drift: ArcFace IR-SE50 cosine between edited and base (`core.losses.arcface`; needs
    model_ir_se50.pth in --arcface-dir, else the column is empty; --no-identity for non-faces);
  * LPIPS drift from the base (`core.losses.perceptual`, LPIPS-Alex as the spec says, at --lpips-res px).

Global Direction Edit (`core.edits.global_directions`, StyleCLIP) is evaluated on the same seeds at MATCHED
strength: for each k, the alpha whose mean CLIP strength over the seeds equals the shift's (bracketing by doubling
from --gd-alpha-start up to --gd-alpha-max, then bisection to a relative tolerance --match-tol); its rows carry
the alpha found, the target and whether the search converged. Its directions come from --directions (a file from
the Global Directions node / `compute_relevance`; computing them for a 1024 px model takes hours).

FID (the paper's protocol: FID of 3,000 edited images against real images, per k, both methods, k = 0 as the
inversion-free baseline) when --fid-real (a folder of real images) and --inception-weights (the FID Inception
weights, pt_inception-2015-12-05-6726825d.pth, as a .pth or .safetensors state dict) are given. Computed by
torchmetrics' FrechetInceptionDistance (torch-fidelity's Inception port): `pip install torchmetrics[image]`
(torchmetrics + torch-fidelity). The weights file is read safely here (weights_only / safetensors) and handed
to torch-fidelity as a state dict we wrote ourselves, because torch-fidelity unpickles the path it is given.

Outputs in --out: weight_shift_eval.csv, weight_shift_eval.json (settings, rows, the alpha searches) and
weight_shift_eval.png (strength vs LPIPS / identity, both methods; needs matplotlib, else skipped with a note).

    python bench/eval_weight_shift.py --checkpoint ffhq.pkl --shift big_nose.safetensors \\
        --directions ffhq_gd.safetensors --clip ViT-B-32 --clip-dir models/clip \\
        --arcface-dir models/arcface --lpips-dir models/perceptual --device cuda --out results/big_nose
    python bench/eval_weight_shift.py --checkpoint ffhq.pkl --text "a face with a big nose" --neutral "a face" \\
        --layer b16.conv1 --train-steps 200 --directions ffhq_gd.safetensors ...      # train the shift first
    ... --fid-real ffhq_images/ --inception-weights pt_inception-2015-12-05-6726825d.pth --fid-images 3000
    python bench/eval_weight_shift.py --smoke --out /tmp/ws_eval    # tiny random everything: runs in seconds

`--smoke` uses a tiny random generator, a tiny random CLIP, random LPIPS/ArcFace stand-ins, Global Directions
measured on the spot and a shift trained on the spot: it checks the machinery, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import core  # noqa: E402
from core.edits import global_directions as GD  # noqa: E402
from core.edits.weight_shift import apply_weight_shifts, conv_layers  # noqa: E402
from core.losses import arcface as A  # noqa: E402
from core.losses import perceptual as P  # noqa: E402
from core.networks.style_space import flatten_s, unflatten_s  # noqa: E402

COLUMNS = ["method", "k", "alpha", "n", "clip_dir_cos", "clip_dir_cos_std", "clip_dir_proj", "clip_dir_proj_std",
           "id_cos", "id_cos_std", "lpips", "lpips_std", "match_on", "match_target", "match_value", "match_converged",
           "match_evals", "fid", "fid_images"]
METHODS = ("weight_shift", "global_direction")
FID_INSTALL = "pip install torchmetrics[image]   (torchmetrics + torch-fidelity)"
SMOKE_CLIP = "SGS-EvalWeightShift-Tiny"
SMOKE_CLIP_CFG = {"embed_dim": 32,
                  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def log(*a) -> None:
    print(*a, flush=True)


# ------------------------------------------------------------------------------------------------
# Measuring one set of edited images against the base


class Evaluator:
    """Holds the base images' measurements for the seeds and measures edited renders against them."""

    def __init__(self, G, ws: torch.Tensor, clip, delta_t: torch.Tensor, *, lpips, arcface, batch_size: int,
                 lpips_res: int):
        self.G, self.ws, self.clip, self.lpips, self.arcface = G, ws, clip, lpips, arcface
        self.dt = F.normalize(delta_t.float().reshape(1, -1), dim=-1).cpu()
        self.batch_size, self.lpips_res = batch_size, lpips_res
        self.device = G.w_avg.device
        self.base = self._measure(lambda w: G.synthesis(w, noise_mode="const"), full=True)

    def _small(self, img: torch.Tensor) -> torch.Tensor:
        r = self.lpips_res
        return img if img.shape[-1] == r else F.interpolate(img, size=(r, r), mode="area")

    @torch.no_grad()
    def _measure(self, render: Callable[[torch.Tensor], torch.Tensor], *, full: bool) -> dict:
        out = {"emb": [], "small": [], "arc": []}
        for i in range(0, len(self.ws), self.batch_size):
            img = render(self.ws[i:i + self.batch_size].to(self.device)).float()
            out["emb"].append(self.clip.encode_image(img.to(self.clip.device)).float().cpu())
            if full:
                small = self._small(img)
                out["small"].append(small.cpu())
                if self.arcface is not None:
                    out["arc"].append(A.arcface_features(self.arcface, small).float().cpu())
        return {k: torch.cat(v) if v else None for k, v in out.items()}

    def strength(self, emb: torch.Tensor) -> dict:
        diff = emb - self.base["emb"]
        proj = (diff * self.dt).sum(-1)
        norm = diff.norm(dim=-1)
        cos = torch.where(norm > 1e-12, proj / norm.clamp_min(1e-12), torch.zeros_like(proj))
        return {"cos": cos, "proj": proj}

    def clip_only(self, render) -> dict:
        """Strength per image (for the alpha search: no LPIPS / ArcFace)."""
        return self.strength(self._measure(render, full=False)["emb"])

    @torch.no_grad()
    def full(self, render) -> dict:
        m = self._measure(render, full=True)
        s = self.strength(m["emb"])
        dev = next(self.lpips.parameters()).device
        lp = torch.cat([self.lpips(m["small"][i:i + self.batch_size].to(dev),
                                   self.base["small"][i:i + self.batch_size].to(dev)).float().cpu()
                        for i in range(0, len(self.ws), self.batch_size)])
        idc = (m["arc"] * self.base["arc"]).sum(-1) if self.arcface is not None else None
        return {"cos": s["cos"], "proj": s["proj"], "lpips": lp, "id": idc}


def summary(m: dict) -> dict:
    def ms(t):
        if t is None:
            return None, None
        t = t.double()
        return float(t.mean()), float(t.std(unbiased=False))

    row = {"n": len(m["cos"])}
    row["clip_dir_cos"], row["clip_dir_cos_std"] = ms(m["cos"])
    row["clip_dir_proj"], row["clip_dir_proj_std"] = ms(m["proj"])
    row["id_cos"], row["id_cos_std"] = ms(m["id"])
    row["lpips"], row["lpips_std"] = ms(m["lpips"])
    return row


# ------------------------------------------------------------------------------------------------
# Renderers


def shift_renderer(G, shift, k: float):
    Gk = apply_weight_shifts(G, [(shift, k)]) if k != 0 else G
    return lambda w: Gk.synthesis(w, noise_mode="const")


def gd_renderer(G, directions, delta_t: torch.Tensor, alpha: float, beta: float):
    def render(w):
        flat = flatten_s(G.synthesis.w_to_s(w))
        edited, _ = GD.global_direction_edit(flat, directions, delta_t, alpha=alpha, beta=beta)
        return G.synthesis.from_s(unflatten_s(G, edited), noise_mode="const")
    return render


# ------------------------------------------------------------------------------------------------
# Matched strength: the Global Direction alpha whose mean CLIP strength equals a target


def match_alpha(score: Callable[[float], float], target: float, *, start: float, alpha_max: float, tol: float,
                max_evals: int) -> dict:
    """Find alpha with score(alpha) = target (score(0) = 0), by doubling |alpha| from `start` (sign of the
    target) until the target is bracketed, then bisection until |score - target| <= tol * |target|.

    Returns {alpha, value, converged, evals, note}. When the target is not reached within ±alpha_max (or the
    evaluations run out) the closest alpha seen is returned with converged False."""
    seen: dict[float, float] = {0.0: 0.0}

    def f(a: float) -> float:
        if a not in seen:
            seen[a] = float(score(a))
        return seen[a]

    def result(converged: bool, note: str) -> dict:
        best = min(seen, key=lambda a: (abs(seen[a] - target), abs(a)))
        return {"alpha": best, "value": seen[best], "converged": converged, "evals": len(seen) - 1, "note": note}

    if target == 0 or not math.isfinite(target):
        return {"alpha": 0.0, "value": 0.0, "converged": target == 0, "evals": 0,
                "note": "target is 0: alpha 0" if target == 0 else "target is not finite"}
    sign = 1.0 if target > 0 else -1.0
    goal = abs(target)
    close = lambda v: abs(v - target) <= tol * goal  # noqa: E731
    lo, hi = 0.0, sign * abs(start)
    while sign * f(hi) < goal:
        if close(f(hi)):
            return result(True, "")
        lo = hi
        if abs(hi) >= alpha_max or len(seen) > max_evals:
            return result(False, f"not reached within |alpha| <= {abs(hi):g} (largest strength "
                                 f"{max(sign * v for v in seen.values()):.4g} vs {goal:.4g})")
        hi = sign * min(abs(hi) * 2, alpha_max)
    while not close(f(hi)) and len(seen) <= max_evals:
        mid = (lo + hi) / 2
        if sign * f(mid) < goal:
            lo = mid
        else:
            hi = mid
        if close(f(mid)):
            return result(True, "")
    return result(close(f(hi)), "" if close(f(hi)) else f"stopped after {len(seen) - 1} evaluations")


# ------------------------------------------------------------------------------------------------
# FID (torchmetrics' FrechetInceptionDistance: a well-kept library, not our own code)


def _fid_module():
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        import torch_fidelity  # noqa: F401  (torchmetrics' Inception comes from it)
    except ImportError as e:
        raise SystemExit(f"FID needs torchmetrics and torch-fidelity, which are not installed ({e}): "
                         f"{FID_INSTALL}") from e
    return FrechetInceptionDistance


def make_fid(weights: str, device):
    """A FrechetInceptionDistance (2048 features, real features kept across resets) from a local weights file."""
    FID = _fid_module()
    from core.files import read_state_dict

    state = read_state_dict(weights, what="FID Inception weights",
                            hint="use pt_inception-2015-12-05-6726825d.pth (pytorch-fid / torch-fidelity)")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad or not state:
        raise SystemExit(f"{weights}: not a state dict of tensors (entries {bad[:3]}); expected the FID Inception "
                         f"weights pt_inception-2015-12-05-6726825d.pth")
    # torch-fidelity reads its path with torch.load(weights_only=False): give it a file we wrote from tensors only.
    tmp = Path(tempfile.mkdtemp(prefix="sgs_fid_")) / "inception.pth"
    torch.save(dict(state), tmp)
    try:
        fid = FID(feature=2048, reset_real_features=False, normalize=False,
                  feature_extractor_weights_path=str(tmp))
    except RuntimeError as e:
        raise SystemExit(f"{weights}: torch-fidelity refused these weights ({str(e)[:300]}); expected the FID "
                         f"Inception weights pt_inception-2015-12-05-6726825d.pth") from e
    finally:
        tmp.unlink(missing_ok=True)
        tmp.parent.rmdir()
    return fid.to(device)


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    return ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def add_real_images(fid, folder: str, resolution: int, batch_size: int, device, limit: int) -> int:
    import numpy as np
    from PIL import Image

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit or None]
    if not files:
        raise SystemExit(f"--fid-real {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    resized = 0
    for i in range(0, len(files), batch_size):
        batch = []
        for p in files[i:i + batch_size]:
            im = Image.open(p).convert("RGB")
            if im.size != (resolution, resolution):
                resized += 1
                im = im.resize((resolution, resolution), Image.LANCZOS)
            batch.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
        fid.update(torch.stack(batch).to(device), real=True)
    if resized:
        log(f"   note: {resized} real image(s) were not {resolution} px and were resized (LANCZOS)")
    return len(files)


def fid_of(fid, G, render, seeds: list[int], psi: float, batch_size: int) -> float:
    fid.reset()   # keeps the real features (reset_real_features=False)
    device = G.w_avg.device
    for i in range(0, len(seeds), batch_size):
        with torch.no_grad():
            z = core.seeds_to_z(seeds[i:i + batch_size], G.z_dim).to(device)
            img = render(G.mapping(z, None, truncation_psi=psi))
        fid.update(to_uint8(img).to(fid.device), real=False)
    return float(fid.compute())


# ------------------------------------------------------------------------------------------------
# Inputs


def smoke_inputs(args, device):
    """Tiny random generator, CLIP, LPIPS, ArcFace; Global Directions and the shift made on the spot."""
    import open_clip

    cfg = Path(tempfile.mkdtemp(prefix="sgs_eval_clip_")) / f"{SMOKE_CLIP}.json"
    cfg.write_text(json.dumps(SMOKE_CLIP_CFG))
    open_clip.add_model_config(str(cfg))
    from core.models.clip import random_clip

    clip = random_clip(SMOKE_CLIP, seed=0, device=device)
    syn = core.StyleGAN2Config(channel_base=512, channel_max=32, conv_clamp=256)
    G = core.build_generator(core.GeneratorConfig(arch="stylegan2", z_dim=16, w_dim=16, img_resolution=32,
                                                  mapping=core.MappingConfig(num_layers=2), synthesis=syn), seed=0)
    core.compute_w_avg(G, num_samples=500, seed=0)
    G.info.name = "tiny-random-stylegan2"
    G = G.to(device).requires_grad_(False)
    lpips = P.random_lpips("alex", seed=1).to(device)
    arcface = None if args.no_identity else TinyIdentity().to(device)
    return G, clip, lpips, arcface


class TinyIdentity(torch.nn.Module):
    """--smoke's stand-in for ArcFace IR-SE50 (a random IR-SE50 alone would take most of a smoke run): a seeded
    random conv net called like it (`arcface_features` crops the face, this returns unit 512-d rows)."""

    def __init__(self, seed: int = 2):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 16, 5, stride=4)
        self.fc = torch.nn.Linear(16 * 16, 512)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * p[0].numel() ** -0.5 if p.ndim > 1 else
                        torch.randn(p.shape, generator=gen) * 0.1)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(F.leaky_relu(self.conv(x), 0.2), 4)
        return F.normalize(self.fc(h.flatten(1)), dim=-1)


def real_inputs(args, device):
    from core.models.clip import load_clip

    G = core.load_generator(args.checkpoint, device=device).requires_grad_(False)
    clip = load_clip(args.clip, model_dirs=[args.clip_dir] if args.clip_dir else (), pretrained=args.clip_pretrained,
                     device=device)
    lpips = P.load_lpips("alex", model_dirs=[args.lpips_dir] if args.lpips_dir else (), device=device)
    arcface = None
    if not args.no_identity:
        try:
            arcface = A.load_arcface([args.arcface_dir] if args.arcface_dir else (), device=device).eval()
        except core.MissingWeightsError as e:
            log(f"note: no identity column: {str(e).splitlines()[0]}")
    return G, clip, lpips, arcface


def get_shift(args, G, clip):
    if args.shift:
        try:
            from core.edits.weight_shift import load_weight_shift
        except ImportError as e:  # pragma: no cover - before the file code is merged
            raise SystemExit(f"this checkout cannot read shift files yet ({e}); train one with --text/--layer") from e
        shift = load_weight_shift(args.shift)
        args.text = args.text or shift.metadata.get("prompt")
        args.neutral = args.neutral or shift.metadata.get("neutral_prompt")
        return shift, {"source": str(args.shift)}
    from core.edits.weight_shift import train_weight_shift

    if not args.text:
        raise SystemExit("give --shift FILE, or --text (and --neutral, --layer) to train a shift first")
    layers = conv_layers(G)
    layer = args.layer or layers[len(layers) // 3].name
    log(f"training a shift on {layer}: {args.text!r} vs {args.neutral!r}, {args.train_steps} steps, batch "
        f"{args.train_batch}")
    t0 = time.perf_counter()
    res = train_weight_shift(G, clip, args.text, layer=layer, neutral_text=args.neutral, steps=args.train_steps,
                             batch=args.train_batch, lambda_l2=args.lambda_l2, seed=args.train_seed,
                             two_sided=args.two_sided, **({"lr": args.lr} if args.lr else {}))
    info = {"source": "trained", "layer": layer, "steps": args.train_steps, "seconds": time.perf_counter() - t0}
    if args.save_shift:
        from core.edits.weight_shift import save_weight_shift
        info["saved"] = str(save_weight_shift(res.shift, args.save_shift))
    return res.shift, info


def get_directions(args, G, clip):
    if args.directions:
        return GD.load_directions(args.directions, G, clip), {"source": str(args.directions)}
    if not args.smoke and not args.compute_directions:
        raise SystemExit("Global Direction Edit needs its directions for this generator: --directions FILE (made by "
                         "the Global Directions node or core.edits.global_directions.compute_relevance), or "
                         "--compute-directions N to measure them now over N images (hours at 1024 px)")
    n = args.compute_directions or 4
    log(f"measuring Global Directions over {n} images")
    stats = GD.compute_s_statistics(G, num_samples=1000 if args.smoke else 100_000,
                                    batch_size=384 if args.smoke else 64)
    return GD.compute_relevance(G, clip, stats, num_images=n, batch_size=64 if args.smoke else 8), \
        {"source": "computed", "num_images": n}


# ------------------------------------------------------------------------------------------------


def fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_outputs(out: Path, rows: list[dict], report: dict, match_on: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with open(out / "weight_shift_eval.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: fmt(r.get(c)) for c in COLUMNS})
    written.append(out / "weight_shift_eval.csv")
    (out / "weight_shift_eval.json").write_text(json.dumps({**report, "columns": COLUMNS, "rows": rows}, indent=2))
    written.append(out / "weight_shift_eval.json")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("note: matplotlib is not installed: no chart (pip install matplotlib); the table has every number")
        return written
    x_key = "clip_dir_" + match_on
    panels = [("lpips", "LPIPS-Alex drift from k = 0 (lower is better)")]
    if any(r.get("id_cos") is not None for r in rows):
        panels.append(("id_cos", "ArcFace cosine to k = 0 (higher is better)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (y_key, title) in zip(axes[0], panels):
        for method, marker in zip(METHODS, ("o", "s")):
            pts = sorted((r[x_key], r[y_key], r["k"]) for r in rows
                         if r["method"] == method and r.get(y_key) is not None)
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=method.replace("_", " "))
            for x, y, k in pts:
                ax.annotate(f"{k:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_xlabel(f"CLIP directional strength ({match_on})")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Weight shift vs Global Direction Edit at matched strength ({report['n_seeds']} seeds)")
    fig.tight_layout()
    fig.savefig(out / "weight_shift_eval.png", dpi=120)
    plt.close(fig)
    written.append(out / "weight_shift_eval.png")
    return written


def check_fid_args(args) -> None:
    """Before anything slow: FID needs both inputs, which must exist, and the library."""
    if not (args.fid_real or args.inception_weights):
        return
    if not (args.fid_real and args.inception_weights):
        raise SystemExit("FID needs both --fid-real (a folder of real images) and --inception-weights "
                         "(pt_inception-2015-12-05-6726825d.pth)")
    if not Path(args.fid_real).is_dir():
        raise SystemExit(f"--fid-real {args.fid_real}: not a folder")
    if not Path(args.inception_weights).is_file():
        raise SystemExit(f"--inception-weights {args.inception_weights}: no such file (the FID Inception weights "
                         f"pt_inception-2015-12-05-6726825d.pth, from the pytorch-fid / torch-fidelity releases)")
    _fid_module()


def run(args) -> dict:
    check_fid_args(args)
    device = torch.device(args.device)
    torch.manual_seed(0)
    G, clip, lpips, arcface = smoke_inputs(args, device) if args.smoke else real_inputs(args, device)
    if args.smoke:
        args.text = args.text or "a face with a big nose"
        args.neutral = args.neutral or "a face"
    shift, shift_info = get_shift(args, G, clip)
    if not args.neutral:
        raise SystemExit("the directional strength needs a neutral text: --neutral (e.g. 'a face')")
    directions, dir_info = get_directions(args, G, clip)
    delta_t = GD.direction_from_text(clip, args.text, args.neutral)
    ks = [float(k) for k in args.ks.split(",")]
    seeds = list(range(args.seed0, args.seed0 + args.seeds))
    with torch.no_grad():
        ws = G.mapping(core.seeds_to_z(seeds, G.z_dim).to(device), None, truncation_psi=args.psi)
    lpips_res = min(args.lpips_res, G.img_resolution)
    log(f"{G.info.name}: {G.img_resolution} px; shift {shift.label}; {len(seeds)} seeds at psi {args.psi}; "
        f"k in {ks}; CLIP {clip.name}; matching on clip_dir_{args.match}")
    t0 = time.perf_counter()
    ev = Evaluator(G, ws, clip, delta_t, lpips=lpips, arcface=arcface, batch_size=args.batch_size,
                   lpips_res=lpips_res)
    rows, searches = [], []
    for k in ks:
        row = {"method": "weight_shift", "k": k, "alpha": None, **summary(ev.full(shift_renderer(G, shift, k)))}
        rows.append(row)
        log(f"   weight shift      k {k:+5g}: cos {row['clip_dir_cos']:+.4f} proj {row['clip_dir_proj']:+.5f} "
            f"LPIPS {row['lpips']:.4f}" + (f" ID {row['id_cos']:.4f}" if row["id_cos"] is not None else ""))
    for k in ks:
        target = next(r for r in rows if r["method"] == "weight_shift" and r["k"] == k)[f"clip_dir_{args.match}"]
        if k == 0:
            found = {"alpha": 0.0, "value": 0.0, "converged": True, "evals": 0, "note": "k = 0: the base"}
        else:
            found = match_alpha(lambda a: float(ev.clip_only(gd_renderer(G, directions, delta_t, a, args.beta))
                                                [args.match].mean()),
                                target, start=args.gd_alpha_start, alpha_max=args.gd_alpha_max, tol=args.match_tol,
                                max_evals=args.match_evals)
        searches.append({"k": k, "target": target, **found})
        row = {"method": "global_direction", "k": k, "alpha": found["alpha"],
               **summary(ev.full(gd_renderer(G, directions, delta_t, found["alpha"], args.beta))),
               "match_on": args.match, "match_target": target, "match_value": found["value"],
               "match_converged": found["converged"], "match_evals": found["evals"]}
        rows.append(row)
        log(f"   global direction  k {k:+5g}: alpha {found['alpha']:+8.4g} ({found['evals']} evals, "
            f"{'converged' if found['converged'] else 'NOT converged: ' + found['note']}) cos "
            f"{row['clip_dir_cos']:+.4f} proj {row['clip_dir_proj']:+.5f} LPIPS {row['lpips']:.4f}"
            + (f" ID {row['id_cos']:.4f}" if row["id_cos"] is not None else ""))
    fid_info = None
    if args.fid_real:
        fid = make_fid(args.inception_weights, device)
        n_real = add_real_images(fid, args.fid_real, G.img_resolution, args.batch_size, device, args.fid_real_limit)
        fid_seeds = list(range(args.fid_seed0, args.fid_seed0 + args.fid_images))
        fid_ks = [float(k) for k in args.fid_ks.split(",")] if args.fid_ks else ks
        log(f"FID: {args.fid_images} edited images per (method, k) against {n_real} real images")
        for r in rows:
            if r["k"] not in fid_ks or (r["method"] == "global_direction" and r["k"] == 0):
                continue
            render = (shift_renderer(G, shift, r["k"]) if r["method"] == "weight_shift" else
                      gd_renderer(G, directions, delta_t, r["alpha"], args.beta))
            r["fid"] = fid_of(fid, G, render, fid_seeds, args.psi, args.batch_size)
            r["fid_images"] = args.fid_images
            log(f"   FID {r['method']:16s} k {r['k']:+5g}: {r['fid']:.3f}")
        base = next((r.get("fid") for r in rows if r["method"] == "weight_shift" and r["k"] == 0), None)
        for r in rows:   # k = 0 is the same images for both methods
            if r["method"] == "global_direction" and r["k"] == 0 and base is not None:
                r["fid"], r["fid_images"] = base, args.fid_images
        fid_info = {"real_images": n_real, "images": args.fid_images, "psi": args.psi, "library": "torchmetrics"}
    rows = [{c: r.get(c) for c in COLUMNS} for r in rows]   # every row has every column (None: not measured)
    report = {"generator": G.info.name, "resolution": G.img_resolution, "shift": shift.label, "shift_info": shift_info,
              "directions": dir_info, "text": args.text, "neutral": args.neutral, "clip": clip.name,
              "n_seeds": len(seeds), "seed0": args.seed0, "psi": args.psi, "ks": ks, "beta": args.beta,
              "match_on": args.match, "match_tol": args.match_tol, "lpips": f"LPIPS-alex at {lpips_res} px",
              "identity": "ArcFace IR-SE50" if arcface is not None else None, "fid": fid_info,
              "smoke": bool(args.smoke), "searches": searches, "seconds": time.perf_counter() - t0}
    if args.out:
        for p in write_outputs(Path(args.out), rows, report, args.match):
            log(f"wrote {p}")
    return {"rows": rows, "report": report}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny random generator/CLIP/LPIPS/ArcFace (seconds)")
    ap.add_argument("--checkpoint", help="generator checkpoint (anything core.load_generator reads)")
    ap.add_argument("--shift", help="a weight shift file (.safetensors); else one is trained with --text/--layer")
    ap.add_argument("--text", help="the edit's text (default: the shift file's prompt)")
    ap.add_argument("--neutral", help="the neutral text (default: the shift file's neutral prompt)")
    ap.add_argument("--layer", help="training: the conv layer (default: one a third of the way in)")
    ap.add_argument("--train-steps", type=int, default=None, help="training steps (default 200; --smoke 20)")
    ap.add_argument("--train-batch", type=int, default=2)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--lambda-l2", type=float, default=0.05)
    ap.add_argument("--two-sided", action="store_true", help="training: k = ±1 with the texts swapped")
    ap.add_argument("--save-shift", help="training: save the trained shift here")
    ap.add_argument("--clip", default="ViT-B-32", help="CLIP architecture or hf-hub name (core.models.clip.load_clip)")
    ap.add_argument("--clip-pretrained", default=None, help="open_clip tag or weight file")
    ap.add_argument("--clip-dir", help="folder with the CLIP weights")
    ap.add_argument("--lpips-dir", help="folder with LPIPS-Alex weights (alexnet-owt-7be5be79.pth, lpips_alex.pth)")
    ap.add_argument("--arcface-dir", help="folder with model_ir_se50.pth (identity column)")
    ap.add_argument("--no-identity", action="store_true", help="no ArcFace column (not faces)")
    ap.add_argument("--directions", help="Global Directions file for this generator and CLIP")
    ap.add_argument("--compute-directions", type=int, default=0, help="measure the directions now over N images")
    ap.add_argument("--beta", type=float, default=GD.DEFAULTS.edit_beta, help="Global Direction threshold beta")
    ap.add_argument("--seeds", type=int, default=None,
                    help="number of seeds: seed0, seed0+1, ... (default 64; --smoke 8)")
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--psi", type=float, default=0.7)
    ap.add_argument("--ks", default="-3,-2,-1,0,1,2,3")
    ap.add_argument("--match", default="proj", choices=("proj", "cos"), help="strength matched (see above)")
    ap.add_argument("--match-tol", type=float, default=0.02, help="relative tolerance of the matched strength")
    ap.add_argument("--match-evals", type=int, default=40, help="most alpha evaluations per k")
    ap.add_argument("--gd-alpha-start", type=float, default=1.0)
    ap.add_argument("--gd-alpha-max", type=float, default=200.0)
    ap.add_argument("--lpips-res", type=int, default=256, help="LPIPS / ArcFace input size (area downsampling)")
    ap.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    ap.add_argument("--fid-real", help="folder of real images (FID)")
    ap.add_argument("--fid-real-limit", type=int, default=0, help="use at most this many real images (0: all)")
    ap.add_argument("--inception-weights", help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth)")
    ap.add_argument("--fid-images", type=int, default=3000, help="edited images per (method, k): the paper's 3,000")
    ap.add_argument("--fid-seed0", type=int, default=0)
    ap.add_argument("--fid-ks", default=None, help="ks to compute FID for (default: all of --ks)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="folder for the CSV / JSON / PNG")
    return ap


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    if not args.smoke and not args.checkpoint:
        parser().error("give --checkpoint (or --smoke)")
    if args.seeds is None:
        args.seeds = 8 if args.smoke else 64
    if args.train_steps is None:
        args.train_steps = 20 if args.smoke else 200
    return run(args)


if __name__ == "__main__":
    main()
