"""Checkpoint loading: parity with the reference implementations, every supported format, damaged and
malicious files.

The reference outputs come from tiny random networks run through NVIDIA's / rosinality's own code when the
fixtures were made (see `forge.py`); here every checkpoint is forged in its real on-disk format without any
reference code, loaded with `core.load_generator`, and compared with those outputs.
"""

from __future__ import annotations

import builtins
import collections
import io
import json
import logging
import os
import pickle
import random
import subprocess
import sys

import pytest
import torch

import core
import forge
from core.loaders import sniff_format
from core.loaders.safe_pickle import check_embedded_source

NVIDIA = ["ada_skip", "ada_orig", "ada_resnet", "ada_cond", "sg3_stylegan2", "sg3_t", "sg3_r"]
TF = ["tf_skip", "tf_orig_lod"]
ALL = NVIDIA + TF + ["rosinality"]
TOL = 1e-4  # max |ours - reference|; the measured differences are 1e-8 .. 1e-5
SOURCE_FORMAT = {"nvidia": "nvidia-pkl", "nvidia-tf": "nvidia-tf-pkl", "rosinality": "rosinality-pt"}


_written: dict[tuple, bytes] = {}


def write_checkpoint(name: str, tmp_path, **kwargs):
    """Forge fixture `name` in its real format under `tmp_path` (bytes reused for repeated arguments)."""
    fx = forge.load_fixture(name)
    path = tmp_path / f"{name}.{'pt' if fx.kind == 'rosinality' else 'pkl'}"
    key = (name, tuple(sorted(kwargs.items())))
    if key not in _written:
        writer = {"nvidia": forge.write_nvidia_pickle, "nvidia-tf": forge.write_tf_pickle,
                  "rosinality": forge.write_rosinality_pt}[fx.kind]
        _written[key] = writer(fx, path, **kwargs).read_bytes()
    path.write_bytes(_written[key])
    return path


def parity(G: core.Generator, fx: forge.Fixture) -> dict[str, float]:
    """Max |ours - reference| of ws (mapping, psi 0.7) and images from the reference ws (batch 1 and 3, the
    two modulation code paths), and images straight from z (batch 3)."""
    diffs = {}
    with torch.no_grad():
        for n in (1, 3):
            z, c, ws, img = (fx.expected[f"{k}{n}"] for k in ("z", "c", "ws", "img"))
            c = c if G.c_dim else None
            ours_ws = G.mapping(z, c, truncation_psi=fx.truncation_psi)
            ours_img = G.synthesis(ws, noise_mode="const")
            # Relative to the image range where that is below 1 (StyleGAN3's tiny outputs are small).
            rel = 1 / min(1.0, float(img.abs().max()))
            diffs[f"ws{n}"] = float((ours_ws - ws).abs().max())
            diffs[f"img{n}"] = float((ours_img - img).abs().max()) * rel
        z, img = fx.expected["z3"], fx.expected["img3"]
        c = fx.expected["c3"] if G.c_dim else None
        diffs["z_to_img3"] = float((G(z, c, truncation_psi=fx.truncation_psi, noise_mode="const") - img).abs().max())
    return diffs


def assert_parity(G: core.Generator, fx: forge.Fixture) -> None:
    diffs = parity(G, fx)
    assert max(diffs.values()) <= TOL, diffs


def state_equal(a: core.Generator, b: core.Generator) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- Parity with the reference implementations -----------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_forged_checkpoint_matches_reference_outputs(name, tmp_path):
    fx = forge.load_fixture(name)
    path = write_checkpoint(name, tmp_path)
    G = core.load_generator(path)
    assert_parity(G, fx)
    assert G.info.source_format == SOURCE_FORMAT[fx.kind]
    assert G.info.name == path.stem and G.info.source == str(path)
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert G.c_dim == fx.expected["c1"].shape[1] and G.num_ws == fx.expected["ws1"].shape[1]


def test_every_fixture_is_tested():
    assert sorted(forge.fixture_names()) == sorted(ALL)


def test_reference_outputs_are_not_trivial():
    """Guards the fixtures themselves: batch 1 and 3 differ, images are not constant, truncation matters."""
    for name in ALL:
        e = forge.load_fixture(name).expected
        assert e["img3"].std() > 0.01 and not torch.allclose(e["img3"][0], e["img3"][1])
        assert (e["ws3"] - e["ws3_psi1"]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["ada_skip", "ada_cond", "sg3_r"])
def test_weights_and_architecture_read_exactly(name, tmp_path):
    fx = forge.load_fixture(name)
    G = core.load_generator(write_checkpoint(name, tmp_path))
    ours = G.state_dict()
    theirs = {k: v for k, v in fx.net.items() if not k.endswith("resample_filter")}
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    kwargs = fx.info["G_kwargs"]
    syn = kwargs.get("synthesis_kwargs", kwargs)
    assert (G.config.synthesis.channel_base, G.config.synthesis.channel_max) == (syn["channel_base"],
                                                                                   syn["channel_max"])
    assert G.config.mapping.num_layers == kwargs["mapping_kwargs"]["num_layers"]


@pytest.mark.slow
def test_configuration_details_per_variant(tmp_path):
    cfg = {name: core.load_generator(write_checkpoint(name, tmp_path)).config for name in NVIDIA + TF}
    assert cfg["ada_skip"].synthesis.num_fp16_res == 2 and cfg["ada_skip"].synthesis.conv_clamp == 256
    assert cfg["ada_orig"].synthesis.architecture == "orig" and cfg["ada_orig"].synthesis.conv_clamp is None
    assert cfg["ada_resnet"].synthesis.architecture == "resnet" and cfg["ada_resnet"].synthesis.conv_clamp == 2
    assert cfg["ada_cond"].c_dim == 5 and cfg["ada_cond"].mapping.embed_features == 16
    # stylegan3's StyleGAN2 has different defaults (and flat constructor kwargs) from stylegan2-ada-pytorch.
    # num_fp16_res=4 at 32 px puts blocks 8..32 in fp16 (NVIDIA never uses fp16 at 4 px): 3 blocks.
    s = cfg["sg3_stylegan2"]
    assert (s.synthesis.num_fp16_res, s.synthesis.conv_clamp, s.mapping.w_avg_beta) == (3, 256, 0.998)
    assert cfg["sg3_t"].arch == cfg["sg3_r"].arch == "stylegan3"
    assert cfg["sg3_r"].synthesis.conv_kernel == 1 and cfg["sg3_r"].synthesis.use_radial_filters
    assert cfg["sg3_t"].synthesis.conv_kernel == 3 and not cfg["sg3_t"].synthesis.use_radial_filters
    assert cfg["tf_orig_lod"].synthesis.architecture == "orig" and cfg["tf_skip"].mapping.num_layers == 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ada_skip", "sg3_t"])
@pytest.mark.parametrize("protocol, legacy_numpy", [(2, True), (3, True), (4, True), (4, False), (5, False)])
def test_pickle_protocols_and_numpy_names(name, protocol, legacy_numpy, tmp_path):
    """Old checkpoints use pickle protocol 3 and numpy 1.x global names; new ones protocol 4+ and numpy 2."""
    fx = forge.load_fixture(name)
    path = forge.write_nvidia_pickle(fx, tmp_path / "g.pkl", protocol=protocol, legacy_numpy=legacy_numpy)
    assert (b"numpy.core.multiarray" in path.read_bytes()) == legacy_numpy
    G = core.load_generator(path)
    G_ref = core.load_generator(forge.write_nvidia_pickle(fx, tmp_path / "ref.pkl"))
    assert state_equal(G, G_ref) and G.config == G_ref.config


@pytest.mark.parametrize("protocol, legacy_numpy", [(2, True), (4, True), (4, False)])
def test_tf_pickle_protocols(protocol, legacy_numpy, tmp_path):
    fx = forge.load_fixture("tf_skip")
    G = core.load_generator(forge.write_tf_pickle(fx, tmp_path / "g.pkl", protocol=protocol,
                                                  legacy_numpy=legacy_numpy))
    assert_parity(G, fx)


# --- G vs G_ema ---------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["ada_skip", "sg3_t"])
def test_network_selects_G_or_G_ema(name, tmp_path):
    fx = forge.load_fixture(name)
    path = write_checkpoint(name, tmp_path)
    G_ema = core.load_generator(path)
    G = core.load_generator(path, network="G")
    expected_G = {k: v for k, v in forge.nvidia_tensors(fx, "G").items() if not k.endswith("resample_filter")}
    assert all(torch.equal(G.state_dict()[k], v) for k, v in expected_G.items())
    assert not state_equal(G, G_ema)
    ws = fx.expected["ws3"]
    assert (G.synthesis(ws, noise_mode="const") - fx.expected["img3"]).abs().max() > 1e-2
    assert all(torch.equal(G_ema.state_dict()[k], v) for k, v in fx.net.items() if k in G_ema.state_dict())


def test_tf_network_selects_G_or_Gs(tmp_path):
    fx = forge.load_fixture("tf_skip")
    path = write_checkpoint("tf_skip", tmp_path)
    G = core.load_generator(path, network="G")
    assert (G.synthesis(fx.expected["ws3"], noise_mode="const") - fx.expected["img3"]).abs().max() > 1e-2
    assert torch.equal(G.mapping.w_avg, forge.tf_tensors(fx, "G")["dlatent_avg"])
    assert torch.equal(core.load_generator(path, network="G_ema").mapping.w_avg, fx.net["dlatent_avg"])


def test_missing_G_ema_falls_back_to_G_with_a_warning(tmp_path, caplog):
    fx = forge.load_fixture("ada_skip")
    path = forge.write_nvidia_pickle(fx, tmp_path / "g.pkl", keys=("G", "D"))
    with caplog.at_level(logging.WARNING, logger="stylegan_studio"):
        G = core.load_generator(path)
    assert "has no G_ema; using G" in caplog.text
    assert torch.equal(G.mapping.w_avg, forge.nvidia_tensors(fx, "G")["mapping.w_avg"])


def test_unknown_network_name_is_refused(tmp_path):
    path = write_checkpoint("ada_skip", tmp_path)
    with pytest.raises(ValueError, match="'G_ema' or 'G'"):
        core.load_generator(path, network="D")


@pytest.mark.parametrize("name", ["ada_skip", "sg3_r"])
def test_discriminator_only_pickle_is_refused(name, tmp_path):
    path = forge.write_nvidia_pickle(forge.load_fixture(name), tmp_path / "d.pkl", keys=("D", "augment_pipe"))
    with pytest.raises(core.CheckpointError, match="only a discriminator") as e:
        core.load_generator(path)
    assert str(path) in str(e.value)


def test_tf_discriminator_only_pickle_is_refused(tmp_path):
    path = forge.write_tf_pickle(forge.load_fixture("tf_skip"), tmp_path / "d.pkl", order=["D"])
    with pytest.raises(core.CheckpointError, match="only a discriminator"):
        core.load_generator(path)


# --- Damaged, foreign and missing files ----------------------------------------------------------------

def _cut(path, fraction):
    data = path.read_bytes()
    path.write_bytes(data[:max(1, int(len(data) * fraction))] if fraction < 1 else data[:-1])
    return path


@pytest.mark.parametrize("fraction", [0.001, 0.3, 0.5, 0.9, 1])
def test_truncated_pickle(fraction, tmp_path):
    path = _cut(write_checkpoint("sg3_r", tmp_path), fraction)
    with pytest.raises(core.CheckpointError, match="truncated or corrupt|not a StyleGAN checkpoint") as e:
        core.load_generator(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("fraction", [0.3, 0.9, 1])
def test_truncated_tf_pickle(fraction, tmp_path):
    path = _cut(write_checkpoint("tf_skip", tmp_path), fraction)
    with pytest.raises(core.CheckpointError, match="truncated or corrupt") as e:
        core.load_generator(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("legacy_format", [False, True])
@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.99])
def test_truncated_torch_file(legacy_format, fraction, tmp_path):
    path = _cut(write_checkpoint("rosinality", tmp_path, legacy_format=legacy_format), fraction)
    with pytest.raises(core.CheckpointError, match="truncated or corrupt") as e:
        core.load_generator(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("fraction", [0.0005, 0.01, 0.5, 1])
def test_truncated_safetensors(fraction, tmp_path):
    path = core.save_generator(core.load_generator(write_checkpoint("ada_skip", tmp_path)), tmp_path / "g.safetensors")
    _cut(path, fraction)
    with pytest.raises(core.CheckpointError) as e:
        core.load_generator(path)
    assert str(path) in str(e.value)


def _random_bytes(path):
    data = random.Random(0).randbytes(4096)
    assert data[:1] != b"\x80" and data[:2] != b"PK"
    path.write_bytes(data)


@pytest.mark.parametrize("make, match", [
    (_random_bytes, "not a StyleGAN checkpoint"),
    (lambda p: p.write_bytes(b""), "not a StyleGAN checkpoint"),
    (lambda p: p.write_text(json.dumps({"G_ema": [1, 2, 3]})), "not a StyleGAN checkpoint"),
    (lambda p: p.write_text("StyleGAN weights are in another castle\n"), "not a StyleGAN checkpoint"),
    (lambda p: p.write_bytes(b"\x80\x04" + random.Random(1).randbytes(512)), "truncated or corrupt|refusing"),
    (lambda p: p.write_bytes(pickle.dumps([1, 2, 3])), "not a StyleGAN network pickle"),
    (lambda p: p.write_bytes(pickle.dumps({"G_ema": {"weight": 1}, "D": None})), "no generator found"),
    (lambda p: torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, p), "not a rosinality"),
    (lambda p: torch.save({"d": {"convs.0.0.weight": torch.zeros(2)}}, p), "only a discriminator"),
])
def test_foreign_and_damaged_files_are_named_in_the_error(make, match, tmp_path):
    path = tmp_path / "model.pkl"
    make(path)
    with pytest.raises(core.CheckpointError, match=match) as e:
        core.load_generator(path)
    assert str(path) in str(e.value)


def test_safetensors_without_our_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"mapping.fc0.weight": torch.zeros(16, 16)}, str(path), metadata={"format": "pt"})
    with pytest.raises(core.CheckpointError, match="without StyleGAN Studio metadata") as e:
        core.load_generator(path)
    assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        core.load_generator(tmp_path / "nope.pkl")
    with pytest.raises(FileNotFoundError):
        core.load_generator(tmp_path)  # a directory is not a checkpoint either


@pytest.mark.parametrize("seed", range(12))
def test_bit_rot_never_escapes_as_an_unexpected_exception(seed, tmp_path):
    """Random byte damage either still loads (damage inside tensor data) or raises CheckpointError."""
    rng = random.Random(seed)
    name = ["ada_skip", "sg3_r", "tf_skip", "rosinality"][seed % 4]
    path = write_checkpoint(name, tmp_path, protocol=[2, 3, 4][seed % 3]) if name != "rosinality" else \
        write_checkpoint(name, tmp_path, legacy_format=bool(seed % 2))
    data = bytearray(path.read_bytes())
    for _ in range(rng.choice([1, 4, 16])):
        data[rng.randrange(len(data))] = rng.randrange(256)
    path.write_bytes(bytes(data))
    try:
        core.load_generator(path)
    except core.CheckpointError as e:
        assert str(path) in str(e)


@pytest.mark.parametrize("name", ["ada_skip", "sg3_t", "tf_skip", "rosinality"])
def test_nan_tensor_is_refused(name, tmp_path):
    fx = forge.load_fixture(name)
    key = {"ada_skip": "synthesis.b8.conv0.weight", "sg3_t": "synthesis.L3_36_16.affine.bias",
           "tf_skip": "synthesis/8x8/Conv1/weight", "rosinality": "convs.1.conv.weight"}[name]
    assert key in fx.net, sorted(fx.net)
    bad = dict(fx.net)
    bad[key] = bad[key].clone()
    bad[key].view(-1)[3] = float("nan")
    if fx.kind == "nvidia":
        path = forge.write_nvidia_pickle(fx, tmp_path / "g.pkl", g_ema=bad)
    elif fx.kind == "nvidia-tf":
        path = forge.write_tf_pickle(fx, tmp_path / "g.pkl", gs=bad)
    else:
        path = forge.write_rosinality_pt(fx, tmp_path / "g.pt", g_ema=bad)
    with pytest.raises(core.CheckpointError, match="NaN") as e:
        core.load_generator(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("name, key, problem", [
    ("ada_skip", "synthesis.b16.conv1.affine.bias", "missing"),
    ("ada_skip", "synthesis.b8.conv0.weight", "resized"),
    ("sg3_r", "synthesis.L5_52_32.down_filter", "missing"),
    ("sg3_t", "synthesis.input.freqs", "resized"),
    ("rosinality", "convs.2.conv.modulation.bias", "missing"),
    ("rosinality", "to_rgbs.1.bias", "resized"),
])
def test_missing_or_misshapen_tensor_is_listed(name, key, problem, tmp_path):
    fx = forge.load_fixture(name)
    assert key in fx.net, sorted(fx.net)
    bad = dict(fx.net)
    if problem == "missing":
        del bad[key]
    else:
        bad[key] = torch.zeros([s + 1 for s in bad[key].shape])
    if fx.kind == "nvidia":
        path = forge.write_nvidia_pickle(fx, tmp_path / "g.pkl", g_ema=bad)
    else:
        path = forge.write_rosinality_pt(fx, tmp_path / "g.pt", g_ema=bad)
    match = "missing 1 tensor" if problem == "missing" else "shape mismatch"
    with pytest.raises(core.CheckpointError, match=match) as e:
        core.load_generator(path)
    message = str(e.value)
    assert str(path) in message
    ours = key if fx.kind == "nvidia" else {"convs.2.conv.modulation.bias": "synthesis.b16.conv0.affine.bias",
                                             "to_rgbs.1.bias": "synthesis.b16.torgb.bias"}[key]
    assert ours in message


def test_missing_tf_variable_is_listed(tmp_path):
    fx = forge.load_fixture("tf_skip")
    bad = {k: v for k, v in fx.net.items() if k != "synthesis/16x16/Conv1/mod_weight"}
    path = forge.write_tf_pickle(fx, tmp_path / "g.pkl", gs=bad)
    with pytest.raises(core.CheckpointError, match="synthesis/16x16/Conv1/mod_weight"):
        core.load_generator(path)


def test_unsupported_constructor_setting_is_refused(tmp_path):
    fx = forge.load_fixture("ada_skip")
    objects = forge.nvidia_objects(fx)
    objects["G_ema"].meta["state"]["_init_kwargs"]["synthesis_kwargs"]["kernel_size"] = 5
    path = tmp_path / "g.pkl"
    path.write_bytes(forge.dumps(objects))
    with pytest.raises(core.CheckpointError, match="kernel_size 5"):
        core.load_generator(path)


# --- Malicious pickles: refused, and nothing runs --------------------------------------------------------

class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _touch_code(sentinel) -> str:
    return f"open({str(sentinel)!r}, 'w').write('pwned')"


REDUCE_PAYLOADS = {
    "os.system": lambda sentinel: _Reduce(os.system, f"echo pwned > '{sentinel}'"),
    "builtins.exec": lambda sentinel: _Reduce(builtins.exec, _touch_code(sentinel)),
    "builtins.eval": lambda sentinel: _Reduce(builtins.eval, _touch_code(sentinel)),
    "subprocess.Popen": lambda sentinel: _Reduce(subprocess.Popen, [sys.executable, "-c", _touch_code(sentinel)]),
}


def _evil_sources(sentinel) -> dict[str, str]:
    touch = _touch_code(sentinel)
    return {
        "top-level call": f"import torch\n{touch}\nclass Generator(torch.nn.Module):\n    pass\n",
        "default argument": f"import torch\ndef helper(x={touch}):\n    return x\n"
                            f"class Generator(torch.nn.Module):\n    pass\n",
        "class body": f"import torch\nclass Generator(torch.nn.Module):\n    marker = {touch}\n",
        "import os": f"import os\nimport torch\nclass Generator(torch.nn.Module):\n    pass\n"
                     f"os.system('touch {sentinel}')\n",
        "decorator call": f"import torch\ndef deco(x):\n    return lambda f: f\n"
                          f"@deco({touch})\nclass Generator(torch.nn.Module):\n    pass\n",
        "method default": f"import torch\nclass Generator(torch.nn.Module):\n"
                          f"    def forward(self, x=[{touch}]):\n        return x\n",
        "class keyword": f"import torch\nclass Generator(torch.nn.Module,\n"
                         f"                metaclass=type({touch} and 'M', (type,), {{}})):\n    pass\n",
    }


EVIL_SOURCES = list(_evil_sources("x"))


@pytest.mark.parametrize("where", ["top level", "inside a genuine checkpoint"])
@pytest.mark.parametrize("name", list(REDUCE_PAYLOADS))
def test_reduce_payload_is_refused_and_nothing_runs(name, where, tmp_path):
    sentinel = tmp_path / "pwned"
    evil = REDUCE_PAYLOADS[name](sentinel)
    if where == "top level":
        data = pickle.dumps({"G_ema": evil})
    else:  # hidden in the dataset options that precede the networks in a real snapshot
        objects = forge.nvidia_objects(forge.load_fixture("ada_skip"))
        objects["training_set_kwargs"]["path"] = evil
        data = forge.dumps(objects)
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(core.UnsafeCheckpointError, match="nothing from the file was executed") as e:
        core.load_generator(path)
    module = "posix" if name == "os.system" else name.split(".")[0]
    assert f"`{module}." in str(e.value) and str(path) in str(e.value)
    assert not sentinel.exists()


@pytest.mark.parametrize("name", list(REDUCE_PAYLOADS))
def test_reduce_payloads_are_live(name, tmp_path):
    """Control: a plain unpickler really would run each payload (so the test above proves something)."""
    sentinel = tmp_path / "pwned"
    obj = pickle.loads(pickle.dumps(REDUCE_PAYLOADS[name](sentinel)))
    if isinstance(obj, subprocess.Popen):
        obj.wait()
    assert sentinel.exists()


@pytest.mark.parametrize("case", EVIL_SOURCES)
def test_malicious_embedded_source_is_refused_and_nothing_runs(case, tmp_path):
    sentinel = tmp_path / "pwned"
    source = _evil_sources(sentinel)[case]
    objects = forge.nvidia_objects(forge.load_fixture("ada_skip"))
    objects["G_ema"].meta["module_src"] = source
    path = tmp_path / "evil.pkl"
    path.write_bytes(forge.dumps(objects))
    with pytest.raises(core.UnsafeCheckpointError, match="embedded in this pickle would run") as e:
        core.load_generator(path)
    assert "Nothing from the file was executed" in str(e.value)
    assert not sentinel.exists()


@pytest.mark.parametrize("case", EVIL_SOURCES)
def test_malicious_embedded_sources_are_live(case, tmp_path):
    """Control: importing each source, as NVIDIA's loader does, would create the sentinel."""
    import importlib.util
    sentinel = tmp_path / "pwned"
    module_path = tmp_path / "evil_module.py"
    module_path.write_text(_evil_sources(sentinel)[case])
    spec = importlib.util.spec_from_file_location("evil_module", module_path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert sentinel.exists()


def test_placeholder_source_passes_the_source_check():
    check_embedded_source(forge.placeholder_source("training.networks", ["Generator", "MappingNetwork"]),
                          "Generator")


def test_forging_leaves_no_fake_modules_behind(tmp_path):
    before = {name: sys.modules.get(name) for name in ("torch_utils", "dnnlib", "numpy.core.multiarray")}
    forge.write_nvidia_pickle(forge.load_fixture("sg3_t"), tmp_path / "g.pkl", legacy_numpy=True)
    forge.write_tf_pickle(forge.load_fixture("tf_skip"), tmp_path / "t.pkl")
    assert {name: sys.modules.get(name) for name in before} == before
    assert "torch_utils.persistence" not in sys.modules and "dnnlib.tflib.network" not in sys.modules


def test_source_that_does_not_define_the_class_is_refused(tmp_path):
    objects = forge.nvidia_objects(forge.load_fixture("ada_skip"))
    objects["G_ema"].meta["module_src"] = "import torch\nclass Discriminator(torch.nn.Module):\n    pass\n"
    path = tmp_path / "evil.pkl"
    path.write_bytes(forge.dumps(objects))
    with pytest.raises(core.UnsafeCheckpointError, match="claims an object of class 'Generator'"):
        core.load_generator(path)


@pytest.mark.parametrize("obj, name", [
    (collections.Counter({"a": 1}), "collections.Counter"),
    (_Reduce(builtins.getattr, collections.OrderedDict, "fromkeys"), "builtins.getattr"),
    (_Reduce(io.open, "/etc/hostname"), "io.open"),
    (_Reduce(torch.load, "/dev/null"), "torch.serialization.load"),
])
def test_unknown_global_is_refused(obj, name, tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": obj}))
    with pytest.raises(core.UnsafeCheckpointError, match=name.replace(".", r"\.")):
        core.load_generator(path)


def test_persistent_ids_are_refused(tmp_path):
    class PidPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage-0" if isinstance(obj, str) and obj == "external" else None

    buf = io.BytesIO()
    PidPickler(buf, protocol=4).dump({"G_ema": "external"})
    path = tmp_path / "evil.pkl"
    path.write_bytes(buf.getvalue())
    with pytest.raises(core.UnsafeCheckpointError, match="persistent ids"):
        core.load_generator(path)


@pytest.mark.parametrize("as_parameter", [False, True])
def test_tensors_with_backward_hooks_are_refused(as_parameter, tmp_path):
    t = torch.zeros(4)
    fn, args = t.__reduce_ex__(2)[:2]
    hooks = collections.OrderedDict([(0, torch.Size)])
    if as_parameter:
        evil = _Reduce(torch._utils._rebuild_parameter, t, False, hooks)
    else:
        evil = _Reduce(fn, *args[:5], hooks, *args[6:])
    objects = forge.nvidia_objects(forge.load_fixture("ada_skip"))
    objects["G_ema"].meta["state"]["_buffers"] = {"sneaky": evil}
    path = tmp_path / "evil.pkl"
    path.write_bytes(forge.dumps(objects))
    with pytest.raises(core.UnsafeCheckpointError, match="autograd hooks"):
        core.load_generator(path)


def test_payload_inside_a_tensor_storage_record_is_refused(tmp_path):
    """`torch.storage._load_from_bytes` holds a torch.save payload; it must not reach a full unpickler."""
    sentinel = tmp_path / "pwned"
    inner = io.BytesIO()
    torch.save(_Reduce(builtins.exec, _touch_code(sentinel)), inner, _use_new_zipfile_serialization=False)
    evil = _Reduce(torch.storage._load_from_bytes, inner.getvalue())
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": evil}))
    with pytest.raises(core.UnsafeCheckpointError, match="GLOBAL .*exec") as e:
        core.load_generator(path)
    assert str(path) in str(e.value)
    assert not sentinel.exists()


@pytest.mark.parametrize("legacy_format", [False, True])
def test_malicious_torch_file_is_refused(legacy_format, tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    state = dict(forge.load_fixture("rosinality").net)
    torch.save({"g_ema": state, "args": _Reduce(builtins.exec, _touch_code(sentinel))}, path,
               _use_new_zipfile_serialization=not legacy_format)
    with pytest.raises(core.UnsafeCheckpointError, match="GLOBAL .*exec") as e:
        core.load_generator(path)
    assert str(path) in str(e.value)
    assert not sentinel.exists()


# --- Saving as .safetensors and converting ----------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_safetensors_round_trip_is_exact(name, tmp_path):
    G = core.load_generator(write_checkpoint(name, tmp_path))
    path = core.save_generator(G, tmp_path / "g.safetensors")
    assert not list(tmp_path.glob("*.partial"))
    G2 = core.load_generator(path)
    assert G2.config == G.config and state_equal(G, G2)
    assert G2.info.source_format == G.info.source_format and G2.info.source == G.info.source
    fx = forge.load_fixture(name)
    z, c = fx.expected["z3"], fx.expected["c3"] if G.c_dim else None
    assert torch.equal(G(z, c, truncation_psi=0.7, noise_mode="const"),
                       G2(z, c, truncation_psi=0.7, noise_mode="const"))


@pytest.mark.parametrize("name, writer_kwargs", [
    ("ada_cond", {}), ("sg3_r", {}), ("tf_orig_lod", {}), ("rosinality", {}),
    ("rosinality", {"layout": "psp"}),
])
def test_convert_checkpoint_from_each_format(name, writer_kwargs, tmp_path):
    fx = forge.load_fixture(name)
    src = write_checkpoint(name, tmp_path, **writer_kwargs)
    dst = core.convert_checkpoint(src, tmp_path / "converted.safetensors")
    assert sniff_format(dst) == "safetensors"
    G, direct = core.load_generator(dst), core.load_generator(src)
    assert G.config == direct.config and state_equal(G, direct)
    assert (G.synthesis(fx.expected["ws3"], noise_mode="const") - fx.expected["img3"]).abs().max() <= TOL


def test_convert_checkpoint_of_training_G(tmp_path):
    fx = forge.load_fixture("sg3_stylegan2")
    dst = core.convert_checkpoint(write_checkpoint("sg3_stylegan2", tmp_path), tmp_path / "G.safetensors",
                                  network="G")
    assert torch.equal(core.load_generator(dst).mapping.w_avg, forge.nvidia_tensors(fx, "G")["mapping.w_avg"])


@pytest.mark.parametrize("name, kind", [("ada_skip", "pickle"), ("tf_skip", "pickle"), ("rosinality", "torch-zip")])
def test_sniff_format(name, kind, tmp_path):
    assert sniff_format(write_checkpoint(name, tmp_path)) == kind


# --- rosinality / pSp variants ------------------------------------------------------------------------

def _plain_rosinality(tmp_path) -> core.Generator:
    """The rosinality fixture in its plain layout (g_ema, latent_avg, args), loaded."""
    folder = tmp_path / "plain"
    folder.mkdir(exist_ok=True)
    return core.load_generator(write_checkpoint("rosinality", folder))


@pytest.mark.parametrize("args, training_state, legacy_format", [
    (True, False, False), (False, False, False), (True, True, False), (False, True, True), (True, False, True)])
def test_rosinality_layouts(args, training_state, legacy_format, tmp_path):
    fx = forge.load_fixture("rosinality")
    path = forge.write_rosinality_pt(fx, tmp_path / "g.pt", args=args, training_state=training_state,
                                     legacy_format=legacy_format)
    G = core.load_generator(path)
    assert state_equal(G, _plain_rosinality(tmp_path)) and torch.equal(G.w_avg, fx.net["latent_avg"])
    assert (G.mapping(fx.expected["z1"], None, truncation_psi=0.7) - fx.expected["ws1"]).abs().max() <= TOL


def test_rosinality_without_latent_avg_estimates_w_avg(tmp_path, caplog):
    fx = forge.load_fixture("rosinality")
    path = forge.write_rosinality_pt(fx, tmp_path / "g.pt", latent_avg=False, training_state=True)
    with caplog.at_level(logging.WARNING, logger="stylegan_studio"):
        G = core.load_generator(path)
    assert "no latent_avg" in caplog.text and str(path) in caplog.text
    # Everything but w_avg is exact: untruncated mapping and synthesis match the reference.
    ws = G.mapping(fx.expected["z3"], None)
    assert (ws - fx.expected["ws3_psi1"]).abs().max() <= TOL
    assert (G.synthesis(fx.expected["ws3"], noise_mode="const") - fx.expected["img3"]).abs().max() <= TOL
    # The estimate is the mean of 10,000 mapped samples; rosinality's own came from 4,096.
    spread = fx.expected["ws3_psi1"][:, 0].std(0).mean()
    assert (G.w_avg - fx.net["latent_avg"]).abs().max() < 0.25 * spread
    assert not torch.equal(G.w_avg, fx.net["latent_avg"])


def test_psp_checkpoint_uses_the_decoder_and_its_repeated_latent_avg(tmp_path):
    fx = forge.load_fixture("rosinality")
    path = forge.write_rosinality_pt(fx, tmp_path / "psp.pt", layout="psp")
    raw = torch.load(path, weights_only=True)
    assert raw["latent_avg"].shape == (fx.expected["ws1"].shape[1], 16)  # pSp repeats it per style layer
    assert any(k.startswith("encoder.") for k in raw["state_dict"])
    G = core.load_generator(path)
    assert state_equal(G, _plain_rosinality(tmp_path))
    assert_parity(G, fx)


def test_psp_latent_avg_that_differs_per_layer_is_refused(tmp_path):
    fx = forge.load_fixture("rosinality")
    path = forge.write_rosinality_pt(fx, tmp_path / "psp.pt", layout="psp")
    raw = torch.load(path, weights_only=True)
    raw["latent_avg"][1] += 1
    torch.save(raw, path)
    with pytest.raises(core.CheckpointError, match="differs between layers"):
        core.load_generator(path)


def test_psp_checkpoint_without_latent_avg(tmp_path, caplog):
    fx = forge.load_fixture("rosinality")
    path = forge.write_rosinality_pt(fx, tmp_path / "psp.pt", layout="psp", latent_avg=False)
    with caplog.at_level(logging.WARNING, logger="stylegan_studio"):
        G = core.load_generator(path)
    assert "no latent_avg" in caplog.text
    assert (G.synthesis(fx.expected["ws3"], noise_mode="const") - fx.expected["img3"]).abs().max() <= TOL


def test_swagan_checkpoint_is_refused_clearly(tmp_path):
    fx = forge.load_fixture("rosinality")
    state = dict(fx.net)
    state["to_rgbs.0.iwt.ll"] = torch.ones(1, 1, 2, 2)
    state["to_rgbs.0.upsample.dwt.ll"] = torch.ones(1, 1, 2, 2)
    path = forge.write_rosinality_pt(fx, tmp_path / "swagan.pt", g_ema=state)
    with pytest.raises(core.CheckpointError, match="SWAGAN") as e:
        core.load_generator(path)
    assert str(path) in str(e.value)
