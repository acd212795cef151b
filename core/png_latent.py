"""Latents inside PNG images: the latent file's safetensors bytes, base64, in a compressed text chunk (zTXt) next to
the generator's identity, written and read back bit for bit, with every hostile input refused in bounded memory."""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Mapping, Optional, Union

import numpy as np
import torch

from .errors import LatentError, LatentFileError
from .files import atomic_write
from .latents import LATENT_FORMAT, Latent, latent_from_tensors, latent_to_tensors
from .log import logger

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_LATENT_KEY = "stylegan_studio.latent"          # zTXt: base64 of the latent's safetensors bytes
PNG_GENERATOR_KEY = "stylegan_studio.generator"    # tEXt: the generator identity, readable (JSON)
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")          # a re-saving editor may turn our zTXt into iTXt: all are read
# The latent's base64 text is split into parts of at most PART_CHARS, one zTXt chunk each, "<i>/<n>:<text>": PIL
# (hence ComfyUI's Load Image) refuses a text chunk that decompresses to more than 1 MiB (PngImagePlugin.
# MAX_TEXT_CHUNK) and all text beyond 64 MiB (MAX_TEXT_MEMORY). A 1024 px fs latent (F [1, 512, 32, 32] float32)
# is 2 MiB, 2.7 MiB as base64 (4 parts); a w+ latent 36 KiB. 32 MiB of text holds ~11 such fs latents or ~650
# w+ latents, and leaves PIL room for the workflow's text.
PART_CHARS = 768 << 10
MAX_LATENT_TEXT = 32 << 20        # the latent's whole base64 text
MAX_PARTS = -(-MAX_LATENT_TEXT // PART_CHARS)
MAX_CHUNK_BYTES = PART_CHARS + 4096   # one part as stored: compressed base64 is smaller than the text
MAX_HEADER_BYTES = 1 << 20        # the safetensors header inside (a latent's is a few hundred bytes)
MAX_CHUNKS = 100_000              # chunks read before giving up (a 50 MB image has ~800 IDAT chunks)
LATENT_TENSORS = ("latent", "c", "features", "features_img")
PNG_HINT = ("save images with 'Save Image with Latent' to keep their latents (ComfyUI's Save Image does not), "
            "or load the latent from its .safetensors file with Load Latent")


# --- writing -------------------------------------------------------------------------------------

def latent_to_bytes(latent: Latent) -> bytes:
    """The latent file (`save_latent`) as bytes: safetensors with the format tag and the same metadata."""
    from safetensors.torch import save

    tensors, meta = latent_to_tensors(latent)
    meta = {"format": LATENT_FORMAT, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}}
    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)


def png_text(latent: Latent) -> dict[str, object]:
    """What a PNG carries for `latent`: {PNG_LATENT_KEY: the parts "<i>/<n>:<base64>" of `latent_to_bytes`'s base64
    (PART_CHARS each), PNG_GENERATOR_KEY: the generator identity as JSON}."""
    text = base64.b64encode(latent_to_bytes(latent)).decode("ascii")
    if len(text) > MAX_LATENT_TEXT:
        raise LatentError(f"this latent is {len(text) / 2 ** 20:.0f} MiB as text, more than the {MAX_LATENT_TEXT >> 20} "
                          f"MiB an image may carry (image readers refuse more); save it with Save Latent as a file, "
                          f"or save fewer latents per image")
    n = max(1, -(-len(text) // PART_CHARS))
    parts = [f"{i}/{n}:{text[i * PART_CHARS:(i + 1) * PART_CHARS]}" for i in range(n)]
    ident = {**latent.generator.to_dict(), "space": latent.space, "batch": latent.batch_size}
    return {PNG_LATENT_KEY: parts, PNG_GENERATOR_KEY: json.dumps(ident)}


def encode_png(image: Union[np.ndarray, torch.Tensor], latent: Latent, text: Optional[Mapping[str, str]] = None,
               *, compress_level: int = 4) -> bytes:
    """PNG bytes of `image` (`[H, W, C]` uint8, C 1, 3 or 4) carrying `latent` (zTXt chunks, `png_text`) and `text`
    (tEXt entries, e.g. ComfyUI's 'prompt' and 'workflow' JSON, as its Save Image writes them)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    array = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be [H, W, C] uint8 with C 1, 3 or 4, got {array.dtype} {list(array.shape)}")
    info = PngInfo()
    for key, value in (text or {}).items():
        if key in (PNG_LATENT_KEY, PNG_GENERATOR_KEY):
            raise ValueError(f"text key {key!r} is reserved for the latent")
        info.add_text(key, value)
    ours = png_text(latent)
    info.add_text(PNG_GENERATOR_KEY, ours[PNG_GENERATOR_KEY])
    for part in ours[PNG_LATENT_KEY]:
        info.add_text(PNG_LATENT_KEY, part, zip=True)
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(buffer, format="PNG", pnginfo=info,
                                                                             compress_level=compress_level)
    return buffer.getvalue()


def save_png_with_latent(path: Union[str, os.PathLike], image: Union[np.ndarray, torch.Tensor], latent: Latent,
                         text: Optional[Mapping[str, str]] = None, *, compress_level: int = 4) -> Path:
    """Write `encode_png(image, latent, text)` to `path` atomically."""
    data = encode_png(image, latent, text, compress_level=compress_level)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def latents_for_images(latent: Latent, count: int) -> list[Latent]:
    """One latent per image of a batch of `count`: the latent's items in order (batch == count), or the one latent
    for every image (batch 1). LatentError otherwise."""
    from .latent_ops import select_latents

    if latent.batch_size == count:
        return [select_latents(latent, str(i)) for i in range(count)] if count > 1 else [latent]
    if latent.batch_size == 1:
        return [latent] * count
    raise LatentError(f"{count} image(s) and {latent.batch_size} latents: each image keeps its own latent, so the "
                      f"batches must be the same size (or the latent a single one, stored with every image); "
                      f"connect the latent the images were rendered from")


# --- reading -------------------------------------------------------------------------------------

def _fail(where: str, what: str) -> LatentFileError:
    return LatentFileError(f"{where}: {what}; {PNG_HINT}")


def _read_exact(f: BinaryIO, n: int, where: str, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _fail(where, f"the PNG ends inside {what} (the file is truncated)")
    return data


_PART = re.compile(r"([0-9]{1,6})/([0-9]{1,6}):")


def find_latent_text(f: BinaryIO, where: str) -> Optional[str]:
    """The latent's base64 text from the PNG stream `f` (its parts joined), or None when it carries none.

    Only the chunk headers are read until a text chunk with our keyword; other chunks (the pixels) are skipped
    without reading them. Each latent chunk is size-checked before it is read (MAX_CHUNK_BYTES), its CRC verified,
    and decompressed at most to PART_CHARS; the parts must come in order, all of them, at most MAX_PARTS.
    LatentFileError: not a PNG, truncated, a damaged, oversized or out-of-order latent chunk, two latents.
    """
    if f.read(8) != PNG_SIGNATURE:
        raise _fail(where, "not a PNG file (latents travel in PNG text chunks; a JPEG or WebP cannot hold one)")
    key = PNG_LATENT_KEY.encode("latin-1")
    parts: list[str] = []
    count = 0
    for _ in range(MAX_CHUNKS):
        length, ctype = struct.unpack(">I4s", _read_exact(f, 8, where, "a chunk header"))
        if length > 0x7FFFFFFF:
            raise _fail(where, f"a {ctype!r} chunk declares {length:,} bytes, more than PNG allows (2**31 - 1)")
        if ctype == b"IEND":
            if parts and len(parts) != count:
                raise _fail(where, f"the latent is cut short: {len(parts)} of its {count} parts are in the file")
            return "".join(parts) if parts else None
        if ctype in TEXT_CHUNKS:
            head = _read_exact(f, min(length, len(key) + 1), where, f"a {ctype.decode('latin-1')} chunk")
            if head == key + b"\0" or (head == key and length == len(key)):
                if length > MAX_CHUNK_BYTES:
                    raise _fail(where, f"a latent chunk is {length / 2 ** 20:,.1f} MiB, more than the "
                                       f"{MAX_CHUNK_BYTES / 2 ** 20:.1f} MiB a part may take; refused unread")
                body = _read_exact(f, length - len(head), where, "the latent chunk")
                crc = struct.unpack(">I", _read_exact(f, 4, where, "the latent chunk's CRC"))[0]
                if zlib.crc32(body, zlib.crc32(head, zlib.crc32(ctype))) & 0xFFFFFFFF != crc:
                    raise _fail(where, "a latent chunk's CRC does not match its data: the file is damaged")
                text = _chunk_text(ctype, body, where)
                m = _PART.match(text)
                if m is None:
                    raise _fail(where, "a latent chunk does not start with its part number ('<i>/<n>:')")
                index, total = int(m.group(1)), int(m.group(2))
                if not parts:
                    if not 1 <= total <= MAX_PARTS:
                        raise _fail(where, f"the latent declares {total} parts (1..{MAX_PARTS}: at most "
                                           f"{MAX_LATENT_TEXT >> 20} MiB of text)")
                    count = total
                if index != len(parts) or total != count:
                    raise _fail(where, f"latent part {index}/{total} where part {len(parts)}/{count} was expected: "
                                       f"the PNG holds two latents, or their parts were reordered (tampered with)")
                parts.append(text[m.end():])
                continue
            f.seek(length - len(head) + 4, io.SEEK_CUR)
        else:
            f.seek(length + 4, io.SEEK_CUR)   # the data and its CRC, unread
    raise _fail(where, f"more than {MAX_CHUNKS:,} chunks before the image's end")


def _inflate(data: bytes, where: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, PART_CHARS + 16)
    except zlib.error as e:
        raise _fail(where, f"the latent chunk's compressed data is corrupt ({e})") from e
    if d.unconsumed_tail:
        raise _fail(where, f"a latent chunk decompresses to more than a part's {PART_CHARS >> 10} KiB; refused "
                           f"(a decompression bomb, or not a StyleGAN Studio latent)")
    return out


def _chunk_text(ctype: bytes, body: bytes, where: str) -> str:
    """The text of our chunk, `body` being everything after the keyword's NUL."""
    if ctype == b"tEXt":
        data = body
    elif ctype == b"zTXt":
        if body[:1] != b"\0":
            raise _fail(where, "the latent chunk uses an unknown compression method")
        data = _inflate(body[1:], where)
    else:  # iTXt: flag, method, language\0, translated keyword\0, text
        if len(body) < 2 or body[1:2] != b"\0":
            raise _fail(where, "the latent chunk (iTXt) is malformed")
        rest = body[2:].split(b"\0", 2)
        if len(rest) != 3:
            raise _fail(where, "the latent chunk (iTXt) is malformed")
        data = _inflate(rest[2], where) if body[:1] == b"\1" else rest[2]
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise _fail(where, "the latent chunk is not base64 text (it holds non-ASCII bytes)") from None


def latent_from_text(text: str, where: str) -> Latent:
    """The latent of a PNG's base64 text: strict base64, then safetensors bytes whose header, tensor names, dtypes,
    shapes and values are all checked (`latent_from_tensors`) before the latent is returned."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _fail(where, f"the latent chunk is not valid base64 ({e})") from e
    tensors, meta = _read_safetensors_bytes(data, where)
    return latent_from_tensors(tensors, meta, where)


def _read_safetensors_bytes(data: bytes, where: str) -> tuple[dict, dict]:
    """(tensors, metadata) of safetensors bytes holding a StyleGAN Studio latent and nothing else."""
    from safetensors.torch import load

    if len(data) < 8:
        raise _fail(where, "the embedded latent is empty or cut short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(MAX_HEADER_BYTES, len(data) - 8):
        raise _fail(where, f"the embedded latent's header declares {n:,} bytes, more than "
                           f"{'it holds' if n > len(data) - 8 else f'{MAX_HEADER_BYTES:,}'}")
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, RecursionError) as e:
        raise _fail(where, f"the embedded latent's header is not JSON ({type(e).__name__})") from e
    if not isinstance(header, dict):
        raise _fail(where, "the embedded latent's header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _fail(where, "the embedded latent's metadata is not a table of strings")
    if meta.get("format") != LATENT_FORMAT:
        raise _fail(where, f"the embedded data is not a StyleGAN Studio latent (format {str(meta.get('format'))[:40]!r}, "
                           f"expected {LATENT_FORMAT!r})")
    foreign = sorted(str(k)[:40] for k in header if k not in LATENT_TENSORS)
    if foreign:
        raise _fail(where, f"the embedded latent holds foreign tensors {foreign[:5]} (a latent holds only "
                           f"{list(LATENT_TENSORS)})")
    try:
        tensors = load(data)  # offsets and sizes checked against the bytes, which are bounded above
    except Exception as e:  # noqa: BLE001 - any failure to parse means damaged or crafted bytes
        raise _fail(where, f"the embedded latent cannot be read ({type(e).__name__}: {str(e)[:200]})") from e
    return tensors, meta


def load_png_latent(source: Union[str, os.PathLike, bytes]) -> Latent:
    """The latent a PNG written by `save_png_with_latent` carries (a path, or the PNG's bytes), bit for bit.

    Raises:
        FileNotFoundError: no such file.
        LatentFileError: the file is not a PNG, holds no latent (the message says how to get one), or its latent
            is damaged or crafted: an oversized or corrupt chunk, bad base64, foreign tensors, wrong shapes for the
            declared generator, NaN values. Memory stays within MAX_CHUNK_BYTES + MAX_LATENT_TEXT.
    """
    if isinstance(source, (bytes, bytearray)):
        where, f = "the PNG", io.BytesIO(bytes(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        where, f = str(path), open(path, "rb")
    with f:
        text = find_latent_text(f, where)
    if text is None:
        raise _fail(where, f"this PNG holds no StyleGAN Studio latent (no {PNG_LATENT_KEY!r} text chunk): it was not "
                           f"saved by 'Save Image with Latent', or an editor removed its metadata")
    latent = latent_from_text(text, f"{where} (its embedded latent)")
    logger.debug("read %s from %s", latent.describe(), where)
    return latent


def has_png_latent(path: Union[str, os.PathLike]) -> bool:
    """Whether the file is a PNG whose chunks before the pixels carry a latent (headers only: cheap, for listing
    files); False for anything unreadable."""
    key = PNG_LATENT_KEY.encode("latin-1") + b"\0"
    try:
        with open(path, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                return False
            position = 8
            for _ in range(64):   # PIL writes text chunks before the pixels: a few chunks in
                head = f.read(8)
                if len(head) < 8:
                    return False
                length, ctype = struct.unpack(">I4s", head)
                if ctype in (b"IDAT", b"IEND"):
                    return False
                if ctype in TEXT_CHUNKS and length >= len(key) and f.read(len(key)) == key:
                    return True
                position += 8 + length + 4
                f.seek(position)
    except OSError:
        return False
    return False


__all__ = ["PNG_LATENT_KEY", "PNG_GENERATOR_KEY", "MAX_LATENT_TEXT", "MAX_CHUNK_BYTES", "latent_to_bytes", "png_text",
           "encode_png", "save_png_with_latent", "latents_for_images", "find_latent_text", "latent_from_text",
           "load_png_latent", "has_png_latent", "PART_CHARS"]
