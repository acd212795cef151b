"""Latents inside PNGs: bit-for-bit round trips in every space, readable by PIL (ComfyUI's Load Image), hostile PNGs
refused with specific errors in bounded memory, and the Save / Load Image with Latent nodes."""

from __future__ import annotations

import base64
import io
import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import core
from conftest import tiny_generator
from core import png_latent as P
from core.errors import LatentError, LatentFileError


@pytest.fixture(scope="module")
def G64():
    return tiny_generator("stylegan2", img_resolution=64)


def image(h=16, w=16, seed=0):
    return torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def same(a, b):
    assert (a.space, a.generator.to_dict(), a.truncation_psi, a.truncation_cutoff) == \
        (b.space, b.generator.to_dict(), b.truncation_psi, b.truncation_cutoff)
    for x, y in ((a.tensor, b.tensor), (a.c, b.c), (a.features, b.features), (a.features_img, b.features_img)):
        assert (x is None and y is None) or torch.equal(x, y)   # bit for bit


def latents(G64):
    Gc = tiny_generator("stylegan2", c_dim=3)
    w = core.sample_latents(G64, [1, 2], space="w+")
    return {"z": core.sample_latents(Gc, [3], space="z", truncation_psi=0.7, truncation_cutoff=2, class_idx=1),
            "w": core.sample_latents(G64, [4], space="w"), "w+": w, "s": core.convert_latent(G64, w, "s"),
            "fs_keep": core.fs_from_wplus(G64, w, "keep"), "fs_drop": core.fs_from_wplus(G64, w, "drop")}


def test_round_trip_is_bit_for_bit_in_every_space(G64, tmp_path):
    for name, latent in latents(G64).items():
        path = core.save_png_with_latent(tmp_path / f"{name}.png", image(), latent, {"prompt": "{}"})
        same(core.load_png_latent(path), latent)
        assert P.has_png_latent(path)


def test_a_large_latent_is_split_into_parts_pil_and_comfyui_read(G64):
    big = core.fs_from_wplus(G64, core.sample_latents(G64, list(range(40)), space="w+"), "keep")
    assert len(P.png_text(big)[P.PNG_LATENT_KEY]) > 1
    data = P.encode_png(image(), big, {"workflow": json.dumps({"nodes": []})})
    same(core.load_png_latent(data), big)
    im = Image.open(io.BytesIO(data))   # PIL refuses a single text chunk over 1 MiB: ComfyUI's Load Image uses it
    im.load()
    assert im.size == (16, 16) and json.loads(im.text["workflow"]) == {"nodes": []}
    ident = json.loads(im.text[P.PNG_GENERATOR_KEY])
    assert ident["fingerprint"] == big.generator.fingerprint and ident["space"] == "fs"


def test_a_png_without_a_latent_is_explained(tmp_path):
    plain = tmp_path / "plain.png"
    Image.fromarray(image().numpy()).save(plain)
    with pytest.raises(LatentFileError, match="holds no StyleGAN Studio latent.*Save Image with Latent"):
        core.load_png_latent(plain)
    assert not P.has_png_latent(plain)
    jpeg = tmp_path / "photo.png"   # a JPEG under a .png name
    Image.fromarray(image().numpy()).save(jpeg, format="JPEG")
    with pytest.raises(LatentFileError, match="not a PNG file"):
        core.load_png_latent(jpeg)
    with pytest.raises(FileNotFoundError):
        core.load_png_latent(tmp_path / "missing.png")


# --- hostile PNGs --------------------------------------------------------------------------------

def chunk(ctype: bytes, data: bytes, crc=None) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(ctype)) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", crc)


def png_with(*chunks: bytes) -> bytes:
    """A valid 16 px PNG with `chunks` inserted after its IHDR."""
    buffer = io.BytesIO()
    Image.fromarray(image().numpy()).save(buffer, format="PNG")
    raw = buffer.getvalue()
    cut = 8 + 8 + 13 + 4   # signature + IHDR
    return raw[:cut] + b"".join(chunks) + raw[cut:]


def latent_chunk(text: str, part: str = "0/1:") -> bytes:
    return chunk(b"zTXt", P.PNG_LATENT_KEY.encode() + b"\0\0" + zlib.compress((part + text).encode()))


def payload(tensors: dict, meta: dict | None = None) -> str:
    from safetensors.torch import save

    meta = {"format": core.latents.LATENT_FORMAT, "space": "w", **(meta or {})}
    return base64.b64encode(save(tensors, metadata=meta)).decode()


@pytest.fixture(scope="module")
def w_meta(G64):
    return {"generator": json.dumps(core.generator_ref(G64).to_dict())}


def test_hostile_latent_contents_are_refused_specifically(G64, w_meta):
    w_dim = G64.w_dim
    cases = [
        (latent_chunk("not base64!!"), "not valid base64"),
        (latent_chunk(payload({"latent": torch.zeros(1, w_dim + 1)}, w_meta)), "must have shape"),
        (latent_chunk(payload({"latent": torch.full((1, w_dim), float("nan"))}, w_meta)), "NaN"),
        (latent_chunk(payload({"latent": torch.zeros(1, w_dim), "evil": torch.zeros(3)}, w_meta)),
         "foreign tensors \\['evil'\\]"),
        (latent_chunk(payload({"latent": torch.zeros(1, w_dim, dtype=torch.int32)}, w_meta)), "dtype"),
        (latent_chunk(payload({"latent": torch.zeros(1, w_dim)}, {**w_meta, "format": "other"})),
         "not a StyleGAN Studio latent"),
        (latent_chunk(base64.b64encode(struct.pack("<Q", 1 << 40) + b"{}").decode()), "header declares"),
        (latent_chunk(payload({"latent": torch.zeros(1, w_dim)}, {"generator": "{bad json"})), "generator"),
    ]
    for crafted, match in cases:
        with pytest.raises(LatentFileError, match=match):
            core.load_png_latent(png_with(crafted))


def test_hostile_png_structure_is_refused_in_bounded_memory(G64):
    good = P.png_text(core.sample_latents(G64, [1], space="w"))[P.PNG_LATENT_KEY][0]
    key = P.PNG_LATENT_KEY.encode() + b"\0\0"
    huge = struct.pack(">I", 1 << 30) + b"zTXt" + key + b"x" * 64   # declares 1 GiB, holds nothing
    bomb = chunk(b"zTXt", key + zlib.compress(b"0/1:" + b"A" * (64 << 20)))   # 64 MiB of text in ~64 KiB
    cases = [
        (png_with(huge), "refused unread"),
        (png_with(bomb), "decompresses to more than"),
        (png_with(chunk(b"zTXt", key + zlib.compress(good.encode()), crc=1)), "CRC"),
        (png_with(latent_chunk(good[4:]), latent_chunk(good[4:])), "two latents"),
        (png_with(latent_chunk(good[4:], part="0/2:")), "cut short"),
        (png_with(latent_chunk(good[4:], part="0/99999:")), "declares 99999 parts"),
        (png_with(latent_chunk(good[4:], part="")), "part number"),
        (png_with(latent_chunk(good[4:]))[:60], "truncated"),
    ]
    for crafted, match in cases:
        tracemalloc.start()
        try:
            with pytest.raises(LatentFileError, match=match):
                core.load_png_latent(crafted)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20, (match, peak)   # never the declared GiB, nor the bomb's 64 MiB


def test_an_itxt_chunk_from_a_resaving_editor_still_reads(G64):
    latent = core.sample_latents(G64, [5], space="w+")
    part = P.png_text(latent)[P.PNG_LATENT_KEY][0]
    itxt = chunk(b"iTXt", P.PNG_LATENT_KEY.encode() + b"\0\1\0\0\0" + zlib.compress(part.encode()))
    same(core.load_png_latent(png_with(itxt)), latent)


def test_generator_mismatch_at_use_time_is_explained(G64, G2, tmp_path):
    path = core.save_png_with_latent(tmp_path / "x.png", image(), core.sample_latents(G2, [1], space="w+"))
    latent = core.load_png_latent(path)
    with pytest.raises(LatentError, match="made for tiny-stylegan2 .*num_ws x w_dim"):
        core.synthesize(G64, latent)


def test_too_large_a_latent_is_refused_when_saving(G64, monkeypatch):
    monkeypatch.setattr(P, "MAX_LATENT_TEXT", 1000)
    with pytest.raises(LatentError, match="Save Latent"):
        P.png_text(core.sample_latents(G64, [1, 2, 3], space="w+"))


# --- nodes ---------------------------------------------------------------------------------------

def test_save_and_load_nodes_round_trip_image_latent_and_workflow(pack, G64, tmp_path, caplog):
    nodes = pack.NODE_CLASS_MAPPINGS
    latent = core.sample_latents(G64, [1, 2], space="w+")
    images = torch.rand(2, 16, 16, 3)
    prompt, extra = {"1": {"class_type": "X", "inputs": {}}}, {"workflow": {"nodes": [1]}}
    out = nodes["SGS_SaveImageWithLatent"]().save(images, latent, "stylegan/test", prompt=prompt, extra_pnginfo=extra)
    saved = out["ui"]["images"]
    assert [s["subfolder"] for s in saved] == ["stylegan", "stylegan"] and saved[0]["type"] == "output"
    first = tmp_path / "output" / "stylegan" / saved[0]["filename"]
    im = Image.open(first)
    assert json.loads(im.text["prompt"]) == prompt and json.loads(im.text["workflow"]) == {"nodes": [1]}
    listed = nodes["SGS_LoadImageWithLatent"].INPUT_TYPES()["required"]["image"]
    assert listed[1]["image_upload"] and f"stylegan/{saved[0]['filename']} [output]" in listed[0]
    Image.fromarray(image().numpy()).save(tmp_path / "output" / "plain.png")   # no latent: not offered from output
    Image.fromarray(image().numpy()).save(tmp_path / "input" / "upload.png")   # input: every PNG is offered
    listed = nodes["SGS_LoadImageWithLatent"].INPUT_TYPES()["required"]["image"][0]
    assert "plain.png [output]" not in listed and "upload.png" in listed
    result = nodes["SGS_LoadImageWithLatent"]().load(f"stylegan/{saved[1]['filename']} [output]", G64)
    pixels, back = result["result"]
    same(back, core.select_latents(latent, "1"))
    assert torch.equal(pixels[0], torch.from_numpy(np.clip(255 * images[1].numpy(), 0, 255).astype(np.uint8)) / 255)
    assert "w+ latent for tiny-stylegan2" in result["ui"]["text"][0]
    with pytest.raises(ValueError, match="holds no StyleGAN Studio latent"):   # the pack's LatentFileError
        nodes["SGS_LoadImageWithLatent"]().load("upload.png")
    other = tiny_generator("stylegan2", img_resolution=64, seed=5)   # same shape, other weights
    warned = nodes["SGS_LoadImageWithLatent"]().load(f"stylegan/{saved[0]['filename']} [output]", other)
    assert any("other weights" in line for line in warned["ui"]["text"])


def test_save_node_needs_one_latent_per_image_or_one_for_all(pack, G64, tmp_path):
    save = pack.NODE_CLASS_MAPPINGS["SGS_SaveImageWithLatent"]()
    with pytest.raises(ValueError, match="3 image\\(s\\) and 2 latents"):   # the pack's LatentError
        save.save(torch.rand(3, 8, 8, 3), core.sample_latents(G64, [1, 2], space="w"), "x")
    assert not list((tmp_path / "output").rglob("*.png"))   # refused before anything was written
    out = save.save(torch.rand(3, 8, 8, 3), core.sample_latents(G64, [1], space="w"), "one")
    assert len(out["ui"]["images"]) == 3


def test_disable_metadata_drops_the_workflow_but_keeps_the_latent(pack, G64, tmp_path, monkeypatch):
    comfy_env = __import__(f"{pack.__name__}.nodes.comfy_env", fromlist=["x"])
    monkeypatch.setattr(comfy_env, "metadata_disabled", lambda: True)   # ComfyUI's --disable-metadata
    out = pack.NODE_CLASS_MAPPINGS["SGS_SaveImageWithLatent"]().save(
        torch.rand(1, 8, 8, 3), core.sample_latents(G64, [1], space="w"), "quiet", prompt={"1": {}},
        extra_pnginfo={"workflow": {}})
    path = tmp_path / "output" / out["ui"]["images"][0]["filename"]
    assert "prompt" not in Image.open(path).text and "workflow" not in Image.open(path).text
    assert core.load_png_latent(path).space == "w"
