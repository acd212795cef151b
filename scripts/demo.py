"""Headless demo: drives the pack's ComfyUI nodes without ComfyUI to sample, style-mix and interpolate.

Uses the first checkpoint in ./models/stylegan (or --checkpoint NAME) and otherwise a small seeded demo
generator built by the pack, so it runs anywhere offline. Writes PNGs and a contact sheet to --out.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_pack(name: str = "stylegan_studio"):
    """Import the repository as a package, the way ComfyUI imports a custom node folder (once per process)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[name] = pack
    spec.loader.exec_module(pack)
    return pack


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", help="checkpoint name inside ./models/stylegan (default: the first one found)")
    parser.add_argument("--out", default=str(REPO / "demo_output"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--psi", type=float, default=0.7, help="truncation psi")
    parser.add_argument("--frames", type=int, default=8, help="interpolation frames")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("demo")

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("STYLEGAN_STUDIO_HOME", str(REPO))  # models from ./models/stylegan
    os.environ["STYLEGAN_STUDIO_OUTPUT"] = str(out)
    pack = load_pack()
    nodes = pack.NODE_CLASS_MAPPINGS
    from stylegan_studio.nodes import comfy_env
    from stylegan_studio.nodes.convert import to_pil

    start = time.perf_counter()
    available = comfy_env.list_models()
    name = args.checkpoint or (available[0] if available else None)
    if name:
        log.info("loading checkpoint %s", name)
        G, info = nodes["SGS_LoadStyleGAN"]().load(name, device=args.device)["result"]
    else:
        log.info("no checkpoint in %s: building the seeded demo generator", comfy_env.model_dirs()[0])
        G, info = nodes["SGS_DemoGenerator"]().build("stylegan2", 64, 0, device=args.device)["result"]
    log.info(info)

    sample, synth = nodes["SGS_SampleLatent"](), nodes["SGS_Synthesize"]()
    class_idx = 0

    def latents(seed, n, space="w"):
        return sample.sample(G, seed, n, space, args.psi, 0, "nvidia", class_idx=class_idx)[0]

    def render(latent):
        return synth.synthesize(G, latent, "const")["result"][0]

    def save(images, stem):
        paths = []
        for i, image in enumerate(images):
            path = out / f"{stem}_{i:02d}.png"
            to_pil(image).save(path)
            paths.append(path)
        return paths

    rows: list[tuple[str, object]] = []
    samples = render(latents(args.seed, 6))
    save(samples, "sample")
    rows.append((f"seeds {args.seed}-{args.seed + 5} (psi {args.psi})", samples))

    base, style = latents(args.seed, 1), latents(args.seed + 1, 1)
    mixer = nodes["SGS_StyleMix"]()
    for preset in ("coarse", "middle", "fine"):
        mixed = render(mixer.mix(G, latents(args.seed, 6), style, preset)[0])
        save(mixed, f"mix_{preset}")
        rows.append((f"{preset} layers from seed {args.seed + 1}", mixed))

    z_a, z_b = latents(args.seed, 1, "z"), latents(args.seed + 1, 1, "z")
    frames = nodes["SGS_InterpolateLatents"]().interpolate(z_a, z_b, args.frames, "auto")[0]
    video = render(frames)
    save(video, "interp")
    rows.append((f"slerp in Z, seed {args.seed} -> {args.seed + 1}", video))
    nodes["SGS_SaveLatent"]().save(base, "latents/seed")

    sheet = contact_sheet(rows, to_pil)
    sheet.save(out / "contact_sheet.png")
    log.info("wrote %d images and %s in %.1f s", sum(len(r[1]) for r in rows), out / "contact_sheet.png",
             time.perf_counter() - start)
    return 0


def contact_sheet(rows, to_pil, cell: int = 128, label_h: int = 18):
    """One image: a labelled row of thumbnails per step."""
    from PIL import Image, ImageDraw

    cols = max(len(images) for _, images in rows)
    sheet = Image.new("RGB", (cols * cell, len(rows) * (cell + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(rows):
        y = r * (cell + label_h)
        draw.text((4, y + 3), label, fill="black")
        for c, image in enumerate(images):
            sheet.paste(to_pil(image).resize((cell, cell)), (c * cell, y + label_h))
    return sheet


if __name__ == "__main__":
    sys.exit(main())
