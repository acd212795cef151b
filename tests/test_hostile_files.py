"""Issue 13 (config bounds, torch-zip and safetensors reading): small crafted files that declare more than they
hold are refused before anything of the declared size is allocated or inflated, and every malformed field is a
CheckpointError naming the file and the field."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import zipfile

import forge
import psutil
import pytest
import torch
from conftest import tiny_generator

import core
from core import files as F
from core.config import GeneratorConfig, MappingConfig, StyleGAN2Config, StyleGAN3Config
from core.errors import CheckpointError
from core.loaders import read_torch_file
from core.loaders import state as S

PEAK_MB = 60  # the acceptance allows ~100 MB for a file under 1 MB; these all need a few MB


@contextlib.contextmanager
def peak_rss():
    """Yield a dict that gets 'mb': the peak resident-memory growth of this process while the block ran
    (sampled every millisecond, so a transient allocation that is freed before the block ends still counts)."""
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.001)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out: dict = {}
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["mb"] = (max(peak[0], proc.memory_info().rss) - base) / 2 ** 20


@pytest.fixture
def real_builds(monkeypatch):
    """Records every generator that `build_generator_for` allocates for real (not on the meta device)."""
    built = []
    original = S.Generator

    def recording(config):
        if torch.empty(0).device.type != "meta":
            built.append(config)
        return original(config)

    monkeypatch.setattr(S, "Generator", recording)
    return built


def refuse(path, *needles, loader=core.load_generator):
    """`loader(path)` raises CheckpointError naming the file and every needle, within PEAK_MB of memory."""
    with peak_rss() as mem, pytest.raises(CheckpointError) as e:
        loader(path)
    message = str(e.value)
    assert str(path) in message, message
    for needle in needles:
        assert needle in message, message
    assert mem["mb"] < PEAK_MB, f"{mem['mb']:.0f} MB to refuse {path.name}: {message}"
    return message


# --- torch.save files: declared sizes are checked before torch inflates or allocates --------------------------

@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    # 128 MiB keeps the forging fast; the 1 GiB in a 1 MB file is test_one_gib_zip_bomb (slow).
    return forge.write_torch_zip_bomb(tmp_path_factory.mktemp("bomb") / "bomb.pt", 1 << 27)


def test_zip_bomb_payload_is_live(bomb):
    """The forged file is a real 128 MiB deflate stream in a 130 KB zip whose sizes agree (torch would inflate
    it: its pickle declares the same 2**25 floats)."""
    assert bomb.stat().st_size < 150_000
    with zipfile.ZipFile(bomb) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
        assert info.file_size == 1 << 27 and info.compress_type == zipfile.ZIP_DEFLATED
        with zf.open(info) as f:
            assert f.read(1 << 20) == bytes(1 << 20)


@pytest.mark.parametrize("loader", [core.load_generator, read_torch_file, F.read_state_dict])
def test_zip_bomb_is_refused_before_inflating(bomb, loader):
    refuse(bomb, "inflate to 134,2", "zip bomb", loader=loader)


@pytest.mark.slow
def test_one_gib_zip_bomb(tmp_path):
    path = forge.write_torch_zip_bomb(tmp_path / "bomb.pt")
    assert path.stat().st_size < 1.1 * 2 ** 20
    refuse(path, "inflate to 1,073,7", "zip bomb")


def test_zip_local_header_that_disagrees_is_refused(tmp_path):
    path = forge.write_torch_zip_lying_local_header(tmp_path / "lie.pt", 1 << 26)
    refuse(path, "'archive/data/0'", "local header", "67,108,864")


def test_zip_duplicate_entry_is_refused(tmp_path):
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = forge.write_torch_zip_duplicate_entry(tmp_path / "dup.pt")
    refuse(path, "'archive/data/0' appears twice")


@pytest.mark.parametrize("loader", [core.load_generator, read_torch_file, F.read_state_dict])
def test_stride0_tensor_is_refused(tmp_path, loader):
    path = forge.write_torch_stride0(tmp_path / "stride0.pt", 100_000_000)
    refuse(path, "tensor 'a' [100000000] (strides [0])", "400,000,000 bytes", loader=loader)


def test_stride0_payload_is_live(tmp_path):
    """torch.load itself accepts the view (the first copy of it would cost 400 MB)."""
    path = forge.write_torch_stride0(tmp_path / "stride0.pt", 100_000_000)
    a = torch.load(path, weights_only=True)["a"]
    assert a.shape == (100_000_000,) and a.stride() == (0,) and a.untyped_storage().nbytes() == 16


@pytest.mark.parametrize("loader", [core.load_generator, read_torch_file, F.read_state_dict])
def test_legacy_torch_file_declaring_a_huge_storage_is_refused(tmp_path, loader):
    path = forge.write_torch_legacy_huge_storage(tmp_path / "legacy.pt", 500_000_000)
    refuse(path, "declares 1 storage(s) of 2,000,000,000 bytes", loader=loader)


def test_legacy_torch_scan_imports_and_calls_nothing(tmp_path, monkeypatch):
    """The storage scan resolves globals to stubs: a legacy file naming os.system runs nothing."""
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {}, {"a": Evil()}, []):
            pickle.dump(obj, f, protocol=2)
    assert b"system" in path.read_bytes()
    calls = []
    import posix
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    monkeypatch.setattr(posix, "system", lambda *a: calls.append(a))
    with pytest.raises(CheckpointError):
        read_torch_file(path)
    assert calls == []


def test_ordinary_torch_files_still_load(tmp_path):
    state = {"w": torch.randn(64, 64), "b": torch.zeros(64), "nested": {"v": torch.arange(10)}}
    for legacy in (False, True):
        path = tmp_path / f"ok{legacy}.pt"
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        assert F.check_torch_file(path) >= 64 * 64 * 4
        loaded = F.read_state_dict(path)
        assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["nested"]["v"], state["nested"]["v"])


def test_small_expanded_views_are_allowed(tmp_path):
    """A view of a few KB (e.g. a broadcast bias someone saved) is not a threat; only large ones are refused."""
    path = tmp_path / "view.pt"
    torch.save({"b": torch.zeros(1).expand(1000)}, path)
    assert read_torch_file(path)["b"].shape == (1000,)


# --- config bounds: one place, checked before anything is built ------------------------------------------------

CONFIG_CASES = [
    ({"mapping.num_layers": 200_000}, "mapping.num_layers is 200000"),
    ({"z_dim": "512"}, "z_dim is '512' (a string)"),
    ({"w_dim": 512.5}, "w_dim is 512.5"),
    ({"w_dim": True}, "w_dim is True (a boolean)"),
    ({"w_dim": 10 ** 9}, "w_dim is 1000000000"),
    ({"c_dim": -1}, "c_dim is -1"),
    ({"img_channels": 0}, "img_channels is 0"),
    ({"img_resolution": 1000}, "img_resolution is 1000, expected a power of two"),
    ({"img_resolution": 2 ** 20}, "img_resolution is 1048576"),
    ({"mapping.layer_features": 0}, "mapping.layer_features is 0"),
    ({"mapping.lr_multiplier": float("inf")}, "mapping.lr_multiplier is inf"),
    ({"mapping.lr_multiplier": 0}, "mapping.lr_multiplier is 0.0"),
    ({"mapping.activation": "gelu"}, "mapping.activation is 'gelu'"),
    ({"mapping.w_avg_beta": float("nan")}, "mapping.w_avg_beta is nan"),
    ({"synthesis.channel_base": 0}, "synthesis.channel_base is 0"),
    ({"synthesis.channel_base": 8}, "synthesis.channel_base is 8, expected at least img_resolution (16)"),
    ({"synthesis.channel_max": 0}, "synthesis.channel_max is 0"),
    ({"synthesis.resample_filter": [0, 0, 0, 0]}, "resample_filter [0, 0, 0, 0] sums to 0"),
    ({"synthesis.resample_filter": [1, -1]}, "resample_filter [1, -1] sums to 0"),
    ({"synthesis.resample_filter": []}, "synthesis.resample_filter is ()"),
    ({"synthesis.resample_filter": ["a"]}, "expected finite numbers"),
    ({"synthesis.resample_filter": [1, float("nan")]}, "expected finite numbers"),
    ({"synthesis.resample_filter": "1331"}, "synthesis.resample_filter is a string"),
    ({"synthesis.conv_clamp": -1}, "synthesis.conv_clamp is -1.0"),
    ({"synthesis.conv_clamp": float("nan")}, "synthesis.conv_clamp is nan"),
    ({"synthesis.architecture": "unet"}, "synthesis.architecture is 'unet'"),
    ({"synthesis.use_noise": "yes"}, "synthesis.use_noise is 'yes'"),
    ({"synthesis.num_fp16_res": -1}, "synthesis.num_fp16_res is -1"),
    ({"synthesis.bogus": 1}, "unknown synthesis setting(s) ['bogus']"),
    ({"bogus": 1}, "unknown generator setting(s) ['bogus']"),
    ({"arch": "stylegan9"}, "arch is 'stylegan9'"),
    ({"mapping": [1, 2]}, "mapping is a list, expected a JSON object"),
    ({"synthesis": "x"}, "synthesis is a string, expected a JSON object"),
]

SG3 = {"arch": "stylegan3", "synthesis": {"channel_base": 1024, "channel_max": 32, "num_layers": 4,
                                          "num_critical": 1}}
SG3_CASES = [
    ({"first_cutoff": 0}, "synthesis.first_cutoff is 0.0"),
    ({"first_cutoff": 100}, "synthesis.first_cutoff is 100.0"),
    ({"first_stopband": 1.0}, "synthesis.first_stopband is 1.0"),
    ({"last_stopband_rel": float("inf")}, "synthesis.last_stopband_rel is inf"),
    ({"num_critical": 4}, "synthesis.num_critical is 4"),
    ({"num_layers": 10 ** 6}, "synthesis.num_layers is 1000000"),
    ({"margin_size": 10 ** 9}, "synthesis.margin_size is 1000000000"),
    ({"filter_size": 60, "lrelu_upsampling": 8}, "tap filter"),
    ({"lrelu_upsampling": 0}, "synthesis.lrelu_upsampling is 0"),
    ({"conv_kernel": 2}, "synthesis.conv_kernel is 2"),
    ({"output_scale": float("nan")}, "synthesis.output_scale is nan"),
    ({"channel_base": 4}, "gives layers without channels"),
    ({"magnitude_ema_beta": 2}, "synthesis.magnitude_ema_beta is 2.0"),
]


def _sg3(changes):
    cfg = forge.stylegan_config(**{k: v for k, v in SG3.items() if k != "synthesis"})
    cfg["synthesis"] = dict(SG3["synthesis"], **changes)
    return cfg


ALL_CONFIG_CASES = [(forge.stylegan_config(**c), n) for c, n in CONFIG_CASES] + [(_sg3(c), n) for c, n in SG3_CASES]


@pytest.mark.parametrize("cfg, needle", ALL_CONFIG_CASES, ids=[n[:40] for _, n in ALL_CONFIG_CASES])
def test_config_out_of_bounds_names_file_and_field(tmp_path, cfg, needle, real_builds):
    path = forge.write_stylegan_safetensors(tmp_path / "bad.safetensors", cfg)
    refuse(path, "'config'", needle)
    assert real_builds == []


def test_config_checks_every_path_not_only_json():
    """The bounds live in GeneratorConfig itself, so NVIDIA / TF / rosinality configs pass the same check."""
    with pytest.raises(CheckpointError, match="mapping.num_layers is 200000"):
        GeneratorConfig("stylegan2", mapping=MappingConfig(num_layers=200_000))
    with pytest.raises(CheckpointError, match="synthesis.channel_base is 0"):
        GeneratorConfig("stylegan2", synthesis=StyleGAN2Config(channel_base=0))
    with pytest.raises(CheckpointError, match="resample_filter"):
        GeneratorConfig("stylegan2", synthesis=StyleGAN2Config(resample_filter=(0.0, 0.0)))
    with pytest.raises(CheckpointError, match="synthesis.first_cutoff"):
        GeneratorConfig("stylegan3", synthesis=StyleGAN3Config(first_cutoff=float("nan")))


@pytest.mark.parametrize("config", [
    GeneratorConfig("stylegan2"),                                                       # FFHQ 1024 config F
    GeneratorConfig("stylegan2", img_resolution=256, synthesis=StyleGAN2Config(channel_base=16384)),  # ADA 256
    GeneratorConfig("stylegan2", img_resolution=2048, c_dim=1000),
    GeneratorConfig("stylegan3", mapping=MappingConfig(num_layers=2), synthesis=StyleGAN3Config()),  # SG3-T 1024
    GeneratorConfig("stylegan3", synthesis=StyleGAN3Config(channel_base=65536, channel_max=1024, conv_kernel=1,
                                                           use_radial_filters=True)),  # SG3-R 1024
    GeneratorConfig("stylegan3", z_dim=64, c_dim=1000, img_resolution=1024, mapping=MappingConfig(num_layers=4),
                    synthesis=StyleGAN3Config(num_layers=24, channel_base=32768, channel_max=1024)),  # XL-ish
], ids=["sg2-1024", "ada-256", "sg2-2048-cond", "sg3t-1024", "sg3r-1024", "xl-1024"])
def test_real_model_configs_pass_and_build_cheaply_on_meta(config):
    t = time.process_time()
    shapes = S.expected_state_shapes(config)
    assert shapes and time.process_time() - t < 5
    assert GeneratorConfig.from_json(config.to_json()) == config


# --- declared sizes vs the data the file holds --------------------------------------------------------------

@pytest.mark.parametrize("cfg", [
    forge.stylegan_config(w_dim=8192, z_dim=8192, **{"mapping.num_layers": 64, "mapping.layer_features": 8192}),
    forge.stylegan_config(img_resolution=4096, **{"synthesis.channel_base": 2 ** 22, "synthesis.channel_max": 8192}),
    dict(forge.stylegan_config(img_resolution=4096, c_dim=65536, arch="stylegan3"),
         synthesis={"channel_base": 2 ** 22, "channel_max": 8192, "num_layers": 64}),
], ids=["huge-mapping", "sg2-4096-wide", "sg3-4096-wide"])
def test_huge_but_in_bounds_config_without_its_weights_is_refused_before_allocating(tmp_path, cfg, real_builds):
    path = forge.write_stylegan_safetensors(tmp_path / "huge.safetensors", cfg)
    refuse(path, "the weights do not fit the architecture", "missing")
    assert real_builds == []


def test_build_generator_for_counts_elements_when_names_are_unknown(real_builds):
    config = GeneratorConfig("stylegan2", z_dim=32, w_dim=32, img_resolution=16,
                             mapping=MappingConfig(num_layers=2),
                             synthesis=StyleGAN2Config(channel_base=256, channel_max=32))
    needed = sum(v.numel() for k, v in core.Generator(config).state_dict().items() if k != "mapping.w_avg")
    with pytest.raises(CheckpointError, match=f"holds 1,000 weight values .* needs {needed:,}"):
        S.build_generator_for(config, 1000, "tf.pkl")
    assert real_builds == []
    assert isinstance(S.build_generator_for(config, needed, "tf.pkl"), core.Generator) and len(real_builds) == 1


def test_file_with_its_weights_still_loads(tmp_path):
    G = tiny_generator("stylegan3")
    path = core.save_generator(G, tmp_path / "g.safetensors")
    G2 = core.load_generator(path)
    assert G2.config == G.config
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G2.state_dict().values()))


# --- safetensors structure ----------------------------------------------------------------------------------

def _header(**tensor):
    return {"__metadata__": {"format": "stylegan-studio", "config": json.dumps(forge.stylegan_config())},
            "w": dict({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, **tensor)}


@pytest.mark.parametrize("kind", ["huge-header-length", "100MB-header-claim", "not-json", "overlapping",
                                  "shape-overflow", "shape-beyond-data", "offsets-beyond-file", "bad-dtype",
                                  "negative-shape"])
def test_malformed_safetensors_is_refused_cheaply(tmp_path, kind):
    path = tmp_path / f"{kind}.safetensors"
    data = bytes(16)
    if kind == "huge-header-length":
        forge.write_raw_safetensors(path, _header(), data, header_len=2 ** 62)
    elif kind == "100MB-header-claim":
        forge.write_raw_safetensors(path, _header(), data, header_len=99_999_999)
    elif kind == "not-json":
        forge.write_raw_safetensors(path, b"{not json" + b" " * 20, data)
    elif kind == "overlapping":
        h = _header()
        h["v"] = {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}
        forge.write_raw_safetensors(path, h, bytes(24))
    elif kind == "shape-overflow":
        forge.write_raw_safetensors(path, _header(shape=[2 ** 62, 2 ** 62]), data)
    elif kind == "shape-beyond-data":
        forge.write_raw_safetensors(path, _header(shape=[1 << 28]), data)
    elif kind == "offsets-beyond-file":
        forge.write_raw_safetensors(path, _header(data_offsets=[0, 1 << 30], shape=[1 << 28]), data)
    elif kind == "bad-dtype":
        forge.write_raw_safetensors(path, _header(dtype="F128"), data)
    else:
        forge.write_raw_safetensors(path, _header(shape=[-4]), data)
    # A header length of 100 MB or more is not even recognised as safetensors by the content sniffer.
    refuse(path, "not a StyleGAN checkpoint" if kind == "huge-header-length" else "not a readable safetensors")
    refuse(path, "not a readable safetensors", loader=lambda p: F.read_safetensors(p, what="StyleGAN checkpoint"))


# --- metadata fields: wrong JSON and wrong JSON types ---------------------------------------------------------

@pytest.mark.parametrize("text, needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "generator config is a list, expected a JSON object"),
    ("42", "generator config is an integer"),
    ("null", "generator config is null"),
    (forge.nested_json(100_000), "nested too deeply"),
    (json.dumps({"z_dim": 8}), "missing the key 'arch'"),
])
def test_malformed_config_metadata_names_file_and_field(tmp_path, text, needle):
    path = forge.write_stylegan_safetensors(tmp_path / "meta.safetensors", text)
    refuse(path, "metadata field 'config'", needle)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return core.save_generator(tiny_generator("stylegan2"), tmp_path_factory.mktemp("tiny") / "tiny.safetensors")


@pytest.mark.parametrize("info, needle", [
    ("{oops", "metadata field 'info' is invalid"),
    (forge.nested_json(100_000), "nested too deeply"),
    ("[1]", "field 'info' is a list"),
    (json.dumps({"name": 5}), "field 'info.name' is a int"),
    (json.dumps({"source": ["a"]}), "field 'info.source' is a list"),
    (json.dumps({"extra": [1]}), "field 'info.extra' is a list"),
])
def test_malformed_info_metadata_names_file_and_field(tmp_path, tiny_file, info, needle):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tiny_file), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    path = tmp_path / "info.safetensors"
    save_file(tensors, str(path), metadata=dict(meta, info=info))
    refuse(path, needle)


# --- rosinality: names and shapes from the file ------------------------------------------------------------

@pytest.mark.parametrize("extra, needle", [
    ({"convs.999999999.conv.weight": torch.zeros(1, 8, 8, 3, 3)}, "synthesis convolutions"),
    ({"style.200000.weight": torch.zeros(8, 8)}, "mapping.num_layers is 200000"),
    ({"noises.noise_99999999999999": torch.zeros(1, 1, 4, 4)}, "unexpected tensor(s) [noises.noise_99999999999999]"),
    ({"style.1.weight": torch.zeros(())}, "tensor 'style.1.weight' has shape []"),
    ({"input.input": torch.zeros(())}, "tensor 'input.input' []"),
    ({"conv1.conv.weight": torch.zeros(1, 8, 8, 3, 3), "to_rgb1.conv.weight": torch.zeros(1, 0, 8, 1, 1)},
     "img_channels is 0"),
])
def test_hostile_rosinality_names_and_shapes(tmp_path, extra, needle):
    path = tmp_path / "ros.pt"
    torch.save(forge.rosinality_state_with_names(extra), path)
    t = time.process_time()
    refuse(path, needle)
    assert time.process_time() - t < 5


# --- NVIDIA pickles: the same bounds, the file named ---------------------------------------------------------

@pytest.mark.parametrize("settings, needle", [
    ({"mapping_num_layers": 200_000}, "mapping.num_layers is 200000"),
    ({"synthesis_kwargs.channel_base": 0}, "synthesis.channel_base is 0"),
    ({"z_dim": 10 ** 9}, "z_dim is 1000000000"),
    ({"synthesis_kwargs.resample_filter": [0, 0, 0, 0]}, "sums to"),
], ids=["mapping-200k", "zero-channels", "huge-z", "zero-filter"])
def test_nvidia_pickle_with_forged_settings_names_file_and_field(tmp_path, settings, needle, real_builds):
    fx = forge.load_fixture("ada_skip")
    path = forge.write_nvidia_pickle_with_settings(fx, tmp_path / "forged.pkl", **settings)
    assert path.stat().st_size < 1 << 20
    t = time.process_time()
    refuse(path, needle)
    assert time.process_time() - t < 5
    assert real_builds == []


@pytest.mark.parametrize("settings", [{"synthesis_kwargs.channel_base": "abc"}, {"z_dim": [1]},
                                      {"c_dim": None}], ids=["str", "list", "none"])
def test_nvidia_pickle_with_wrongly_typed_settings_is_a_checkpoint_error(tmp_path, settings):
    path = forge.write_nvidia_pickle_with_settings(forge.load_fixture("ada_skip"), tmp_path / "typed.pkl",
                                                   **settings)
    refuse(path)



def test_recorded_fingerprint_is_not_trusted(tmp_path):
    """A file cannot claim another generator's fingerprint (latents, deltas and caches are matched by it): the
    loader recomputes it from the weights, and saving never writes it."""
    from core.latents import generator_ref

    G = tiny_generator()
    genuine = generator_ref(G).fingerprint
    path = core.save_generator(G, tmp_path / "g.safetensors")
    _, meta = F.read_safetensors(path, what="test")
    assert "_fingerprint" not in json.loads(meta["info"])["extra"]
    info = json.loads(meta["info"])
    info["extra"] = {"_fingerprint": "0123456789abcdef", "kept": 1}
    tensors, _ = F.read_safetensors(path, what="test")
    from safetensors.torch import save_file
    save_file(tensors, str(tmp_path / "forged.safetensors"), metadata=dict(meta, info=json.dumps(info)))
    G2 = core.load_generator(tmp_path / "forged.safetensors")
    assert G2.info.extra == {"kept": 1}
    assert generator_ref(G2).fingerprint == genuine


@pytest.mark.parametrize("depth,key_len,refs", [(1000, 1000, 300), (10_000, 1000, 1)], ids=["wide", "deep"])
def test_long_keys_nested_deep_cost_neither_memory_nor_time(tmp_path, depth, key_len, refs):
    """A 6-42 KB .pt nesting one memoised 1000-character key thousands deep: the tensor-view walk cost +281 MB
    (wide) or more than a minute (deep) when it spelled out every object's dotted name while walking."""
    path = forge.write_torch_zip_pickle(tmp_path / "deep.pt", forge.deep_long_key_pickle(depth, key_len, refs))
    assert path.stat().st_size < 50_000
    t0 = time.process_time()
    with peak_rss() as peak:
        with pytest.raises(CheckpointError, match=r"not a rosinality StyleGAN2 checkpoint \(no 'g_ema'; keys: 'kkk"):
            core.load_generator(path)
        state = F.read_state_dict(path)  # a plain state-dict reader walks the same structure
    assert isinstance(state, dict)
    assert time.process_time() - t0 < 10
    assert peak["mb"] < 60, f"{peak['mb']:.0f} MB"


@pytest.mark.parametrize("version", ["999", "x"])
def test_a_checkpoint_of_another_format_version_is_refused(tmp_path, version):
    from safetensors.torch import save_file

    path = core.save_generator(tiny_generator(), tmp_path / "g.safetensors")
    tensors, meta = F.read_safetensors(path, what="test")
    save_file(tensors, str(path), metadata=dict(meta, format_version=version))
    with pytest.raises(CheckpointError, match=rf"g.safetensors: StyleGAN checkpoint metadata field 'format_version' "
                                              rf"is '{version}'; this StyleGAN Studio reads version '1': update"):
        core.load_generator(path)
