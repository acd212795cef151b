"""Issue 13, classes 6 and 7 and the latent counts of class 1: hostile inversion inputs, latent files, weight-delta
files, seed lists and batch sizes are refused early, with messages that name the input and say what to do."""

from __future__ import annotations

import dataclasses
import math
import sys
import tracemalloc

import psutil
import pytest
import torch

import core
import forge
from core import deltas as D
from core import latents as L
from core.edits import inversion as I
from conftest import tiny_generator

P = pytest.importorskip("core.losses.perceptual")


@pytest.fixture(scope="module")
def G():
    return tiny_generator("stylegan2")


@pytest.fixture(scope="module")
def Gc():
    return tiny_generator("stylegan2", c_dim=3)


@pytest.fixture(scope="module")
def nets():
    return {"lpips_vgg": P.random_lpips("vgg", seed=0), "vgg16_features": P.random_vgg16_features(seed=2)}


def ref_dict(G) -> dict:
    return core.generator_ref(G).to_dict()


def w_latent(G, n: int = 2) -> torch.Tensor:
    return core.sample_latents(G, list(range(n))).tensor


def peak_python_bytes(fn) -> tuple[int, BaseException | None]:
    """Peak Python-heap bytes while `fn` runs, and what it raised."""
    tracemalloc.start()
    error = None
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - the caller checks what was raised
        error = e
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, error


# ------------------------------------------------------------------------------------------------
# Seed lists, batch sizes, frame counts: one cap, checked before anything is allocated

def test_cap_is_defined_once_and_read_by_the_nodes(pack):
    assert L.MAX_LATENTS == 10_000 and L.MAX_SEED == 2 ** 32 - 1
    spec = pack.NODE_CLASS_MAPPINGS["SGS_InterpolateLatents"].INPUT_TYPES()["required"]["num_frames"][1]
    assert spec["max"] == L.MAX_LATENTS
    spec = pack.NODE_CLASS_MAPPINGS["SGS_SampleLatent"].INPUT_TYPES()["required"]["batch_size"][1]
    assert spec["max"] <= L.MAX_LATENTS


def test_a_short_seed_list_cannot_ask_for_100000_latents():
    text = ",".join(["0-9999"] * 10) + ",1"     # 62 characters, 100,001 seeds
    peak, error = peak_python_bytes(lambda: L.parse_seeds(text))
    assert isinstance(error, core.LatentError)
    assert str(error) == (
        f"the seed list {text[:60]!r}... asks for 100,001 latents, more than the 10,000 one request may make (a cap "
        "that keeps one input from filling memory); split it into several lists of at most 10,000 seeds (e.g. "
        "'0-9999', then '10000-19999') and run them one after another")
    assert peak < 1_000_000, peak  # refused before the list was built (100,001 ints would be > 3 MB)
    peak, error = peak_python_bytes(lambda: L.parse_seeds("0-4294967295"))
    assert isinstance(error, core.LatentError) and "asks for 4,294,967,296 latents" in str(error)
    assert peak < 1_000_000, peak
    assert len(L.parse_seeds("0-9999")) == L.MAX_LATENTS  # the cap itself is allowed


@pytest.mark.parametrize("text, message", [
    ("5-2", "seed range '5-2' goes downwards; write it low-high: '2-5'"),
    ("-3", "seed '-3' is negative; " + L.SEED_SYNTAX),
    ("1, -3-4", "seed '-3-4' is negative; " + L.SEED_SYNTAX),
    ("4294967296", "seed 4294967296 in '4294967296' is larger than 4294967295 (2**32 - 1), the largest seed NVIDIA's "
                   "seed mode (numpy RandomState) accepts; " + L.SEED_SYNTAX),
    ("0-4294967296", "seed 4294967296 in '0-4294967296' is larger than 4294967295 (2**32 - 1), the largest seed "
                     "NVIDIA's seed mode (numpy RandomState) accepts; " + L.SEED_SYNTAX),
    ("9" * 5000, f"seed {'9' * 20}... in {'9' * 40!r} is larger than 4294967295 (2**32 - 1), the largest seed "
                 "NVIDIA's seed mode (numpy RandomState) accepts; " + L.SEED_SYNTAX),
    ("²", "cannot read seed '²'; " + L.SEED_SYNTAX),
    ("1.5", "cannot read seed '1.5'; " + L.SEED_SYNTAX),
    ("1-2-3", "cannot read seed '1-2-3'; " + L.SEED_SYNTAX),
    (" , ,", "no seeds given; " + L.SEED_SYNTAX),
])
def test_seed_list_syntax_errors(text, message):
    with pytest.raises(core.LatentError) as e:
        L.parse_seeds(text)
    assert str(e.value) == message


def test_seed_list_edges_that_are_fine():
    assert L.parse_seeds("4294967295") == [4294967295]
    assert L.parse_seeds("007, 3 - 4") == [7, 3, 4]
    assert L.parse_seeds("4294967294-4294967295") == [4294967294, 4294967295]


def test_batch_seeds_checks_count_and_last_seed_first():
    assert L.batch_seeds(5, 3) == [5, 6, 7]
    peak, error = peak_python_bytes(lambda: L.batch_seeds(0, 10 ** 9))
    assert str(error) == ("batch_size 1,000,000,000 asks for 1,000,000,000 latents, more than the 10,000 one request "
                          "may make (a cap that keeps one input from filling memory); use a batch_size of at most "
                          "10,000 and several runs")
    assert peak < 1_000_000, peak
    with pytest.raises(core.LatentError) as e:
        L.batch_seeds(2 ** 32 - 1, 2)
    assert str(e.value) == ("seed 4294967295 with batch_size 2 runs past the largest seed 4294967295 (2**32 - 1); "
                            "choose a seed of at most 4294967294")
    with pytest.raises(core.LatentError, match="batch_size must be at least 1, got 0"):
        L.batch_seeds(0, 0)


def test_sample_latent_node_refuses_before_sampling(pack, G, monkeypatch):
    node = pack.NODE_CLASS_MAPPINGS["SGS_SampleLatent"]()
    called = []
    monkeypatch.setattr(sys.modules[pack.__name__ + ".core.latents"], "seeds_to_z", lambda *a, **k: called.append(1))
    with pytest.raises(ValueError, match="runs past the largest seed"):  # the pack's own LatentError class
        node.sample(G, 2 ** 32 - 1, 4, "w", 1.0, 0, "nvidia")
    with pytest.raises(ValueError, match="asks for 100,001 latents"):
        node.sample(G, 0, 1, "w", 1.0, 0, "nvidia", seed_list="0-100000")
    with pytest.raises(ValueError, match=r"truncation_psi must be a number in -10..10 \(1 = no truncation, .*\), "
                                               r"got nan"):
        node.sample(G, 0, 1, "w", float("nan"), 0, "nvidia")
    assert not called


def test_seeds_to_z_checks_every_seed_and_the_count():
    with pytest.raises(core.LatentError) as e:
        L.seeds_to_z([1, -1], 4)
    assert str(e.value) == ("seed -1 is outside 0..4294967295 (2**32 - 1), the seeds NVIDIA's seed mode (numpy "
                            "RandomState) accepts; choose a seed in that range")
    with pytest.raises(core.LatentError, match="a list of 10,001 seeds asks for 10,001 latents"):
        L.seeds_to_z(range(10_001), 4)
    with pytest.raises(core.LatentError, match="no seeds given"):
        L.seeds_to_z([], 4)
    peak, error = peak_python_bytes(lambda: L.seeds_to_z(range(10 ** 9), 4))
    assert "asks for 1,000,000,000 latents" in str(error) and peak < 1_000_000, peak


def test_interpolation_frames_times_pairs_are_capped_before_any_work(G, monkeypatch):
    a, b = core.sample_latents(G, [0, 1, 2]), core.sample_latents(G, [3, 4, 5])
    calls = []
    monkeypatch.setattr(L, "slerp", lambda *x, **k: calls.append(1))
    with pytest.raises(core.LatentError) as e:
        L.interpolate_latents(a, b, 5000, method="slerp")
    assert str(e.value) == ("3 pair(s) x 5000 frames asks for 15,000 latents, more than the 10,000 one request may "
                            "make (a cap that keeps one input from filling memory); use fewer frames or fewer pairs "
                            "per run (at most 10,000 frames in all), and join the parts in the video node")
    assert not calls
    with pytest.raises(ValueError, match="num_frames must be a whole number, got 2.5"):
        L.interpolate_latents(a, b, 2.5)
    one, other = core.sample_latents(G, [0]), core.sample_latents(G, [1])
    assert L.interpolate_latents(one, other, L.MAX_LATENTS).batch_size == L.MAX_LATENTS  # the cap itself is fine


# ------------------------------------------------------------------------------------------------
# Latents in memory: truncation, labels, emptiness

@pytest.mark.parametrize("psi", [float("nan"), float("inf"), -float("inf"), "0.7", True, 1e30, -10.5])
def test_sample_latents_refuses_a_bad_psi(G, psi):
    with pytest.raises(core.LatentError) as e:
        core.sample_latents(G, [0], space="z", truncation_psi=psi)
    assert str(e.value) == (f"truncation_psi must be a number in -10..10 (1 = no truncation, 0 = the average face; "
                            f"beyond ±2 the image only saturates), got {psi!r}")


@pytest.mark.parametrize("cutoff", [-1, 9, 10 ** 6, 2.5])
def test_sample_latents_refuses_a_bad_cutoff(G, cutoff):
    with pytest.raises(core.LatentError) as e:
        core.sample_latents(G, [0], truncation_psi=0.5, truncation_cutoff=cutoff)
    assert str(e.value) == (f"truncation_cutoff must be empty (every layer) or a whole number in 0..8 (the "
                            f"generator's num_ws), got {cutoff!r}")


def test_latent_invariants(G, Gc):
    lat = core.sample_latents(G, [0, 1])
    with pytest.raises(core.LatentError, match=r"^the latent is empty \(a batch of 0\); sample, load or invert at "
                                               r"least one latent$"):
        core.Latent(lat.tensor[:0], "w", lat.generator)
    with pytest.raises(core.LatentError, match="a latent must be a floating-point tensor, got torch.int64"):
        core.Latent(lat.tensor.long(), "w", lat.generator)
    zc = core.sample_latents(Gc, [0, 1], space="z", class_idx=1)
    bad = zc.c.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(core.LatentError, match=r"the class labels c contain NaN or infinite values"):
        core.Latent(zc.tensor, "z", zc.generator, bad)
    with pytest.raises(core.LatentError, match=r"class labels c for tiny-stylegan2 must have shape \[2 or 1, 3\], "
                                               r"got \[2, 4\]"):
        core.Latent(zc.tensor, "z", zc.generator, torch.zeros(2, 4))
    with pytest.raises(core.LatentError, match="truncation_cutoff must be empty"):
        core.Latent(zc.tensor, "z", zc.generator, zc.c, 0.5, 9)
    assert core.Latent(zc.tensor, "z", zc.generator, zc.c[:1]).c.shape == (1, 3)  # one label row for all


def test_synthesize_never_sees_an_empty_latent(G):
    lat = core.sample_latents(G, [0])
    with pytest.raises(core.LatentError, match="the latent is empty"):
        core.Latent(torch.zeros(0, G.w_dim), "w", lat.generator)
    with pytest.raises(core.LatentError, match="the latent is empty"):
        dataclasses.replace(lat, tensor=lat.tensor[:0])


# ------------------------------------------------------------------------------------------------
# Latent files


def _bad_latent_files(G, Gc):
    """(name, builder(path), expected message after '<path>: ') for every hostile latent file."""
    ref, refc = ref_dict(G), ref_dict(Gc)
    w = w_latent(G)
    zc = core.sample_latents(Gc, [0, 1], space="z", class_idx=0)
    hint = L.LATENT_HINT
    damaged = f"the file is damaged or was not written by StyleGAN Studio; {hint}"
    invalid = f"The file is damaged or was not written by StyleGAN Studio; {hint}"
    nan_c = zc.c.clone()
    nan_c[1, 2] = float("inf")
    return [
        ("psi-nan", lambda p: forge.write_latent_file(p, w, ref, truncation_psi="nan"),
         "latent metadata field 'truncation_psi' is invalid (ValueError: expected a number in -10..10 (1 = no "
         f"truncation), got 'nan'); {damaged}"),
        ("psi-huge", lambda p: forge.write_latent_file(p, w, ref, truncation_psi="1e308"),
         "latent metadata field 'truncation_psi' is invalid (ValueError: expected a number in -10..10 (1 = no "
         f"truncation), got '1e308'); {damaged}"),
        ("psi-inf", lambda p: forge.write_latent_file(p, w, ref, truncation_psi="-inf"),
         "latent metadata field 'truncation_psi' is invalid (ValueError: expected a number in -10..10 (1 = no "
         f"truncation), got '-inf'); {damaged}"),
        ("psi-text", lambda p: forge.write_latent_file(p, w, ref, truncation_psi="seven"),
         "latent metadata field 'truncation_psi' is invalid (ValueError: could not convert string to float: "
         f"'seven'); {damaged}"),
        ("cutoff-high", lambda p: forge.write_latent_file(p, w, ref, truncation_cutoff="9"),
         "latent metadata field 'truncation_cutoff' is invalid (ValueError: expected empty (every layer) or a whole "
         f"number in 0..8 (the generator's num_ws), got '9'); {damaged}"),
        ("cutoff-negative", lambda p: forge.write_latent_file(p, w, ref, truncation_cutoff="-1"),
         "latent metadata field 'truncation_cutoff' is invalid (ValueError: expected empty (every layer) or a whole "
         f"number in 0..8 (the generator's num_ws), got '-1'); {damaged}"),
        ("cutoff-huge", lambda p: forge.write_latent_file(p, w, ref, truncation_cutoff="9" * 5000),
         "latent metadata field 'truncation_cutoff' is invalid (ValueError: expected empty (every layer) or a whole "
         f"number in 0..8 (the generator's num_ws), got {'9' * 40!r}); {damaged}"),
        ("w_dim-string", lambda p: forge.write_latent_file(p, w, dict(ref, w_dim="16")),
         "latent metadata field 'generator' is invalid (TypeError: generator field 'w_dim' must be a whole number "
         f"in 1..8192, got '16'); {damaged}"),
        ("num_ws-zero", lambda p: forge.write_latent_file(p, w, dict(ref, num_ws=0)),
         "latent metadata field 'generator' is invalid (ValueError: generator field 'num_ws' must be a whole number "
         f"in 1..130, got 0); {damaged}"),
        ("num_ws-huge", lambda p: forge.write_latent_file(p, w, dict(ref, num_ws=10 ** 30), truncation_cutoff="99"),
         "latent metadata field 'generator' is invalid (ValueError: generator field 'num_ws' must be a whole number "
         f"in 1..130, got {10 ** 30}); {damaged}"),
        ("c_dim-huge", lambda p: forge.write_latent_file(p, w, dict(ref, c_dim=10 ** 30)),
         "latent metadata field 'generator' is invalid (ValueError: generator field 'c_dim' must be a whole number "
         f"in 0..65536, got {10 ** 30}); {damaged}"),
        ("arch-unknown", lambda p: forge.write_latent_file(p, w, dict(ref, arch="abc")),
         "latent metadata field 'generator' is invalid (ValueError: generator field 'arch' must be one of "
         f"('stylegan2', 'stylegan3'), got 'abc'); {damaged}"),
        ("generator-unknown-field", lambda p: forge.write_latent_file(p, w, dict(ref, evil=1)),
         "latent metadata field 'generator' is invalid (TypeError: expected the fields ['arch', 'c_dim', "
         "'fingerprint', 'name', 'num_ws', 's_dim', 'w_dim', 'z_dim']; unknown: ['evil']); " + damaged),
        ("generator-missing-field", lambda p: forge.write_latent_file(p, w, {k: v for k, v in ref.items()
                                                                             if k != "z_dim"}),
         "latent metadata field 'generator' is invalid (TypeError: expected the fields ['arch', 'c_dim', "
         "'fingerprint', 'name', 'num_ws', 's_dim', 'w_dim', 'z_dim']; missing: ['z_dim']); " + damaged),
        ("generator-list", lambda p: forge.write_latent_file(p, w, [1, 2]),
         f"latent metadata field 'generator' is invalid (ValueError: expected a JSON object, got list); {damaged}"),
        ("generator-nested", lambda p: forge.write_latent_file(p, w, forge.nested_json(100_000)),
         None),  # nested too deeply, message checked below
        ("generator-malformed", lambda p: forge.write_latent_file(p, w, '{"name": '),
         "latent metadata field 'generator' is invalid (JSONDecodeError: Expecting value: line 1 column 10 (char 9)); "
         + damaged),
        ("space-unknown", lambda p: forge.write_latent_file(p, w, ref, space="q"),
         "latent metadata field 'space' is invalid (ValueError: expected one of ('z', 'w', 'w+', 's', 'fs'), got 'q'); "
         + damaged),
        ("generator-missing", lambda p: forge.write_latent_file(p, w, ref, generator=None),
         "latent metadata has no 'generator' field; the file is damaged or was not written by StyleGAN Studio; "
         + hint),
        ("empty", lambda p: forge.write_latent_file(p, w[:0], ref),
         "the latent file holds an invalid latent: the latent is empty (a batch of 0); sample, load or invert at "
         f"least one latent. {invalid}"),
        ("nan", lambda p: forge.write_latent_file(p, torch.full_like(w, float("nan")), ref),
         "the latent file holds an invalid latent: the latent contains NaN or infinite values; re-create it (an "
         f"optimisation that diverged produces these). {invalid}"),
        ("float64-overflow", lambda p: forge.write_latent_file(p, torch.full(w.shape, 1e300, dtype=torch.float64),
                                                               ref),
         "the latent file holds an invalid latent: the latent contains NaN or infinite values; re-create it (an "
         f"optimisation that diverged produces these). {invalid}"),
        ("int-dtype", lambda p: forge.write_latent_file(p, w.long(), ref),
         f"latent file tensor 'latent' has dtype torch.int64; latent files hold floating-point tensors (float32); "
         f"{hint}"),
        ("wrong-shape", lambda p: forge.write_latent_file(p, w, ref, space="w+"),
         "the latent file holds an invalid latent: a w+ latent for tiny-stylegan2 must have shape [N, 8, 16], got "
         f"[2, 16]. {invalid}"),
        ("too-many", lambda p: forge.write_latent_file(p, torch.zeros(10_001, 1), dict(ref, w_dim=1)),
         "the latent file holds an invalid latent: a latent batch holds at most 10,000 latents (a cap that keeps "
         f"one input from filling memory), got 10,001; split the work into smaller batches. {invalid}"),
        ("c-inf", lambda p: forge.write_latent_file(p, zc.tensor, refc, space="z", c=nan_c),
         "the latent file holds an invalid latent: the class labels c contain NaN or infinite values; labels are "
         f"one-hot rows (choose the class again). {invalid}"),
        ("c-int", lambda p: forge.write_latent_file(p, zc.tensor, refc, space="z", c=zc.c.long()),
         f"latent file tensor 'c' has dtype torch.int64; latent files hold floating-point tensors (float32); {hint}"),
        ("c-shape", lambda p: forge.write_latent_file(p, zc.tensor, refc, space="z", c=zc.c[:, :2]),
         "the latent file holds an invalid latent: class labels c for tiny-stylegan2 must have shape [2 or 1, 3], "
         f"got [2, 2]. {invalid}"),
    ]


def test_hostile_latent_files_are_refused_naming_file_and_field(G, Gc, tmp_path):
    cases = _bad_latent_files(G, Gc)
    assert len({name for name, _, _ in cases}) == len(cases)
    for name, build, message in cases:
        path = build(tmp_path / f"{name}.safetensors")
        with pytest.raises(L.LatentFileError) as e:
            core.load_latent(path)
        assert isinstance(e.value, core.LatentError) and isinstance(e.value, core.CheckpointError), name
        if message is None:
            assert str(e.value).startswith(f"{path}: latent metadata field 'generator' is invalid (nested too deeply)"), \
                str(e.value)
        else:
            assert str(e.value) == f"{path}: {message}", name


def test_tiny_latent_file_declaring_a_huge_batch_is_refused_without_allocating(G, tmp_path):
    path = forge.write_huge_batch_latent(tmp_path / "huge.safetensors", ref_dict(G), batch=10 ** 8)
    assert path.stat().st_size < 2000
    rss = psutil.Process().memory_info().rss
    with pytest.raises(L.LatentFileError) as e:
        core.load_latent(path)
    grown = psutil.Process().memory_info().rss - rss
    assert str(e.value).startswith(f"{path}: not a readable safetensors latent, the file is truncated or corrupt")
    assert str(e.value).endswith(L.LATENT_HINT)
    assert grown < 50 * 2 ** 20, grown  # the header declares 6.4 GB


def test_good_latent_files_still_load(G, Gc, tmp_path):
    lat = core.sample_latents(G, [0, 1], truncation_psi=0.5, truncation_cutoff=3)
    back = core.load_latent(core.save_latent(lat, tmp_path / "a.safetensors"))
    assert torch.equal(back.tensor, lat.tensor) and back.space == "w+"
    z = core.sample_latents(Gc, [0, 1], space="z", class_idx=2, truncation_psi=0.7, truncation_cutoff=4)
    back = core.load_latent(core.save_latent(z, tmp_path / "z.safetensors"))
    assert (back.truncation_psi, back.truncation_cutoff) == (0.7, 4) and torch.equal(back.c, z.c)
    half = forge.write_latent_file(tmp_path / "half.safetensors", lat.tensor.half(), ref_dict(G), space="w+")
    assert core.load_latent(half).tensor.dtype == torch.float32


# ------------------------------------------------------------------------------------------------
# Weight-delta files


def _bad_delta_files(G):
    ref = ref_dict(G)
    name, weight = next((k, v) for k, v in G.state_dict().items() if k.endswith("weight"))
    ok = {name: torch.zeros_like(weight)}
    hint = D.DELTA_HINT
    damaged = f"the file is damaged or was not written by StyleGAN Studio; {hint}"
    nan = {name: torch.full_like(weight, float("nan"))}
    return name, [
        ("nan", lambda p: forge.write_delta_file(p, nan, ref),
         f"weight delta tensor {name!r} holds NaN or infinite values; applying it would break the generator: make "
         f"the delta again ({hint})"),
        ("int", lambda p: forge.write_delta_file(p, {name: weight.long()}, ref),
         f"weight delta tensor {name!r} has dtype torch.int64; deltas are float32, float16 or bfloat16; {hint}"),
        ("no-tensors", lambda p: forge.write_delta_file(p, {}, ref),
         f"the weight delta holds no tensors, so there is nothing to apply; {hint}"),
        ("kind-path", lambda p: forge.write_delta_file(p, ok, ref, kind="../../x"),
         "weight delta metadata field 'kind' is invalid (ValueError: expected a short name of letters, digits, '_' "
         f"or '-' (like 'pti'), got '../../x'); {damaged}"),
        ("base-w_dim-string", lambda p: forge.write_delta_file(p, ok, dict(ref, w_dim="16")),
         "weight delta metadata field 'base' is invalid (TypeError: generator field 'w_dim' must be a whole number "
         f"in 1..8192, got '16'); {damaged}"),
        ("metadata-list", lambda p: forge.write_delta_file(p, ok, ref, metadata=[1]),
         f"weight delta metadata field 'metadata' is invalid (ValueError: expected a JSON object, got list); "
         f"{damaged}"),
        ("metadata-nested", lambda p: forge.write_delta_file(p, ok, ref, metadata=forge.nested_json(100_000)),
         None),
    ]


def test_hostile_delta_files_are_refused_naming_file_and_field(G, tmp_path):
    _, cases = _bad_delta_files(G)
    for name, build, message in cases:
        path = build(tmp_path / f"{name}.safetensors")
        with pytest.raises(core.CheckpointError) as e:
            D.load_weight_delta(path)
        if message is None:
            assert str(e.value).startswith(f"{path}: weight delta metadata field 'metadata' is invalid "
                                           f"(nested too deeply)"), str(e.value)
        else:
            assert str(e.value) == f"{path}: {message}", name


def test_delta_shapes_names_and_strength_are_checked_against_the_generator(G, tmp_path):
    name, _ = _bad_delta_files(G)
    ref = ref_dict(G)
    shape = list(G.state_dict()[name].shape)
    wrong = forge.write_delta_file(tmp_path / "shape.safetensors", {name: torch.zeros(3, 5)}, ref)
    with pytest.raises(core.CheckpointError) as e:
        D.apply_weight_delta(G, D.load_weight_delta(wrong))
    assert str(e.value) == (f"this pti delta was made for tiny-stylegan2 and does not fit tiny-stylegan2: tensor "
                            f"{name!r} is [3, 5] in the delta but {shape} in the generator; load the generator it "
                            f"was made for")
    foreign = forge.write_delta_file(tmp_path / "name.safetensors", {"evil.weight": torch.zeros(2)}, ref)
    with pytest.raises(core.CheckpointError, match="it has no tensor 'evil.weight'"):
        D.apply_weight_delta(G, D.load_weight_delta(foreign))
    good = forge.write_delta_file(tmp_path / "good.safetensors", {name: torch.ones(shape)}, ref,
                                  metadata={"kind": "evil", "scale": 99, "method": "pti"})
    delta = D.load_weight_delta(good)
    for strength in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"the delta's scale \(strength\) must be a finite number, got"):
            D.apply_weight_delta(G, delta, scale=strength)
    G2 = D.apply_weight_delta(G, delta, scale=0.5)  # metadata keys 'kind' / 'scale' do not collide
    assert G2.info.extra["deltas"][-1] == {"kind": "pti", "scale": 0.5, "method": "pti"}
    torch.testing.assert_close(G2.state_dict()[name], G.state_dict()[name] + 0.5)


# ------------------------------------------------------------------------------------------------
# Inversion inputs: refused before anything is optimised


def _invert(G, nets, target, **kwargs):
    steps = []
    try:
        return I.invert_image(G, target, method="image2stylegan", num_steps=2, perceptual=nets,
                              callback=steps.append, **kwargs)
    finally:
        assert not steps, "the error came after optimisation started"


def test_empty_and_non_finite_targets(G, nets):
    with pytest.raises(ValueError) as e:
        _invert(G, nets, torch.zeros(0, 3, 32, 32))
    assert str(e.value) == "the target batch is empty (0 images): nothing to invert; connect at least one image"
    bad = torch.zeros(1, 3, 32, 32)
    bad[0, 1, 2, 3], bad[0, 2, 5, 5] = float("inf"), float("nan")
    with pytest.raises(ValueError) as e:
        _invert(G, nets, bad)
    assert str(e.value) == ("the target image contains NaN or infinite values (2 of 3,072); fix the node that made "
                            "it (images are in [-1, 1], a ComfyUI IMAGE in [0, 1])")
    with pytest.raises(ValueError, match=r"the target image has no pixels \(shape \[1, 3, 0, 32\]\)"):
        _invert(G, nets, torch.zeros(1, 3, 0, 32))


def test_target_range(G, nets):
    with pytest.raises(ValueError) as e:
        _invert(G, nets, torch.full((1, 3, 32, 32), 255.0))
    assert str(e.value) == ("the target image has values from 255 to 255, but images are in [-1, 1] (a generator's "
                            "own output may overshoot up to ±10); an image in 0..255 must be scaled first "
                            "(x / 127.5 - 1)")
    # A generator's raw output overshoots [-1, 1]; inverting it is a normal use.
    I.prepare_target(torch.full((1, 3, 32, 32), -4.0), 32)


def test_mask_checks(G, nets):
    target = torch.zeros(2, 3, 64, 48)
    with pytest.raises(ValueError) as e:
        _invert(G, nets, target, mask=torch.ones(1, 64, 64))
    assert str(e.value) == ("the mask is 64x64 but the image is 48x64: their aspect ratios differ, so the mask "
                            "would be stretched over the wrong pixels; resize or crop the mask to 48x64 (a mask of "
                            "the same shape at another size, e.g. 96x128, is resized automatically)")
    same_shape = I.prepare_mask(torch.ones(1, 128, 96), 2, 32, image_size=(64, 48))
    assert same_shape.shape == (2, 1, 32, 32)
    assert I.prepare_mask(torch.ones(1, 65, 48), 2, 32, image_size=(64, 48)) is not None  # a pixel of rounding
    nan = torch.ones(1, 64, 48)
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError) as e:
        _invert(G, nets, target, mask=nan)
    assert str(e.value) == ("the mask contains NaN or infinite values (1 of 3,072); masks are in [0, 1] (1 = fit "
                            "this pixel): fix the node that made it")
    with pytest.raises(ValueError) as e:
        _invert(G, nets, target, mask=torch.full((1, 64, 48), 255.0))
    assert str(e.value) == ("the mask has values from 255 to 255, but masks are in [0, 1] (1 = fit this pixel); a "
                            "0..255 mask must be divided by 255 first")
    empty = torch.ones(2, 64, 48)
    empty[1] = 0
    with pytest.raises(ValueError) as e:
        _invert(G, nets, target, mask=empty)
    assert str(e.value) == ("the mask is empty for image 1: no pixel would be fitted. Mark the pixels to fit with 1 "
                            "(with Invert Image's 'ignore inside mask', leave some pixels at 0), or connect no mask "
                            "to fit the whole image")
    with pytest.raises(ValueError) as e:
        _invert(G, nets, target, mask=torch.ones(3, 64, 48))
    assert str(e.value) == ("mask must be one for all images or one per image: got 3 masks for 2 images; connect a "
                            "single mask or a batch of 2")


def test_learning_rate_must_be_finite(G, nets):
    for lr in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr > 0"):
            _invert(G, nets, torch.zeros(1, 3, 32, 32), lr=lr)


@pytest.fixture()
def invert_node(pack, nets, monkeypatch):
    mod = sys.modules[pack.__name__ + ".nodes.inversion"]
    monkeypatch.setattr(mod, "perceptual_nets", lambda method: {k: nets[k] for k in I.PERCEPTUAL_NEEDS[method]})
    started = []
    monkeypatch.setattr(mod, "run_optimisation", lambda *a, **k: started.append(1))
    return pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"](), started


def test_invert_node_refuses_bad_images_before_optimising(invert_node, G):
    node, started = invert_node
    with pytest.raises(ValueError) as e:
        node.invert(G, torch.zeros(0, 32, 32, 3), "image2stylegan", 2, 0)
    assert str(e.value) == ("the IMAGE is empty (shape [0, 32, 32, 3]: no images or no pixels); connect a node that "
                            "outputs at least one image")
    with pytest.raises(ValueError) as e:
        node.invert(G, torch.full((1, 32, 32, 3), 255.0), "image2stylegan", 2, 0)
    assert str(e.value) == ("the IMAGE has values from 255 to 255, but a ComfyUI IMAGE is in [0, 1] (up to 0.125 "
                            "outside is accepted, as resizing filters overshoot); an image in 0..255 must be divided "
                            "by 255 first, otherwise clamp it to [0, 1]")
    assert not started


def test_invert_node_accepts_filter_overshoot(pack, nets, monkeypatch, G):
    mod = sys.modules[pack.__name__ + ".nodes.inversion"]
    monkeypatch.setattr(mod, "perceptual_nets", lambda method: {k: nets[k] for k in I.PERCEPTUAL_NEEDS[method]})
    image = torch.rand(1, 32, 32, 3) * 1.2 - 0.1      # bicubic-style overshoot on both sides
    out = pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"]().invert(G, image, "image2stylegan", 1, 0)
    assert out["result"][0].batch_size == 1 and math.isfinite(float(out["result"][0].tensor.sum()))


def test_a_latent_cutoff_is_checked_against_the_generator_it_drives(G, tmp_path):
    """The cutoff bound a file passes is its own generator reference's num_ws; rendering with another generator
    checks it against that generator's."""
    ref = dict(ref_dict(G), num_ws=20)
    path = forge.write_latent_file(tmp_path / "cut.safetensors", torch.randn(2, G.z_dim), ref, space="z",
                                   truncation_cutoff="15")
    latent = core.load_latent(path)
    with pytest.raises(core.LatentError, match=r"truncates its first 15 layers, but tiny-stylegan2 has 8; save the "
                                               r"latent again with a cutoff in 0..8"):
        core.synthesize(G, latent)


@pytest.mark.parametrize("start,end", [(5, 2), (10, 20), (3, 3)])
def test_interpolation_layer_range_outside_the_generator_is_a_latent_error(G, start, end):
    a = core.sample_latents(G, [0], space="w+")
    with pytest.raises(core.LatentError, match=rf"layer range \[{start}, {end}\) must be a non-empty range within "
                                               rf"0..8 \(tiny-stylegan2 has 8 w\+ layers\)"):
        core.interpolate_latents(a, a, 4, layer_start=start, layer_end=end)
