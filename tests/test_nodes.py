"""Node classes run headless (no ComfyUI): schemas, behaviour, files, caching, errors."""

from __future__ import annotations

import inspect
import sys
import types

import numpy as np
import pytest
import torch

import core
from conftest import tiny_generator


def all_nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


def test_node_schema_hygiene(pack):
    names = pack.NODE_DISPLAY_NAME_MAPPINGS
    for node_id, cls in all_nodes(pack).items():
        assert node_id.startswith("SGS_") and names.get(node_id), node_id
        assert cls.CATEGORY.startswith("StyleGAN/"), node_id
        assert len(cls.DESCRIPTION) > 40, node_id
        assert callable(getattr(cls, cls.FUNCTION)), node_id
        spec = cls.INPUT_TYPES()
        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        for group in ("required", "optional"):
            for name, entry in spec.get(group, {}).items():
                assert len(entry) == 2 and entry[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
                assert name in params, f"{node_id}.{name} is not an argument of {cls.FUNCTION}"
        if getattr(cls, "OUTPUT_TOOLTIPS", None) is not None:
            assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES), node_id
        for t in cls.RETURN_TYPES:
            assert t in ("IMAGE", "STRING", "MASK") or t.startswith("SGS_"), (node_id, t)


def test_custom_types_are_prefixed(pack):
    from stylegan_studio.nodes import types as T
    assert T.GENERATOR.startswith("SGS_") and T.LATENT.startswith("SGS_")


def test_defaults_come_from_core(pack):
    spec = all_nodes(pack)["SGS_SampleLatent"].INPUT_TYPES()["required"]
    assert spec["truncation_psi"][1]["default"] == core.latents.DEFAULT_TRUNCATION_PSI
    spec = all_nodes(pack)["SGS_Synthesize"].INPUT_TYPES()
    assert spec["required"]["noise_mode"][1]["default"] == core.latents.DEFAULT_NOISE_MODE
    assert spec["optional"]["chunk_size"][1]["default"] == core.latents.DEFAULT_CHUNK_SIZE


@pytest.fixture()
def ckpt(pack, tmp_path):
    """A tiny generator saved in the pack's models folder."""
    G = tiny_generator("stylegan2")
    core.save_generator(G, tmp_path / "models" / "stylegan" / "tiny.safetensors")
    return G


def test_load_stylegan_lists_loads_and_caches(pack, ckpt):
    node_cls = all_nodes(pack)["SGS_LoadStyleGAN"]
    assert node_cls.INPUT_TYPES()["required"]["ckpt_name"][0] == ["tiny.safetensors"]
    out = node_cls().load("tiny.safetensors", device="cpu")
    G, info = out["result"]
    assert "stylegan2, 32 px" in info and out["ui"]["text"] == [info]
    assert node_cls().load("tiny.safetensors", device="cpu")["result"][0] is G  # cached, same object
    assert G.precision == "auto" and "dtype: auto" in info
    G32 = node_cls().load("tiny.safetensors", device="cpu", dtype="float32")["result"][0]
    assert G32 is not G and G32.precision == "float32" and G.precision == "auto"  # own cache entry
    z = torch.randn(1, 16)
    assert torch.allclose(G(z), ckpt(z), atol=1e-6)


def test_load_stylegan_reloads_a_replaced_file(pack, ckpt, tmp_path):
    """IS_CHANGED follows the file's version, so ComfyUI runs the loader again when a checkpoint is replaced under
    the same name (its output cache would otherwise keep serving the old generator)."""
    node_cls = all_nodes(pack)["SGS_LoadStyleGAN"]
    before = node_cls.IS_CHANGED("tiny.safetensors", device="cpu")
    assert before and node_cls.IS_CHANGED("tiny.safetensors", device="cpu") == before
    G = node_cls().load("tiny.safetensors", device="cpu")["result"][0]
    core.save_generator(tiny_generator("stylegan2", img_resolution=64), tmp_path / "models" / "stylegan" /
                        "tiny.safetensors")
    assert node_cls.IS_CHANGED("tiny.safetensors", device="cpu") != before
    G64 = node_cls().load("tiny.safetensors", device="cpu")["result"][0]
    assert G.img_resolution == 32 and G64.img_resolution == 64
    assert node_cls.IS_CHANGED("nope.pkl") == ""   # VALIDATE_INPUTS reports it


def test_load_stylegan_validation_messages(pack, ckpt):
    node_cls = all_nodes(pack)["SGS_LoadStyleGAN"]
    assert node_cls.VALIDATE_INPUTS("tiny.safetensors") is True
    assert "not in models/stylegan" in node_cls.VALIDATE_INPUTS("nope.pkl")
    assert "hf_filename is required" in node_cls.VALIDATE_INPUTS("nope.pkl", hf_repo="a/b")
    with pytest.raises(FileNotFoundError, match="models/stylegan"):
        node_cls().load("nope.pkl", device="cpu")


def test_load_stylegan_from_hub_uses_the_models_folder(pack, tmp_path, monkeypatch):
    G = tiny_generator("stylegan2")
    calls = {}

    def fake_download(repo_id, filename, revision=None, local_dir=None):
        calls["args"] = (repo_id, filename, local_dir)
        path = tmp_path / "hub.safetensors"
        core.save_generator(G, path)
        return str(path)

    fake = types.SimpleNamespace(hf_hub_download=fake_download,
                                 model_info=lambda repo: types.SimpleNamespace(card_data={"license": "cc-by-4.0"}))
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    out = all_nodes(pack)["SGS_LoadStyleGAN"]().load("", device="cpu", hf_repo="someone/stylegan-demo",
                                                     hf_filename="g.safetensors")
    loaded, info = out["result"]
    assert calls["args"][:2] == ("someone/stylegan-demo", "g.safetensors")
    assert calls["args"][2].endswith("models/stylegan/someone--stylegan-demo")
    assert "licence: cc-by-4.0" in info


def test_hub_failure_says_what_to_do(pack, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no connection")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=offline))
    with pytest.raises(pack.core.hub.HubDownloadError, match="If you are offline, download it yourself"):
        all_nodes(pack)["SGS_LoadStyleGAN"]().load("", device="cpu", hf_repo="a/b", hf_filename="g.pkl")


def test_known_nvidia_files_get_the_nc_licence(pack, tmp_path):
    G = tiny_generator("stylegan2")
    core.save_generator(G, tmp_path / "models" / "stylegan" / "stylegan2-ffhq-1024x1024.safetensors")
    _, info = all_nodes(pack)["SGS_LoadStyleGAN"]().load("stylegan2-ffhq-1024x1024.safetensors", device="cpu")["result"]
    assert "non-commercial" in info or "no commercial use" in info


def test_save_stylegan_writes_and_never_overwrites(pack, tmp_path):
    G = tiny_generator("stylegan2")
    node = all_nodes(pack)["SGS_SaveStyleGAN"]()
    node.save(G, "mine")
    path = tmp_path / "models" / "stylegan" / "mine.safetensors"
    assert path.is_file() and core.load_generator(path).config == G.config
    with pytest.raises(FileExistsError, match="already exists"):
        node.save(G, "mine")


def test_sample_synthesize_and_nvidia_quantisation(pack):
    G = tiny_generator("stylegan2")
    nodes = all_nodes(pack)
    lat, = nodes["SGS_SampleLatent"]().sample(G, 5, 3, "w", 0.7, 0, "nvidia")
    assert lat.batch_size == 3
    lat2, = nodes["SGS_SampleLatent"]().sample(G, 0, 1, "w", 0.7, 0, "nvidia", seed_list="5-7")
    assert torch.equal(lat.tensor, lat2.tensor)
    img, = nodes["SGS_Synthesize"]().synthesize(G, lat, "const")["result"]
    assert img.shape == (3, 32, 32, 3) and img.min() >= 0 and img.max() <= 1
    # 8-bit output as ComfyUI saves it equals NVIDIA's quantisation of the raw image.
    raw = core.synthesize(G, lat)
    nvidia = (raw.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    comfy = np.clip(255.0 * img.numpy(), 0, 255).astype(np.uint8)
    assert np.abs(nvidia.astype(int) - comfy.astype(int)).max() <= 1
    assert (nvidia == comfy).mean() > 0.99


def test_interpolate_and_style_mix_nodes(pack):
    G = tiny_generator("stylegan2", img_resolution=128)
    nodes = all_nodes(pack)
    a, = nodes["SGS_SampleLatent"]().sample(G, 1, 1, "z", 1.0, 0, "nvidia")
    b, = nodes["SGS_SampleLatent"]().sample(G, 2, 1, "z", 1.0, 0, "nvidia")
    frames, = nodes["SGS_InterpolateLatents"]().interpolate(a, b, 6, "auto")
    assert frames.batch_size == 6 and torch.equal(frames.tensor[0], a.tensor[0])
    mixed, = nodes["SGS_StyleMix"]().mix(G, a, b, "coarse+middle")
    wb = core.latent_to_ws(G, b)
    assert torch.equal(mixed.tensor[0, :8], wb[0, :8]) and not torch.equal(mixed.tensor[0, 8:], wb[0, 8:])
    custom, = nodes["SGS_StyleMix"]().mix(G, a, b, "custom", custom_layers="11")
    assert torch.equal(custom.tensor[0, 11], wb[0, 11])


def test_latent_save_and_load_nodes(pack, tmp_path):
    G = tiny_generator("stylegan2")
    nodes = all_nodes(pack)
    lat, = nodes["SGS_SampleLatent"]().sample(G, 3, 2, "w+", 0.5, 0, "nvidia")
    out = nodes["SGS_SaveLatent"]().save(lat, "latents/test")
    files = list((tmp_path / "output" / "latents").glob("test_*_.safetensors"))
    assert len(files) == 1 and "2 x w+ latent" in out["ui"]["text"][0]
    choices = nodes["SGS_LoadLatent"].INPUT_TYPES()["required"]["latent_file"][0]
    assert choices == [f"latents/{files[0].name} [output]"]
    loaded, = nodes["SGS_LoadLatent"]().load(choices[0], generator=G)
    assert torch.equal(loaded.tensor, lat.tensor)
    assert nodes["SGS_LoadLatent"].IS_CHANGED(choices[0])
    other = tiny_generator("stylegan2", w_dim=8, z_dim=8)
    other.info.name = "narrow-model"
    with pytest.raises(pack.core.LatentError, match="made for tiny-stylegan2 .* narrow-model needs"):
        nodes["SGS_LoadLatent"]().load(choices[0], generator=other)


@pytest.mark.slow
def test_demo_generator_is_deterministic(pack):
    node = all_nodes(pack)["SGS_DemoGenerator"]()
    g1, _ = node.build("stylegan3", 32, 7, "cpu")["result"]
    g2, _ = node.build("stylegan3", 32, 7, "cpu")["result"]
    z = torch.randn(1, g1.z_dim)
    assert torch.equal(g1(z), g2(z))


def test_image_conversion_round_trip(pack):
    from stylegan_studio.nodes.convert import comfy_to_generator, generator_to_comfy
    # NVIDIA's quantisation maps x to (127.5 x + 128) / 255, so x in [-128/127.5, 127/127.5] survives exactly.
    x = torch.linspace(-1.0, 127 / 127.5, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    assert torch.allclose(comfy_to_generator(generator_to_comfy(x)), x, atol=1e-5)
    assert generator_to_comfy(torch.full((1, 3, 2, 2), 2.0)).max() == 1.0  # out-of-range values are clamped
    gray = torch.rand(1, 8, 8, 1)
    assert comfy_to_generator(gray).shape == (1, 3, 8, 8)
    rgba = torch.rand(1, 8, 8, 4)
    assert torch.equal(comfy_to_generator(rgba), comfy_to_generator(rgba[..., :3]))
    with pytest.raises(ValueError, match="IMAGE"):
        comfy_to_generator(torch.rand(1, 8, 8, 2))


@pytest.mark.slow
def test_demo_script_writes_pngs_and_contact_sheet(tmp_path, monkeypatch):
    from PIL import Image
    import importlib.util
    from conftest import REPO
    monkeypatch.setenv("STYLEGAN_STUDIO_HOME", str(tmp_path))  # no checkpoint there: demo generator
    spec = importlib.util.spec_from_file_location("sgs_demo", REPO / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.main(["--out", str(tmp_path / "out"), "--frames", "4", "--device", "cpu"]) == 0
    out = tmp_path / "out"
    assert len(list(out.glob("sample_*.png"))) == 6 and len(list(out.glob("interp_*.png"))) == 4
    assert len(list(out.glob("mix_*_*.png"))) == 18
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size == (6 * 128, 5 * (128 + 18))
    assert list((out / "latents").glob("*.safetensors"))


def test_nvidia_seed_parity_end_to_end(pack, tmp_path):
    """Sample Latent (nvidia seeds) -> Synthesize -> 8-bit pixels equal NVIDIA's gen_images.py output to within one
    level (fp32 rounding at a level boundary can move a value by one; more than 99.9 % are identical).

    The fixture network was built and run with NVIDIA's stylegan2-ada-pytorch (psi 0.7, noise const); its
    weights were converted to our format, the expected images are NVIDIA's own uint8 output.
    """
    import shutil
    from safetensors.torch import load_file
    from conftest import REPO
    fixtures = REPO / "tests" / "fixtures"
    shutil.copy(fixtures / "nvidia_seeds_ada32.safetensors", tmp_path / "models" / "stylegan" / "ada32.safetensors")
    expected = load_file(str(fixtures / "nvidia_seeds_ada32_expected.safetensors"))
    nodes = all_nodes(pack)
    G, _ = nodes["SGS_LoadStyleGAN"]().load("ada32.safetensors", device="cpu")["result"]
    seeds = ",".join(str(s) for s in expected["seeds"].tolist())
    lat, = nodes["SGS_SampleLatent"]().sample(G, 0, 1, "w", 0.7, 0, "nvidia", seed_list=seeds)
    img, = nodes["SGS_Synthesize"]().synthesize(G, lat, "const")["result"]
    ours = np.clip(255.0 * img.numpy(), 0, 255).astype(np.uint8)  # what ComfyUI's SaveImage writes
    theirs = expected["images"].numpy()
    assert ours.shape == theirs.shape == (3, 32, 32, 3)
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999


def test_synthesize_shows_each_chunk_as_it_is_rendered(pack, monkeypatch):
    """A long batch shows frames while it renders: a preview after every chunk (the last frame of that chunk),
    not only one at the end."""
    nodes = all_nodes(pack)
    comfy_env = sys.modules[pack.__name__ + ".nodes.comfy_env"]
    seen = []
    monkeypatch.setattr(comfy_env.Progress, "update",
                        lambda self, done, preview=None, losses=None: seen.append((done, preview)))
    G = tiny_generator()
    latent = core.sample_latents(G, [0, 1, 2, 3, 4], space="w")
    out = nodes["SGS_Synthesize"]().synthesize(G, latent, "const", chunk_size=2)
    images = out["result"][0]
    assert [done for done, _ in seen] == [2, 4, 5, 5]
    assert all(preview is not None for _, preview in seen)
    for (done, preview), frame in zip(seen[:3], (1, 3, 4)):  # the last frame of each chunk
        expected = (images[frame].numpy() * 255).astype("uint8")
        assert np.abs(np.asarray(preview).astype(int) - expected.astype(int)).max() <= 1
