"""Latent toolkit: arithmetic, batches, per-layer-group blends for any num_ws, keyframe walks, and their nodes."""

from __future__ import annotations

import math

import pytest
import torch

import core
from conftest import load_pack, tiny_generator
from core import latent_ops as O
from core.errors import LatentError


@pytest.fixture(scope="module")
def G64():
    return tiny_generator("stylegan2", img_resolution=64)   # num_ws 10: coarse 0-3, middle 4-7, fine 8-9


def wplus(G, seeds):
    return core.sample_latents(G, seeds, space="w+")


# --- arithmetic ----------------------------------------------------------------------------------

def test_add_subtract_scale_are_elementwise_and_broadcast(G2):
    a, b = wplus(G2, [1, 2, 3]), wplus(G2, [7])
    s = O.add_latents(a, b, strength=0.5)
    assert s.batch_size == 3 and s.space == "w+"
    assert torch.allclose(s.tensor, a.tensor + 0.5 * b.tensor, atol=1e-6)
    d = O.subtract_latents(a, b)
    assert torch.allclose(d.tensor, a.tensor - b.tensor, atol=1e-6)
    back = O.add_latents(d, b)   # (a - b) + b == a
    assert torch.allclose(back.tensor, a.tensor, atol=1e-5)
    assert torch.allclose(O.scale_latent(a, -2.0).tensor, -2 * a.tensor)


def test_scale_about_the_average_is_the_truncation_trick(G2):
    w = core.sample_latents(G2, [4], space="w")
    truncated = core.sample_latents(G2, [4], space="w", truncation_psi=0.6)
    assert torch.allclose(O.scale_latent(w, 0.6, center="average", G=G2).tensor, truncated.tensor, atol=1e-5)
    with pytest.raises(LatentError, match="needs the generator"):
        O.scale_latent(w, 0.6, center="average")
    with pytest.raises(LatentError, match="w and w\\+ latents"):
        O.scale_latent(core.sample_latents(G2, [4], space="z"), 0.6, center="average", G=G2)


def test_mean_of_w_is_plain_and_mean_of_z_keeps_the_typical_length(G2):
    w = core.sample_latents(G2, [1, 2, 3, 4], space="w")
    assert torch.allclose(O.mean_latent(w).tensor, w.tensor.mean(0, keepdim=True), atol=1e-6)
    z = core.sample_latents(G2, list(range(8)), space="z")
    m = O.mean_latent(z)
    assert m.batch_size == 1
    assert math.isclose(m.tensor.norm().item(), z.tensor.norm(dim=1).mean().item(), rel_tol=1e-5)
    direction = z.tensor.mean(0) / z.tensor.mean(0).norm()
    assert torch.allclose(m.tensor[0] / m.tensor[0].norm(), direction, atol=1e-5)


def test_mixed_spaces_and_generators_are_refused_with_the_fix(G2):
    w, wp = core.sample_latents(G2, [1], space="w"), wplus(G2, [1])
    with pytest.raises(LatentError, match="Convert Latent"):
        O.add_latents(w, wp)
    other = core.sample_latents(tiny_generator("stylegan2", img_resolution=64), [1], space="w+")
    with pytest.raises(LatentError, match="other shapes"):
        O.subtract_latents(wp, other)
    with pytest.raises(LatentError, match="batch sizes must match"):
        O.add_latents(wplus(G2, [1, 2]), wplus(G2, [3, 4, 5]))
    z1 = core.sample_latents(G2, [1], space="z", truncation_psi=0.5)
    with pytest.raises(LatentError, match="different truncation"):
        O.add_latents(z1, core.sample_latents(G2, [2], space="z"))
    with pytest.raises(LatentError, match="strength"):
        O.add_latents(wp, wp, strength=float("nan"))


def test_fs_latents_add_every_part_and_refuse_mixed_skips(G64):
    base = wplus(G64, [1, 2])
    keep, drop = core.fs_from_wplus(G64, base, "keep"), core.fs_from_wplus(G64, base, "drop")
    total = O.add_latents(keep, keep)
    assert torch.allclose(total.features, 2 * keep.features) and torch.allclose(total.features_img,
                                                                                 2 * keep.features_img)
    assert torch.allclose(O.mean_latent(drop).features, drop.features.mean(0, keepdim=True), atol=1e-6)
    with pytest.raises(LatentError, match="skip"):
        O.add_latents(keep, drop)


# --- batches -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("0,2,4-7", [0, 2, 4, 5, 6, 7]), ("-1", [9]), ("-3--1", [7, 8, 9]),
                                            ("3-0", [3, 2, 1, 0]), (" 1 , 1 ", [1, 1]), ("0--1", list(range(10)))])
def test_parse_indices(text, expected):
    assert O.parse_indices(text, 10) == expected


@pytest.mark.parametrize("text, match", [("10", "outside the batch"), ("-11", "outside"), ("a", "cannot read"),
                                         ("", "no indices"), ("1.5", "cannot read")])
def test_parse_indices_refuses(text, match):
    with pytest.raises(LatentError, match=match):
        O.parse_indices(text, 10)


def test_select_split_concatenate_round_trip(G2):
    lat = core.sample_latents(G2, list(range(6)), space="w")
    picked = O.select_latents(lat, "-1,0")
    assert torch.equal(picked.tensor, lat.tensor[[5, 0]])
    first, rest = O.split_latent(lat, -2)
    assert (first.batch_size, rest.batch_size) == (4, 2)
    assert torch.equal(O.concat_latents([first, rest]).tensor, lat.tensor)
    with pytest.raises(LatentError, match="both parts"):
        O.split_latent(lat, 6)
    with pytest.raises(LatentError, match="one space"):
        O.concat_latents([lat, wplus(G2, [1])])


def test_concatenate_keeps_class_labels_per_latent():
    Gc = tiny_generator("stylegan2", c_dim=3)
    a = core.sample_latents(Gc, [1], space="z", class_idx=0)
    b = core.sample_latents(Gc, [2, 3], space="z", class_idx=2)
    both = O.concat_latents([a, b])
    assert both.c.argmax(1).tolist() == [0, 2, 2]
    assert O.select_latents(both, "2").c.argmax(1).tolist() == [2]


# --- per-layer-group blend -----------------------------------------------------------------------

@pytest.mark.parametrize("resolution, groups", [(32, ([0, 1, 2, 3], [4, 5, 6, 7], [])),
                                                (64, ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9])),
                                                (128, ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]))])
def test_layer_groups_follow_resolution_for_any_num_ws(resolution, groups):
    G = tiny_generator("stylegan2", img_resolution=resolution)
    found = O.layer_groups(G)
    assert (found["coarse"], found["middle"], found["fine"]) == groups
    assert sorted(sum(found.values(), [])) == list(range(G.num_ws))   # every layer in exactly one group


def test_layer_groups_cover_stylegan3():
    G = tiny_generator("stylegan3")
    found = O.layer_groups(G)
    assert sorted(sum(found.values(), [])) == list(range(G.num_ws)) and found["coarse"]


def test_blend_applies_each_groups_weight_per_layer(G64):
    a, b = wplus(G64, [1, 2]), wplus(G64, [9])
    out = O.blend_latents(G64, a, b, coarse=0.0, middle=0.25, fine=1.0)
    wa, wb = a.tensor, b.tensor.expand(2, -1, -1)
    for layer, t in [(0, 0.0), (3, 0.0), (4, 0.25), (7, 0.25), (8, 1.0), (9, 1.0)]:
        assert torch.allclose(out.tensor[:, layer], wa[:, layer] + t * (wb[:, layer] - wa[:, layer]), atol=1e-6)
    custom = O.blend_latents(G64, a, b, coarse=0, middle=0, fine=0, custom="2:1, 5-6:0.5")
    assert torch.equal(custom.tensor[:, 2], wb[:, 2]) and torch.equal(custom.tensor[:, 0], wa[:, 0])
    full = O.layer_weights(G64, custom=",".join(["0.1"] * 10))
    assert full == [0.1] * 10
    s = O.blend_latents(G64, a, b, coarse=0.5, middle=0.5, fine=0.5, method="slerp")
    assert torch.allclose(s.tensor, core.slerp(wa, wb, torch.tensor(0.5)), atol=1e-5)


@pytest.mark.parametrize("custom, match", [("0.1,0.2", "10 w layers"), ("12:1", "below num_ws"),
                                           ("0:x", "cannot read"), ("0:99", "-10..10")])
def test_blend_custom_weights_refused_with_the_syntax(G64, custom, match):
    with pytest.raises(LatentError, match=match):
        O.layer_weights(G64, custom=custom)


def test_blend_refuses_s_and_fs(G64):
    fs = core.fs_from_wplus(G64, wplus(G64, [1]))
    with pytest.raises(LatentError, match="Convert Latent"):
        O.blend_latents(G64, fs, wplus(G64, [2]))


# --- keyframe walks ------------------------------------------------------------------------------

@pytest.mark.parametrize("easing", O.EASINGS)
def test_ease_maps_ends_and_is_monotonic(easing):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    e = O.ease(t, easing)
    assert e[0] == 0 and abs(e[-1] - 1) < 1e-12 and bool((e[1:] >= e[:-1]).all())
    if easing != "linear":
        assert e[1] < t[1]   # eases in: slower than linear at the start


def test_looping_walk_hits_every_keyframe_and_never_repeats_the_first(G2):
    keys = core.sample_latents(G2, [1, 5, 9], space="w")
    walk = O.keyframe_walk(keys, 4, loop=True, easing="linear", method="lerp")
    assert walk.batch_size == 12
    for k in range(3):
        assert torch.equal(walk.tensor[4 * k], keys.tensor[k])
    step = walk.tensor[1:] - walk.tensor[:-1]
    closing = keys.tensor[0] - walk.tensor[-1]   # the step that closes the loop is a regular step
    assert torch.allclose(closing, step[-1], atol=1e-5)
    assert torch.allclose(walk.tensor[2], (keys.tensor[0] + keys.tensor[1]) / 2, atol=1e-6)
    open_walk = O.keyframe_walk(keys, 4, loop=False)
    assert open_walk.batch_size == 9 and torch.equal(open_walk.tensor[-1], keys.tensor[-1])


def test_walk_easing_and_slerp(G2):
    keys = core.sample_latents(G2, [1, 2], space="z")
    walk = O.keyframe_walk(keys, 8, loop=False, easing="cubic", method="auto")   # slerp for z
    t = O.ease(torch.tensor(3 / 8, dtype=torch.float64), "cubic")
    expected = core.slerp(keys.tensor[:1].double(), keys.tensor[1:].double(), t)
    assert torch.allclose(walk.tensor[3:4].double(), expected, atol=1e-5)


def test_walk_count_is_capped_before_anything_is_made(G2):
    keys = core.sample_latents(G2, [1, 2, 3], space="w")
    with pytest.raises(LatentError, match="10,000"):
        O.keyframe_walk(keys, 4000)
    with pytest.raises(LatentError, match="at least 2 keyframes"):
        O.keyframe_walk(O.select_latents(keys, "0"), 4)


def test_fs_walk_interpolates_features_linearly(G64):
    fs = core.fs_from_wplus(G64, wplus(G64, [1, 2]), "keep")
    walk = O.keyframe_walk(fs, 2, loop=True, easing="linear")
    assert walk.batch_size == 4 and torch.allclose(walk.features[1], fs.features.mean(0), atol=1e-5)
    with pytest.raises(LatentError, match="linearly"):
        O.keyframe_walk(fs, 2, method="slerp")


# --- nodes ---------------------------------------------------------------------------------------

def test_nodes_are_thin_and_report(G64):
    nodes = load_pack().NODE_CLASS_MAPPINGS
    a, b = wplus(G64, [1, 2, 3]), wplus(G64, [4])
    out = nodes["SGS_BlendLatents"]().blend(G64, a, b, 0.0, 0.5, 1.0, "lerp")
    assert "coarse 0-3, middle 4-7, fine 8-9" in out["ui"]["text"][0]
    assert out["result"][0].batch_size == 3
    walk = nodes["SGS_KeyframeWalk"]().walk(a, 5, True, "ease-in-out", "auto")
    assert walk["result"][0].batch_size == 15 and "15 frames through 3 keyframes" in walk["ui"]["text"][0]
    first, rest = nodes["SGS_SplitLatents"]().split(a, 1)
    assert (first.batch_size, rest.batch_size) == (1, 2)
    (joined,) = nodes["SGS_ConcatLatents"]().concatenate(first, rest)
    assert torch.equal(joined.tensor, a.tensor)
    (fs,) = nodes["SGS_ConvertLatent"]().convert(G64, a, "fs", "keep")
    assert fs.space == "fs" and fs.fs_skip == "keep"
    schema = nodes["SGS_KeyframeWalk"].INPUT_TYPES()["required"]
    assert schema["frames_per_segment"][1]["default"] == O.DEFAULT_FRAMES_PER_SEGMENT
    assert schema["easing"][1]["default"] == O.DEFAULT_EASING
