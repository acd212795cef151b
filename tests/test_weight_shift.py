"""Weight-Shift Edit: applying shifts (k = 0 exact, linear in k, layers together, the base never modified, chains)
and shift files (round trip, NaviGAN and StyleGAN-NADA importers, refusals of wrong bases and hostile files)."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Optional

import pytest
import torch

import core
from core.edits.weight_shift import (MAX_K, SHIFT_FORMAT, SHIFT_SUFFIX, WeightShift, applied_shifts,
                                     apply_weight_shifts, conv_layers, import_nada, import_navigan,
                                     load_weight_shift, make_shift, save_weight_shift, shift_base)
from core.errors import CheckpointError
from core.latents import weights_digest
from core.edits.weight_shift import files as wsfiles

sys.path.insert(0, str(Path(__file__).resolve().parent))
import forge  # noqa: E402
from conftest import on_device, tiny_generator  # noqa: E402

# ------------------------------------------------------------------------------------------------
# Helpers


def _shift(G, layer_index: int, seed: int, metadata: Optional[dict] = None) -> WeightShift:
    """A random shift of the `layer_index`-th conv layer of `G`, about 10 % of the weights' size."""
    layer = conv_layers(G)[layer_index]
    gen = torch.Generator().manual_seed(seed)
    w = dict(G.named_parameters())[layer.param]
    x = 0.1 * w.detach().std() * torch.randn(layer.shape, generator=gen)
    return make_shift(G, {layer.param: x}, **(metadata or {}))


def _ws(G, n: int = 2, seed: int = 0) -> torch.Tensor:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G.mapping(z, None, truncation_psi=0.7)


def _render(G, ws) -> torch.Tensor:
    with torch.no_grad():
        return G.synthesis(ws.to(next(G.parameters()).device), noise_mode="const").float().cpu()


def _state(G) -> dict:
    return {k: v.detach().clone() for k, v in G.state_dict().items()}


def _same_state(G, saved: dict) -> bool:
    now = G.state_dict()
    return now.keys() == saved.keys() and all(torch.equal(now[k], saved[k]) for k in saved)


FULL_METADATA = dict(prompt="a face with a big nose", neutral_prompt="a face", clip_model="ViT-B/32",
                     loss="directional", lambda_clip=10.0, lambda_l2=0.05, lr=0.002, steps=200, batch=2, k_train=1.0,
                     recommended_k=(-3.0, 3.0), norm="raw", source="sgs", layer="b8.conv1", name="big nose",
                     img_resolution=32, seed=7, two_sided=True, lambda_id=0.0)


# ------------------------------------------------------------------------------------------------
# Applying


@pytest.mark.parametrize("arch", ["stylegan2", "stylegan3"])
def test_k_zero_is_the_base_bit_for_bit(arch, G2, G3):
    G = G2 if arch == "stylegan2" else G3
    ws = _ws(G, n=1)
    base = _render(G, ws)
    a, b = _shift(G, 1, seed=1), _shift(G, 2, seed=2)
    assert torch.equal(_render(apply_weight_shifts(G, [(a, 0), (b, 0.0)]), ws), base)
    assert not apply_weight_shifts(G, [(a, 0.0)]).state_dict().keys() - G.state_dict().keys()
    assert all(p is q for p, q in zip(apply_weight_shifts(G, [(a, 0.0)]).parameters(), G.parameters()))
    moved = _render(apply_weight_shifts(G, [(a, 1.0)]), ws)
    assert (moved - base).abs().max() > 1e-3   # the shift does something at k != 0


@pytest.mark.parametrize("arch", ["stylegan2", "stylegan3"])
def test_two_shifts_of_one_layer_add_linearly(arch, G2, G3):
    G = G2 if arch == "stylegan2" else G3
    a, b = _shift(G, 1, seed=1), _shift(G, 1, seed=2)
    (name,) = a.tensors
    k1, k2 = 1.5, -0.7
    combined = make_shift(G, {name: k1 * a.tensors[name] + k2 * b.tensors[name]})
    two = apply_weight_shifts(G, [(a, k1), (b, k2)])
    one = apply_weight_shifts(G, [(combined, 1.0)])
    w2, w1 = dict(two.named_parameters())[name], dict(one.named_parameters())[name]
    base = dict(G.named_parameters())[name]
    assert not torch.equal(w2, base)
    assert torch.allclose(w2, w1, rtol=0, atol=1e-6)
    ws = _ws(G, n=1)
    assert torch.allclose(_render(two, ws), _render(one, ws), rtol=0, atol=1e-5)
    # And the same shift twice is the shift at k1 + k2.
    assert torch.allclose(dict(apply_weight_shifts(G, [(a, k1), (a, k2)]).named_parameters())[name],
                          dict(apply_weight_shifts(G, [(a, k1 + k2)]).named_parameters())[name], rtol=0, atol=1e-6)


def test_shifts_on_different_layers_apply_together(G2):
    a, b = _shift(G2, 0, seed=1), _shift(G2, 4, seed=2)
    (na,), (nb,) = a.tensors, b.tensors
    both = apply_weight_shifts(G2, [(a, 2.0), (b, -1.0)])
    params, base = dict(both.named_parameters()), dict(G2.named_parameters())
    assert torch.equal(params[na], base[na] + 2.0 * a.tensors[na])
    assert torch.equal(params[nb], base[nb] - b.tensors[nb])
    untouched = [n for n in base if n not in (na, nb)]
    assert all(params[n] is base[n] for n in untouched)   # shared, not copied
    ws = _ws(G2)
    img = _render(both, ws)
    for single in ([(a, 2.0)], [(b, -1.0)]):
        assert (img - _render(apply_weight_shifts(G2, single), ws)).abs().max() > 1e-4


@pytest.mark.parametrize("arch", ["stylegan2", "stylegan3"])
def test_the_loaded_generator_is_never_modified(arch, G2, G3):
    G = G2 if arch == "stylegan2" else G3
    before, digest, name = _state(G), weights_digest(G), G.info.name
    params = dict(G.named_parameters())
    a, b = _shift(G, 1, seed=1), _shift(G, 2, seed=2)
    G_a = apply_weight_shifts(G, [(a, 3.0), (b, -2.0)])
    apply_weight_shifts(G_a, [(a, -1.0)])
    _render(G_a, _ws(G, n=1))
    assert _same_state(G, before)
    assert all(p is params[n] and isinstance(p, torch.nn.Parameter) for n, p in G.named_parameters())
    assert G.info.name == name and "weight_shifts" not in G.info.extra and applied_shifts(G) == []
    assert core.latents._weights_digests.pop(G) == digest and weights_digest(G) == digest   # recomputed: same


def test_chained_application_equals_the_list(G2):
    a, b, c = _shift(G2, 1, seed=1), _shift(G2, 1, seed=2), _shift(G2, 3, seed=3)
    chained = apply_weight_shifts(apply_weight_shifts(apply_weight_shifts(G2, [(a, 1.0)]), [(b, -2.0)]), [(c, 0.5)])
    listed = apply_weight_shifts(G2, [(a, 1.0), (b, -2.0), (c, 0.5)])
    ws = _ws(G2)
    assert torch.equal(_render(chained, ws), _render(listed, ws))
    assert shift_base(chained) is G2 and [k for _, k in applied_shifts(chained)] == [1.0, -2.0, 0.5]
    # Undoing through the chain (k then -k) is the base exactly: x * k + x * -k is 0 in floating point.
    assert torch.equal(_render(apply_weight_shifts(apply_weight_shifts(G2, [(a, 1.0)]), [(a, -1.0)]), ws),
                       _render(G2, ws))


def test_apply_under_inference_mode_as_comfyui_loads(G2):
    """ComfyUI runs nodes (and loads models) under torch.inference_mode(): a generator made there, shifted there
    and rendered outside, or the other way round."""
    with torch.inference_mode():
        G = copy.deepcopy(G2)
        assert next(G.parameters()).is_inference()
        a = _shift(G, 2, seed=1)
        ws = _ws(G)
        base = _render(G, ws)
        shifted = apply_weight_shifts(G, [(a, 1.0)])
        img = _render(shifted, ws)
        assert torch.equal(_render(apply_weight_shifts(G, [(a, 0.0)]), ws), base)
        again = apply_weight_shifts(shifted, [(a, -1.0)])
    assert torch.equal(_render(again, ws.clone()), base.clone())
    outside = apply_weight_shifts(G, [(a, 1.0)])   # inference-mode G, applied outside it
    assert torch.equal(_render(outside, ws.clone()), img.clone())
    assert (img - base).abs().max() > 1e-3


def test_apply_keeps_precision_and_dtype(G2):
    G = copy.deepcopy(G2)
    G.precision = "float32"
    a = _shift(G, 2, seed=1)
    assert apply_weight_shifts(G, [(a, 1.0)]).precision == "float32"
    G.precision = "auto"
    assert apply_weight_shifts(G, [(a, 1.0)]).precision == "auto"
    # A generator held in float16 keeps float16 weights: W + kx summed in float32, rounded once.
    H = copy.deepcopy(G2).half()
    a = _shift(H, 2, seed=1)
    (name,) = a.tensors
    w = dict(apply_weight_shifts(H, [(a, 2.0)]).named_parameters())[name]
    base = dict(H.named_parameters())[name]
    assert w.dtype == torch.float16 and torch.equal(w, (base.float() + 2.0 * a.tensors[name]).half())


def test_apply_on_every_device_and_precision(device, dtype, G2):
    """k = 0 exact and the shift applied on the device the generator is on, with its fp16 blocks in fp16 where
    the device runs them (CUDA)."""
    G = tiny_generator("stylegan2", synthesis={"num_fp16_res": 2})
    a, ws = _shift(G, 2, seed=1), _ws(G)
    G = on_device(G, device, dtype)
    base = _render(G, ws)
    assert torch.equal(_render(apply_weight_shifts(G, [(a, 0.0)]), ws), base)
    shifted = apply_weight_shifts(G, [(a, 1.0)])
    (name,) = a.tensors
    w = dict(shifted.named_parameters())[name]
    assert w.device.type == device.type and shifted.precision == G.precision
    img = _render(shifted, ws)
    assert torch.isfinite(img).all() and (img - base).abs().max() > 1e-3


def test_a_shift_for_another_generator_is_refused_naming_it(G2, G3, tmp_path):
    a = _shift(G2, 1, seed=1)
    other = tiny_generator("stylegan2", seed=5)
    other.info.name = "other-model"
    with pytest.raises(CheckpointError, match=r"made for tiny-stylegan2 .*other-model has other weights.*"
                                              r"load tiny-stylegan2"):
        apply_weight_shifts(other, [(a, 1.0)])
    # From a file too, and for a generator of another architecture (the parameter is missing there).
    loaded = load_weight_shift(save_weight_shift(a, tmp_path / "a"))
    with pytest.raises(CheckpointError, match="made for tiny-stylegan2.*load tiny-stylegan2"):
        apply_weight_shifts(other, [(loaded, 1.0)])
    with pytest.raises(CheckpointError, match="for tiny-stylegan2.*does not fit tiny-stylegan3.*load tiny-stylegan2"):
        apply_weight_shifts(G3, [(loaded, 1.0)])
    apply_weight_shifts(G2, [(loaded, 1.0)])   # its own base is fine


@pytest.mark.parametrize("k", [float("nan"), float("inf"), MAX_K + 0.5, "1", True, None])
def test_bad_strengths_are_refused(k, G2):
    with pytest.raises(ValueError, match="strength k"):
        apply_weight_shifts(G2, [(_shift(G2, 1, seed=1), k)])


# ------------------------------------------------------------------------------------------------
# Files


def test_file_round_trip_keeps_tensors_and_every_field(G2, tmp_path):
    a = _shift(G2, 2, 1, FULL_METADATA)
    path = save_weight_shift(a, tmp_path / "nose")
    assert path == tmp_path / ("nose" + SHIFT_SUFFIX) and path.is_file()
    assert core.files.safetensors_format(path) == SHIFT_FORMAT
    b = load_weight_shift(path)
    assert b.tensors.keys() == a.tensors.keys()
    assert all(torch.equal(b.tensors[k], a.tensors[k]) and b.tensors[k].dtype == torch.float32 for k in a.tensors)
    assert b.base == a.base and b.base_digest == a.base_digest == weights_digest(G2)
    assert b.metadata == {**FULL_METADATA, "img_resolution": G2.img_resolution} and b.recommended_k == (-3.0, 3.0)
    assert isinstance(b.metadata["steps"], int) and isinstance(b.metadata["lr"], float)
    ws = _ws(G2)
    assert torch.equal(_render(apply_weight_shifts(G2, [(b, 2.5)]), ws),
                       _render(apply_weight_shifts(G2, [(a, 2.5)]), ws))
    # The file's own metadata, as other tools read it (methods-edits A.5).
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["base_sha256"] == weights_digest(G2) and meta["recommended_k"] == "-3.0,3.0"
    assert meta["version"] == "1" and meta["w_dim"] == "16" and json.loads(meta["base"])["name"] == "tiny-stylegan2"
    # Saving again overwrites atomically; a shift with only the defaults reads back with them.
    c = load_weight_shift(save_weight_shift(_shift(G2, 0, seed=3), path))
    assert c.metadata == {"source": "sgs", "norm": "raw", "recommended_k": (-3.0, 3.0), "layer": "b4.conv1",
                          "img_resolution": G2.img_resolution}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("field, value, match", [
    ("recommended_k", (3.0, -3.0), "lo < hi"),
    ("recommended_k", (-20.0, 1.0), "-10..10"),
    ("recommended_k", (float("nan"), 1.0), "finite"),
    ("prompt", "x" * 5000, "5,000 characters"),
    ("steps", 2.5, "whole number"),
    ("lr", float("inf"), "finite"),
    ("source", "evil", "one of sgs, navigan, nada"),
    ("norm", "unit", "needs a 'scale'"),
    ("base_sha256", "abc", "must not set"),
    ("seed", object(), "plain short values"),
])
def test_save_refuses_what_load_would_refuse(field, value, match, G2, tmp_path):
    a = _shift(G2, 1, 1, {field: value})
    with pytest.raises(ValueError, match=match):
        save_weight_shift(a, tmp_path / "bad")
    assert not any(tmp_path.iterdir())
    a = _shift(G2, 1, seed=1)
    a.tensors[next(iter(a.tensors))][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        save_weight_shift(a, tmp_path / "nan")


def _write(tmp_path, G, tensors=None, name="s.safetensors", **fields) -> Path:
    layer = conv_layers(G)[2]
    tensors = {layer.param: torch.full(layer.shape, 0.01)} if tensors is None else tensors
    return forge.write_shift_file(tmp_path / name, tensors, core.generator_ref(G).to_dict(), weights_digest(G),
                                  **fields)


def test_a_forged_file_in_the_documented_format_loads(G2, tmp_path):
    path = _write(tmp_path, G2)
    s = load_weight_shift(path)
    assert s.metadata["prompt"] == "a face with a big nose" and s.metadata["steps"] == 200
    assert torch.equal(dict(apply_weight_shifts(G2, [(s, 1.0)]).named_parameters())["synthesis.b8.conv1.weight"],
                       G2.synthesis.b8.conv1.weight + 0.01)


@pytest.mark.parametrize("field", ["version", "base", "base_sha256", "w_dim", "source", "norm", "recommended_k"])
def test_missing_required_fields_are_named(field, G2, tmp_path):
    path = _write(tmp_path, G2, **{field: None})
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + f".*no '{field}' field"):
        load_weight_shift(path)


HOSTILE_FIELDS = [
    ("version", "2", "version 2 is not one"),
    ("version", "one", "whole number"),
    ("base", "{}", "'base' is invalid"),
    ("base", forge.nested_json(5000), "'base' is invalid"),
    ("base_sha256", "0" * 63 + "g", "64 lowercase hex"),
    ("w_dim", "512", "'w_dim' is 512 but its base"),
    ("source", "sgs; rm -rf", "one of sgs, navigan, nada"),
    ("norm", "unit", "norm 'unit' needs a 'scale'"),
    ("scale", "2.0", "'scale' belongs to norm 'unit'"),
    ("scale", "-1", "0..1e\\+12"),
    ("recommended_k", "3,-3", "lo < hi"),
    ("recommended_k", "-1e9,1e9", "-10..10"),
    ("recommended_k", "nan,1", "finite"),
    ("recommended_k", "-inf,inf", "finite"),
    ("recommended_k", "1", "'lo,hi'"),
    ("recommended_k", "-1,0,1", "'lo,hi'"),
    ("recommended_k", "-" + "1" * 100 + ",1", "'lo,hi'"),
    ("prompt", "a" * 100_000, "100,000 characters long"),
    ("neutral_prompt", "b" * 1001, "1,001 characters long"),
    ("clip_model", "c" * 300, "300 characters long"),
    ("layer", "L" * 5000, "5,000 characters long"),
    ("loss", "global; x", "expected"),
    ("lambda_l2", "-0.1", "0..1e\\+06"),
    ("lr", "1e400", "finite"),
    ("steps", "1e3", "whole number"),
    ("steps", "99999999999", "whole number"),
    ("batch", "-1", "whole number"),
    ("k_train", "11", "-10..10"),
    ("img_resolution", "99999", "whole number"),
    ("extra", "[1, 2]", "JSON object"),
    ("extra", json.dumps({"prompt": "hidden"}), "field of its own"),
    ("extra", json.dumps({"x": {"deep": 1}}), "number, text"),
    ("extra", json.dumps({"x": "y" * 20_000}), "characters long"),
    ("extra", forge.nested_json(5000), "invalid"),
    ("evil_field", "1", "unknown field"),
]


@pytest.mark.parametrize("field, value, match", HOSTILE_FIELDS, ids=[f"{f}-{i}" for i, (f, _, _) in
                                                                     enumerate(HOSTILE_FIELDS)])
def test_invalid_metadata_fields_are_named(field, value, match, G2, tmp_path):
    path = _write(tmp_path, G2, **{field: value})
    with pytest.raises(CheckpointError) as e:
        load_weight_shift(path)
    msg = str(e.value)
    assert str(path) in msg and re.search(match, msg), msg
    assert field in msg or field == "scale" and "norm" in msg
    assert len(msg) < 1000   # huge values are never echoed


def test_hostile_shift_files_are_refused(G2, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 7 + b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors weight shift"):
        load_weight_shift(junk)
    with pytest.raises(FileNotFoundError, match="weight shift not found"):
        load_weight_shift(tmp_path / "missing.safetensors")
    latent = core.save_latent(core.sample_latents(G2, [1], space="w"), tmp_path / "latent.safetensors")
    with pytest.raises(CheckpointError, match="not a StyleGAN Studio weight shift \\(format 'stylegan-studio-latent'"):
        load_weight_shift(latent)
    layer = conv_layers(G2)[2]
    for bad, match in [
        ({layer.param: torch.ones(layer.shape, dtype=torch.int32)}, "dtype torch.int32"),
        ({layer.param: torch.full(layer.shape, float("nan"))}, "NaN or infinite"),
        ({layer.param: torch.full(layer.shape, float("inf"))}, "NaN or infinite"),
        ({layer.param: torch.full(layer.shape, 1e300, dtype=torch.float64)}, "NaN or infinite"),  # inf in float32
        ({}, "holds no tensors"),
        ({"x" * 300: torch.zeros(1)}, "not a parameter name"),
        ({"synthesis/../../etc": torch.zeros(1)}, "not a parameter name"),
        ({f"p{i}": torch.zeros(1) for i in range(1025)}, "1,025 tensors, at most 1,024"),
    ]:
        path = _write(tmp_path, G2, tensors=bad, name="bad.safetensors")
        with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*" + match):
            load_weight_shift(path)
    # Well-formed files whose tensors do not fit the generator: refused when applied, naming what.
    for bad, match in [
        ({"synthesis.b8.conv1.nothing": torch.zeros(3)}, "has no parameter 'synthesis.b8.conv1.nothing'"),
        ({layer.param: torch.zeros(2, 2)}, re.escape(f"is [2, 2] in the shift but {list(layer.shape)}")),
    ]:
        s = load_weight_shift(_write(tmp_path, G2, tensors=bad, name="misfit.safetensors"))
        with pytest.raises(CheckpointError, match=match + ".*load tiny-stylegan2"):
            apply_weight_shifts(G2, [(s, 1.0)])
    # float16 files are accepted and read as float32.
    s = load_weight_shift(_write(tmp_path, G2, tensors={layer.param: torch.full(layer.shape, 0.5).half()}))
    assert s.tensors[layer.param].dtype == torch.float32


# ------------------------------------------------------------------------------------------------
# NaviGAN


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    """The rosinality fixture generator: (fixture, its checkpoint path, our generator loaded from it)."""
    fx = forge.load_fixture("rosinality")
    path = forge.write_rosinality_pt(fx, tmp_path_factory.mktemp("ros") / "base.pt")
    return fx, path, core.load_generator(path)


def _rosinality_with(fx, tmp_path, name, **changes) -> core.Generator:
    """Our loader's generator for the fixture with `changes` (rosinality names -> new tensors)."""
    g_ema = {k: v.clone() for k, v in fx.net.items() if k != "latent_avg"}
    g_ema.update(changes)
    return core.load_generator(forge.write_rosinality_pt(fx, tmp_path / name, g_ema=g_ema))


def test_navigan_import_matches_the_rosinality_loader(ros, tmp_path):
    """NaviGAN adds its shift to rosinality's raw convs[i].conv.weight: the imported shift at k must render what
    our rosinality loader makes of a checkpoint whose weight is weight + k * shift."""
    fx, _, G = ros
    raw = fx.net["convs.3.conv.weight"]
    shift = forge.navigan_shift(raw.shape[1:], scale=2.0)
    path = forge.write_navigan_shift(tmp_path / "nose_size.pt", 3, shift)
    s = import_navigan(path, G)
    assert list(s.tensors) == ["synthesis.b16.conv1.weight"]   # convs[3] is b16.conv1 (rosinality's conv1 is b4)
    assert torch.equal(s.tensors["synthesis.b16.conv1.weight"], shift[0, 0])
    assert s.metadata["source"] == "navigan" and s.metadata["norm"] == "unit" and s.metadata["layer"] == "b16.conv1"
    assert s.metadata["scale"] == pytest.approx(2.0, rel=1e-6) and s.recommended_k == (-1.0, 1.0)
    assert s.metadata["name"] == "nose_size" and s.base_digest == weights_digest(G)
    ws = _ws(G)
    for k in (1.0, -0.5):
        ref = _rosinality_with(fx, tmp_path, f"ref{k}.pt", **{"convs.3.conv.weight": raw + k * shift[0]})
        assert torch.allclose(_render(apply_weight_shifts(G, [(s, k)]), ws), _render(ref, ws), rtol=0, atol=1e-5)
    # The first conv of a block; a file in torch's legacy (pre-zip) format.
    s0 = import_navigan(forge.write_navigan_shift(tmp_path / "c0.pt", 0, forge.navigan_shift(
        fx.net["convs.0.conv.weight"].shape[1:])), G)
    assert list(s0.tensors) == ["synthesis.b8.conv0.weight"]
    legacy = import_navigan(forge.write_navigan_shift(tmp_path / "old.pt", 3, shift, legacy_format=True), G)
    assert torch.equal(legacy.tensors["synthesis.b16.conv1.weight"], shift[0, 0])
    # The imported shift saves and loads like any other.
    back = load_weight_shift(save_weight_shift(s, tmp_path / "nose"))
    assert back.metadata == s.metadata and torch.equal(back.tensors["synthesis.b16.conv1.weight"], shift[0, 0])


def test_navigan_files_that_do_not_fit_are_refused(ros, G3, tmp_path):
    fx, _, G = ros
    shape = fx.net["convs.3.conv.weight"].shape[1:]
    good = forge.navigan_shift(shape)
    cases = [
        (6, good, r"'layer_ix' must be a rosinality conv index in 0..5"),
        (-1, good, r"0..5 .*got -1"),
        (True, good, r"got True"),
        ("3", good, r"got '3'"),
        (2.0, good, r"got 2.0"),
        (4, good, r"convs\[4\].*needs \[1, 1, 8, 16, 3, 3\]"),          # b32.conv0 has 8 output channels
        (3, good[..., :2], r"is \[1, 1, 16, 16, 3, 2\]"),
        (3, torch.ones(list(good.shape), dtype=torch.int64), "floating-point tensor"),
        (3, good * float("nan"), "NaN or infinite"),
        (3, torch.zeros_like(good), "all zeros"),
        (3, [1.0, 2.0], "floating-point tensor"),
    ]
    for ix, shift, match in cases:
        path = forge.write_navigan_shift(tmp_path / "bad.pt", ix, shift)
        with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*" + match):
            import_navigan(path, G)
    torch.save({"shift": good}, tmp_path / "nokey.pt")
    with pytest.raises(CheckpointError, match="not a NaviGAN shift file.*keys: 'shift'"):
        import_navigan(tmp_path / "nokey.pt", G)
    with pytest.raises(CheckpointError, match="NaviGAN shifts are for StyleGAN2 generators.*stylegan3"):
        import_navigan(forge.write_navigan_shift(tmp_path / "sg3.pt", 3, good), G3)
    (tmp_path / "text.pt").write_text("layer_ix = 3")
    with pytest.raises(CheckpointError, match="cannot read NaviGAN shift"):
        import_navigan(tmp_path / "text.pt", G)
    shifted = apply_weight_shifts(G, [(import_navigan(forge.write_navigan_shift(tmp_path / "ok.pt", 3, good), G), 1.0)])
    with pytest.raises(ValueError, match="unshifted generator"):
        import_navigan(tmp_path / "ok.pt", shifted)


@pytest.mark.parametrize("payload", [forge.CodeRunningPayload, forge.ExecPayload])
def test_pickled_code_in_navigan_and_nada_files_never_runs(payload, ros, tmp_path):
    fx, _, G = ros
    forge.CODE_RAN.clear()
    good = forge.navigan_shift(fx.net["convs.3.conv.weight"].shape[1:])
    evil = forge.write_navigan_shift(tmp_path / "evil.pt", 3, good, extra=payload())
    with pytest.raises(CheckpointError, match=re.escape(str(evil)) + ".*holds Python objects.*nothing from the file "
                                                                      "was executed"):
        import_navigan(evil, G)
    state = forge.nada_state(fx, {"convs.3.conv.weight": 0.1})
    nada = forge.write_nada_checkpoint(tmp_path / "evil_nada.pt", {**state, "convs.3.conv.weight": payload()})
    with pytest.raises(CheckpointError, match="holds Python objects"):
        import_nada(nada, G)
    assert forge.CODE_RAN == []


def test_navigan_zip_bomb_is_refused_before_reading(ros, tmp_path):
    _, _, G = ros
    bomb = forge.write_torch_zip_bomb(tmp_path / "bomb.pt")
    with pytest.raises(CheckpointError, match="zip bomb"):
        import_navigan(bomb, G)


# ------------------------------------------------------------------------------------------------
# StyleGAN-NADA


NADA_CHANGES = {"conv1.conv.weight": 0.05, "convs.2.conv.weight": 0.05, "convs.2.conv.modulation.weight": 0.02,
                "convs.3.activate.bias": 0.1, "input.input": 0.05,
                "convs.5.noise.weight": 1e-6}   # a tiny change counts too: any difference at all is the shift


def test_nada_import_is_the_difference_to_the_base(ros, tmp_path):
    fx, _, G = ros
    state = forge.nada_state(fx, NADA_CHANGES)
    path = forge.write_nada_checkpoint(tmp_path / "000300.pt", state)
    s = import_nada(path, G)
    assert sorted(s.tensors) == sorted(["synthesis.b4.conv1.weight", "synthesis.b16.conv0.weight",
                                        "synthesis.b16.conv0.affine.weight", "synthesis.b16.conv1.bias",
                                        "synthesis.b4.const", "synthesis.b32.conv1.noise_strength"])
    assert s.metadata["source"] == "nada" and s.metadata["norm"] == "raw" and s.recommended_k == (0.0, 1.0)
    assert s.metadata["layer"].split(",") == list(dict.fromkeys(s.layers)) and s.metadata["name"] == "000300"
    # k = 1 renders the NADA generator (loaded by our rosinality loader), k = 0 the base.
    nada_G = core.load_generator(forge.write_rosinality_pt(fx, tmp_path / "nada_full.pt", g_ema=state))
    ws = _ws(G)
    assert torch.allclose(_render(apply_weight_shifts(G, [(s, 1.0)]), ws), _render(nada_G, ws), rtol=0, atol=1e-5)
    assert torch.equal(_render(apply_weight_shifts(G, [(s, 0.0)]), ws), _render(G, ws))
    back = load_weight_shift(save_weight_shift(s, tmp_path / "nada"))
    assert back.metadata == s.metadata and all(torch.equal(back.tensors[k], s.tensors[k]) for k in s.tensors)
    # Without the optimiser state, and in a full rosinality checkpoint (latent_avg, args), the same delta.
    for other in (forge.write_nada_checkpoint(tmp_path / "bare.pt", state, g_optim=False),
                  forge.write_rosinality_pt(fx, tmp_path / "full.pt", g_ema=state, training_state=True, args=False)):
        t = import_nada(other, G)
        assert t.tensors.keys() == s.tensors.keys() and all(torch.equal(t.tensors[k], s.tensors[k]) for k in s.tensors)


def test_import_shift_reads_a_pt_once_and_tells_the_two_kinds_apart(ros, tmp_path, monkeypatch):
    fx, _, G = ros
    navigan = forge.write_navigan_shift(tmp_path / "nose.pt", 3, forge.navigan_shift(
        fx.net["convs.3.conv.weight"].shape[1:]))
    nada = forge.write_nada_checkpoint(tmp_path / "000300.pt", forge.nada_state(fx, NADA_CHANGES))
    reads = []
    real = wsfiles.read_state_dict
    monkeypatch.setattr(wsfiles, "read_state_dict", lambda path, **kw: (reads.append(path), real(path, **kw))[1])
    for path, kind, direct in ((navigan, "navigan", import_navigan), (nada, "nada", import_nada)):
        reads.clear()
        s = wsfiles.import_shift(path, G)
        assert reads == [path] and s.metadata["source"] == kind
        d = direct(path, G)
        assert s.tensors.keys() == d.tensors.keys() and all(torch.equal(s.tensors[k], d.tensors[k]) for k in d.tensors)
    junk = forge.write_navigan_shift(tmp_path / "junk.pt", 3, forge.navigan_shift((4, 4, 3, 3)))
    with pytest.raises(CheckpointError, match="does not fit|needs"):
        wsfiles.import_shift(junk, G)


def test_nada_from_another_base_is_refused(ros, G2, tmp_path):
    fx, _, G = ros
    mapping = forge.write_nada_checkpoint(tmp_path / "m.pt", forge.nada_state(fx, {**NADA_CHANGES,
                                                                                  "style.3.weight": 0.01}))
    with pytest.raises(CheckpointError, match=re.escape(str(mapping)) + r".*mapping network differs.*"
                                              r"mapping.fc2.weight.*NADA keeps the mapping frozen.*fine-tuned from"):
        import_nada(mapping, G)
    noise = forge.write_nada_checkpoint(tmp_path / "n.pt", forge.nada_state(fx, {**NADA_CHANGES,
                                                                                "noises.noise_2": 1.0}))
    with pytest.raises(CheckpointError, match=r"fixed tensors differ.*synthesis.b8.conv1.noise_const"):
        import_nada(noise, G)
    same = forge.write_nada_checkpoint(tmp_path / "same.pt", forge.nada_state(fx, {}))
    with pytest.raises(CheckpointError, match="identical to"):
        import_nada(same, G)
    with pytest.raises(CheckpointError, match="another architecture"):   # 32 channels, 2 mapping layers
        import_nada(forge.write_nada_checkpoint(tmp_path / "arch.pt", forge.nada_state(fx, NADA_CHANGES)), G2)
    bad = forge.nada_state(fx, NADA_CHANGES)
    bad["convs.2.conv.weight"] = bad["convs.2.conv.weight"] * float("inf")
    with pytest.raises(CheckpointError, match="'synthesis.b16.conv0.weight' holds NaN or infinite"):
        import_nada(forge.write_nada_checkpoint(tmp_path / "inf.pt", bad), G)
    short = {k: v for k, v in forge.nada_state(fx, NADA_CHANGES).items() if k != "convs.5.noise.weight"}
    with pytest.raises(CheckpointError, match="lacks tensors.*noise_strength"):
        import_nada(forge.write_nada_checkpoint(tmp_path / "short.pt", short), G)
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a rosinality StyleGAN2 checkpoint"):
        import_nada(tmp_path / "other.pt", G)
