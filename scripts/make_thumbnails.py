"""Render each example workflow's thumbnail (`example_workflows/<name>.jpg`): what the example really gives.

Examples that need no files (the Demo Generator ones) are run unchanged in ComfyUI (COMFYUI_DIR, COMFYUI_PYTHON)
through the API, and their saved images laid out as one strip: their real output. An example that needs files
(a checkpoint, CLIP or perceptual weights, a mapper, a photo) gets a picture of its graph (its groups and nodes by
display name, its links) with a caption naming the files it needs, unless those files are given: with
`--checkpoint` (e.g. stylegan2-ffhq-1024x1024.pkl), `--photo` and `--landmarks` (a JSON list of 68 [x, y] points,
used only where no landmark detector is installed in ComfyUI's Python), `--perceptual`, `--clip` and `--mappers`
(folders with the files the examples name) it is run and shows what users get. `--stand-in` runs the examples
with a tiny random stand-in generator and random networks instead (for testing the script; the strip says so).

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
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "scripts")]

from PIL import Image, ImageDraw  # noqa: E402

TILE = 192      # px per image in a thumbnail
MAX_TILES = 9


def strip(paths: list[Path], caption: str | None) -> Image.Image:
    """Up to MAX_TILES images (evenly spread over the list) in a near-square grid (the template browser's cards are
    square), TILE px each, with an optional caption."""
    frames = []
    for p in paths:  # an animated file (WebP video) counts as its frames
        im = Image.open(p)
        for k in range(getattr(im, "n_frames", 1)):
            im.seek(k)
            frames.append(im.convert("RGB"))
    if len(frames) > MAX_TILES:
        frames = [frames[round(i * (len(frames) - 1) / (MAX_TILES - 1))] for i in range(MAX_TILES)]
    cols = max(1, round(len(frames) ** 0.5 + 0.49))
    rows = -(-len(frames) // cols)
    caption_h = 22 if caption else 0
    out = Image.new("RGB", (cols * TILE, rows * TILE + caption_h), (24, 24, 24))
    for k, im in enumerate(frames):
        out.paste(im.resize((TILE, TILE), Image.LANCZOS), ((k % cols) * TILE, (k // cols) * TILE))
    if caption:
        from PIL import ImageFont

        draw = ImageDraw.Draw(out)
        size = 14
        while size > 8 and draw.textlength(caption, font=ImageFont.load_default(size=size)) > out.width - 8:
            size -= 1
        draw.text((4, rows * TILE + 3), caption, fill=(230, 230, 230), font=ImageFont.load_default(size=size))
    return out


CORE_DISPLAY_NAMES = {"LoadImage": "Load Image", "SaveImage": "Save Image", "SaveAnimatedWEBP": "SaveAnimatedWEBP",
                      "CheckpointLoaderSimple": "Load Checkpoint", "CLIPTextEncode": "CLIP Text Encode (Prompt)",
                      "ImageScale": "Upscale Image", "VAEEncode": "VAE Encode", "VAEDecode": "VAE Decode",
                      "KSampler": "KSampler", "MaskToImage": "Convert Mask to Image", "Note": "Note"}
GRAPH_SIZE = (768, 576)


def declared_models(workflow: dict) -> list[dict]:
    """The files a workflow declares (nodes' properties.models and the top-level models), once each."""
    found = [m for n in workflow["nodes"] for m in n.get("properties", {}).get("models", [])]
    found += workflow.get("models", [])
    return list({m["name"]: m for m in found}.values())


def needs_files(workflow: dict) -> bool:
    return bool(declared_models(workflow)) or any(n["type"] == "LoadImage" for n in workflow["nodes"])


def graph_picture(workflow: dict, display_names: dict) -> Image.Image:
    """The workflow's graph drawn schematically: groups, nodes (title = display name), links; and a caption with
    the files it needs."""
    from PIL import ImageFont

    def font(size):
        return ImageFont.load_default(size=size)

    W, H = GRAPH_SIZE
    caption_h = 86
    rects = [g["bounding"] for g in workflow.get("groups", [])] + [
        [n["pos"][0], n["pos"][1] - 30, n["size"][0], n["size"][1] + 30] for n in workflow["nodes"]]
    x0, y0 = min(r[0] for r in rects), min(r[1] for r in rects)
    x1, y1 = max(r[0] + r[2] for r in rects), max(r[1] + r[3] for r in rects)
    scale = min((W - 20) / (x1 - x0), (H - caption_h - 26) / (y1 - y0))

    def at(x, y):
        return 10 + (x - x0) * scale, 16 + (y - y0) * scale

    im = Image.new("RGB", GRAPH_SIZE, (32, 32, 36))
    draw = ImageDraw.Draw(im)
    for g in workflow.get("groups", []):
        bx, by, bw, bh = g["bounding"]
        draw.rounded_rectangle((*at(bx, by), *at(bx + bw, by + bh)), radius=6, fill=(44, 62, 78), outline=(63, 120, 158))
        draw.text((at(bx, by)[0] + 5, at(bx, by)[1] + 3), g["title"], fill=(200, 220, 235), font=font(max(9, int(22 * scale))))
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for link in workflow.get("links", []):
        src, dst = nodes[link[1]], nodes[link[3]]
        a = at(src["pos"][0] + src["size"][0], src["pos"][1] + 10 + 20 * link[2])
        b = at(dst["pos"][0], dst["pos"][1] + 10 + 20 * link[4])
        draw.line((a, ((a[0] + b[0]) / 2, a[1]), ((a[0] + b[0]) / 2, b[1]), b), fill=(150, 170, 120), width=2)
        draw.polygon((b, (b[0] - 6, b[1] - 4), (b[0] - 6, b[1] + 4)), fill=(150, 170, 120))
    for n in workflow["nodes"]:
        (nx, ny), (nw, nh) = n["pos"], n["size"]
        box = (*at(nx, ny - 30), *at(nx + nw, ny + nh))
        note = n["type"] == "Note"
        draw.rounded_rectangle(box, radius=4, fill=(70, 60, 40) if note else (53, 53, 58),
                               outline=(110, 95, 60) if note else (90, 90, 96))
        draw.rectangle((box[0] + 1, box[1] + 1, box[2] - 1, at(nx, ny)[1]), fill=(85, 72, 45) if note else (34, 34, 38))
        name = display_names.get(n["type"], n["type"])
        size = max(8, int(20 * scale))
        text_font = font(size)
        while size > 8 and draw.textlength(name, font=text_font) > box[2] - box[0] - 6:
            size -= 1
            text_font = font(size)
        draw.text((box[0] + 4, box[1] + 2), name, fill=(235, 235, 235), font=text_font)
        if note:  # the first words of the note
            words, lines, line = n["widgets_values"][0].split(), [], ""
            small = font(max(7, int(15 * scale)))
            for w in words:
                if draw.textlength(line + " " + w, font=small) > box[2] - box[0] - 8:
                    lines.append(line)
                    line = w
                else:
                    line = (line + " " + w).strip()
            lines.append(line)
            top = at(nx, ny)[1] + 3
            for k, text in enumerate(lines[: max(1, int((box[3] - top) // (small.size + 2)))]):
                draw.text((box[0] + 4, top + k * (small.size + 2)), text, fill=(225, 210, 170), font=small)
    draw.rectangle((0, H - caption_h, W, H), fill=(12, 12, 14))
    needs = [f"{m['name']} (models/{m['directory']})" for m in declared_models(workflow)]
    if any(n["type"] == "LoadImage" for n in workflow["nodes"]):
        needs.append("your photo (Load Image)")
    title = workflow.get("extra", {}).get("title", "")
    draw.text((10, H - caption_h + 6), title, fill=(255, 255, 255), font=font(20))
    lines, line = [], "Needs: "
    for k, need in enumerate(needs):
        piece = need + (", " if k < len(needs) - 1 else "")
        if draw.textlength(line + piece, font=font(15)) > W - 20:
            lines.append(line)
            line = "    "
        line += piece
    lines.append(line)
    for k, text in enumerate(lines[:3]):
        draw.text((10, H - caption_h + 32 + 17 * k), text, fill=(220, 200, 120), font=font(15))
    return im


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="the checkpoint the examples name: examples that need it are "
                    "run (else drawn as a graph)")
    ap.add_argument("--photo", type=Path, help="a face photo for the photo examples (else a synthetic one)")
    ap.add_argument("--landmarks", type=Path, help="its 68 landmarks as JSON (needed without a detector)")
    ap.add_argument("--perceptual", type=Path, help="folder with the VGG/LPIPS weight files (else random ones)")
    ap.add_argument("--clip", type=Path, help="folder with the CLIP weight files the examples name (e.g. "
                    "ViT-B-32-openai.safetensors; else random-weight stand-ins)")
    ap.add_argument("--mappers", type=Path, help="folder with the latent mappers the examples name (e.g. "
                    "StyleCLIP's mohawk.pt)")
    ap.add_argument("--stand-in", action="store_true", help="run every example with a tiny random stand-in "
                    "generator and random networks (tests the examples; the thumbnails say so)")
    ap.add_argument("--only", help="comma-separated example names")
    args = ap.parse_args()

    import core
    from demo import load_pack
    from workflows import example_paths, load_workflow, ui_to_api

    display_names = {**CORE_DISPLAY_NAMES, **load_pack().NODE_DISPLAY_NAME_MAPPINGS}
    paths = [p for p in example_paths() if not args.only or p.stem in args.only.split(",")]
    to_run = []
    for path in paths:
        workflow = load_workflow(path)
        diffusion = any(n["type"] == "CheckpointLoaderSimple" for n in workflow["nodes"])
        if needs_files(workflow) and (diffusion or not (args.stand_in or args.checkpoint)):
            graph_picture(workflow, display_names).save(path.with_suffix(".jpg"), quality=88)
            print(f"wrote {path.with_suffix('.jpg')} (the graph and the files it needs)")
        else:
            to_run.append(path)
    if not to_run:
        return

    from comfyui_server import ComfyServer
    from conftest import tiny_generator
    from test_comfyui import (example_face_photo, write_random_clip, write_random_perceptual_weights,
                              write_stand_in_mapper)

    stand_in = args.checkpoint is None
    root = Path(tempfile.mkdtemp(prefix="sgs_thumbs_"))
    server = ComfyServer(root)
    if args.perceptual:
        shutil.copytree(args.perceptual, root / "models" / "perceptual")
    elif args.stand_in:
        write_random_perceptual_weights(root / "models" / "perceptual")
    if args.clip:
        shutil.copytree(args.clip, root / "models" / "text_encoders")
    server.start()
    try:
        for path in to_run:
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
            # The saved files (not the nodes' temp previews) of the workflow's last saving node.
            order = [str(n["id"]) for n in workflow["nodes"]]
            saved = [[i for i in result["outputs"][nid].get("images", []) if i.get("type") == "output"]
                     for nid in order if nid in result["outputs"]]
            saved = [s for s in saved if s]
            images = [server.output / i["subfolder"] / i["filename"] for i in saved[-1]]
            if not needs_files(workflow):
                caption = "real output: Demo Generator (random weights), no download"
            else:
                caption = "stand-in generator (random weights)" if stand_in else None
            thumb = path.with_suffix(".jpg")
            strip(images, caption).save(thumb, quality=85)
            print(f"wrote {thumb} from {len(images)} output image(s)")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
