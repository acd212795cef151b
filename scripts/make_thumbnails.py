"""Render each example workflow's thumbnail (`example_workflows/<name>.jpg`) from its real output.

Starts ComfyUI (COMFYUI_DIR, COMFYUI_PYTHON) with the pack, runs every example unchanged through the API and
lays its saved images out as one strip. With `--checkpoint` (e.g. stylegan2-ffhq-1024x1024.pkl), `--photo`
and `--landmarks` (a JSON list of 68 [x, y] points, used only where the face_alignment detector is not
installed in ComfyUI's Python), `--perceptual`, `--clip` and `--mappers` (folders with the files the examples
name) the thumbnails show what users get; without them a tiny seeded stand-in generator, a synthetic photo,
random-weight perceptual and CLIP networks and a random mapper are used, and the strip says so.

    COMFYUI_DIR=~/ComfyUI python scripts/make_thumbnails.py --checkpoint ~/models/stylegan2-ffhq-1024x1024.pkl \\
        --photo me.jpg --landmarks me.json --perceptual ~/ComfyUI/models/perceptual \\
        --clip ~/ComfyUI/models/text_encoders --mappers ~/ComfyUI/models/latent_mappers
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from PIL import Image, ImageDraw  # noqa: E402

THUMB_HEIGHT = 256
MAX_TILES = 8


def strip(paths: list[Path], caption: str | None) -> Image.Image:
    """Up to MAX_TILES images (evenly spread over the list) side by side, THUMB_HEIGHT high."""
    frames = []
    for p in paths:  # an animated file (WebP video) counts as its frames
        im = Image.open(p)
        for k in range(getattr(im, "n_frames", 1)):
            im.seek(k)
            frames.append(im.convert("RGB"))
    if len(frames) > MAX_TILES:
        frames = [frames[round(i * (len(frames) - 1) / (MAX_TILES - 1))] for i in range(MAX_TILES)]
    tiles = [im.resize((max(1, round(im.width * THUMB_HEIGHT / im.height)), THUMB_HEIGHT), Image.LANCZOS)
             for im in frames]
    out = Image.new("RGB", (sum(t.width for t in tiles), THUMB_HEIGHT), (24, 24, 24))
    x = 0
    for t in tiles:
        out.paste(t, (x, 0))
        x += t.width
    if caption:
        draw = ImageDraw.Draw(out)
        draw.rectangle((0, THUMB_HEIGHT - 18, out.width, THUMB_HEIGHT), fill=(0, 0, 0))
        draw.text((6, THUMB_HEIGHT - 16), caption, fill=(230, 230, 230))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="the checkpoint the examples name (else a tiny stand-in)")
    ap.add_argument("--photo", type=Path, help="a face photo for invert_and_edit (else a synthetic one)")
    ap.add_argument("--landmarks", type=Path, help="its 68 landmarks as JSON (needed without face_alignment)")
    ap.add_argument("--perceptual", type=Path, help="folder with the VGG/LPIPS weight files (else random ones)")
    ap.add_argument("--clip", type=Path, help="folder with the CLIP weight files the examples name (e.g. "
                    "ViT-B-32-openai.safetensors; else random-weight stand-ins)")
    ap.add_argument("--mappers", type=Path, help="folder with the latent mappers the examples name (e.g. "
                    "StyleCLIP's mohawk.pt; else random stand-ins, only with the stand-in generator)")
    ap.add_argument("--only", help="comma-separated example names")
    args = ap.parse_args()

    import core
    from comfyui_server import ComfyServer
    from conftest import tiny_generator
    from test_comfyui import (example_face_photo, write_random_clip, write_random_perceptual_weights,
                              write_stand_in_mapper)
    from workflows import example_paths, load_workflow, ui_to_api

    stand_in = args.checkpoint is None
    root = Path(tempfile.mkdtemp(prefix="sgs_thumbs_"))
    server = ComfyServer(root)
    if args.perceptual:
        shutil.copytree(args.perceptual, root / "models" / "perceptual")
    else:
        write_random_perceptual_weights(root / "models" / "perceptual")
    if args.clip:
        shutil.copytree(args.clip, root / "models" / "text_encoders")
    server.start()
    try:
        for path in example_paths():
            if args.only and path.stem not in args.only.split(","):
                continue
            workflow = load_workflow(path)
            landmarks = None
            for n in workflow["nodes"]:
                if n["type"] == "SGS_LoadStyleGAN":
                    target = server.models / n["widgets_values"][0]
                    if not target.exists():
                        if stand_in:
                            core.save_generator(tiny_generator("stylegan2"), target)
                        else:
                            target.symlink_to(args.checkpoint.resolve())
                if n["type"] == "LoadImage":
                    photo = server.root / "input" / n["widgets_values"][0]
                    if args.photo:
                        shutil.copy(args.photo, photo)
                        landmarks = json.loads(args.landmarks.read_text()) if args.landmarks else None
                    else:
                        landmarks = example_face_photo(photo)
                if n["type"] == "SGS_LoadLatentMapper":
                    target = root / "models" / "latent_mappers" / n["widgets_values"][0]
                    if args.mappers:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(args.mappers / target.name, target)
                    elif stand_in:
                        write_stand_in_mapper(target, tiny_generator("stylegan2"))
                    else:
                        raise SystemExit(f"{path.name} needs {target.name}: pass --mappers FOLDER")
                if n["type"] == "SGS_LoadCLIP" and not args.clip:
                    write_random_clip(root / "models" / "text_encoders", n["widgets_values"][0], n["widgets_values"][2])
            info = server.get("/object_info")
            prompt = ui_to_api(workflow, info)
            for entry in prompt.values():
                if entry["class_type"] == "SGS_AlignFace" and landmarks is not None:
                    entry["inputs"]["landmarks_json"] = json.dumps(landmarks)
                if entry["class_type"] == "SGS_ComputeGlobalDirections" and stand_in:
                    entry["inputs"]["num_images"] = 2  # as in the tests: the stand-in's relevance means nothing
            result = server.run_prompt(prompt, timeout=3600)
            if result["status"]["status_str"] != "success":
                raise SystemExit(f"{path.name} failed: {result['status']}")
            # The last output node's images (the workflow's end product).
            # The saved files (not the nodes' temp previews) of the workflow's last saving node.
            order = [str(n["id"]) for n in workflow["nodes"]]
            saved = [[i for i in result["outputs"][nid].get("images", []) if i.get("type") == "output"]
                     for nid in order if nid in result["outputs"]]
            saved = [s for s in saved if s]
            images = [server.output / i["subfolder"] / i["filename"] for i in saved[-1]]
            caption = "stand-in generator (random weights)" if stand_in else None
            thumb = path.with_suffix(".jpg")
            strip(images, caption).save(thumb, quality=85)
            print(f"wrote {thumb} from {len(images)} output image(s)")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
