"""CLIP wrapper: safe loading from model folders (and its errors), padding-free text encoding equal to open_clip's
full pass, differentiable image preprocessing, caches. Tiny random open_clip models stand in for real weights."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

from core.models import clip as C  # noqa: E402
from core.errors import CheckpointError, MissingDependencyError, MissingWeightsError  # noqa: E402

TINY = "SGS-Tiny-CLIP"
TINY_CFG = {"embed_dim": 32,
            "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
PROMPTS = ["a face with a big smile", "angry", "a person with blonde hair and blue eyes", "{weird} braces"]
TEMPLATES = ["a photo of a {}.", "{}", "a very very long and rather wordy rendering of the {} in a video game.",
             "itap of my {}."]


def _register(name: str, cfg: dict, folder) -> None:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(str(path))


@pytest.fixture(scope="session", autouse=True)
def tiny_configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip_configs")
    _register(TINY, TINY_CFG, folder)
    _register(TINY + "-wide", {**TINY_CFG, "embed_dim": 48}, folder)
    _register(TINY + "-last", {**TINY_CFG, "text_cfg": {**TINY_CFG["text_cfg"], "pool_type": "last"}}, folder)
    _register(TINY + "-eos", {**TINY_CFG, "text_cfg": {**TINY_CFG["text_cfg"], "pool_type": "eos",
                                                       "eos_id": 49407}}, folder)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test touches the network: the Hub is unreachable unless a test says otherwise."""
    monkeypatch.setattr(C, "_hub_reachable", lambda timeout=3.0: False)
    C.clear_clip_cache()
    yield
    C.clear_clip_cache()


@pytest.fixture(scope="session")
def tiny():
    return C.random_clip(TINY, seed=0)


@pytest.fixture()
def weights(tiny, tmp_path):
    """A models folder holding the tiny model's state dict as safetensors and as .bin."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny.model.state_dict().items()}
    save_file(state, str(tmp_path / "tiny.safetensors"))
    torch.save(state, tmp_path / "tiny.bin")
    return tmp_path


# ------------------------------------------------------------------------------------------------
# Loading


@pytest.mark.parametrize("file", ["tiny.safetensors", "tiny.bin"])
def test_load_from_models_folder(tiny, weights, tmp_path, file):
    other = tmp_path / "empty"
    other.mkdir()
    clip = C.load_clip(TINY, model_dirs=[other, weights], pretrained=file)
    assert clip.source == str((weights / file).resolve())
    for k, v in tiny.model.state_dict().items():
        assert torch.equal(clip.model.state_dict()[k], v), k
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.allclose(clip.encode_image(x), tiny.encode_image(x), atol=1e-6)
    assert torch.allclose(clip.encode_text(PROMPTS), tiny.encode_text(PROMPTS), atol=1e-6)
    assert not any(p.requires_grad for p in clip.model.parameters())


def test_load_by_path_and_slash_name(weights):
    clip = C.load_clip(TINY, pretrained=str(weights / "tiny.safetensors"))
    assert clip.name == TINY
    with pytest.raises(ValueError, match="unknown open_clip architecture"):
        C.load_clip("ViT-Q/99", pretrained=str(weights / "tiny.safetensors"))


@pytest.mark.slow
def test_load_device_dtype_and_cache(weights):
    a = C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.safetensors")
    assert C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.safetensors") is a
    b = C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.safetensors", dtype=torch.float64)
    assert b is not a and b.dtype == torch.float64 and a.dtype == torch.float32
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64) * 2 - 1
    assert b.encode_image(x).dtype == torch.float64
    assert torch.allclose(b.encode_image(x).float(), a.encode_image(x.float()), atol=1e-5)
    c = C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.bin")
    assert c is not a
    C.clear_clip_cache()
    assert C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.safetensors") is not a


@pytest.mark.slow
def test_cache_keeps_the_most_recently_used_models(weights):
    C.clear_clip_cache()
    assert C.MAX_CACHED_MODELS == 2
    a = C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.safetensors")
    b = C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.bin")
    assert C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.safetensors") is a  # a is now the most recent
    c = C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.safetensors", dtype=torch.float64)  # evicts b
    assert C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.safetensors") is a
    assert C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.safetensors", dtype=torch.float64) is c
    assert C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.bin") is not b
    C.clear_clip_cache()

def test_load_inside_inference_mode(weights):
    """ComfyUI runs nodes under inference_mode; the model and text embeddings must still serve optimisations."""
    with torch.inference_mode():
        clip = C.load_clip(TINY, model_dirs=[weights], pretrained="tiny.safetensors")
        text = clip.encode_text("smile")
    assert not any(p.is_inference() for p in clip.model.parameters())
    assert not text.is_inference()
    x = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_(True)
    C.clip_distance(clip.encode_image(x), text).sum().backward()
    assert x.grad.abs().sum() > 0


def _save_state(path, state):
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


def test_wrong_architecture_file(tiny, tmp_path):
    wide = C.random_clip(TINY + "-wide").model.state_dict()
    _save_state(tmp_path / "wide.safetensors", wide)
    with pytest.raises(CheckpointError) as e:
        C.load_clip(TINY, model_dirs=[tmp_path], pretrained="wide.safetensors")
    msg = str(e.value)
    assert "wide.safetensors" in msg and TINY in msg and "wrong shapes" in msg and "text_projection [32, 48]" in msg


def test_missing_and_unexpected_keys(tiny, tmp_path):
    state = dict(tiny.model.state_dict())
    del state["ln_final.weight"]
    state["extra.weight"] = torch.zeros(3)
    _save_state(tmp_path / "broken.bin", state)
    with pytest.raises(CheckpointError, match=r"broken\.bin.*missing ln_final\.weight; unexpected extra\.weight"):
        C.load_clip(TINY, model_dirs=[tmp_path], pretrained="broken.bin")


def test_ddp_prefix_and_wrapped_state(tiny, tmp_path):
    state = {"state_dict": {f"module.{k}": v for k, v in tiny.model.state_dict().items()}, "epoch": 3}
    torch.save(state, tmp_path / "ddp.pt")
    clip = C.load_clip(TINY, model_dirs=[tmp_path], pretrained="ddp.pt")
    assert torch.equal(clip.model.ln_final.weight, tiny.model.ln_final.weight)


def test_transformers_clip_file_is_named(tmp_path):
    _save_state(tmp_path / "clip_l.safetensors", {"text_model.embeddings.token_embedding.weight": torch.zeros(4, 2)})
    with pytest.raises(CheckpointError, match="Hugging Face transformers CLIP"):
        C.load_clip(TINY, model_dirs=[tmp_path], pretrained="clip_l.safetensors")


from forge import CODE_RAN as _ran, CodeRunningPayload as _Evil  # noqa: E402


def test_pickled_code_is_not_run(tmp_path):
    torch.save({"x": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read CLIP weights"):
        C.load_clip(TINY, model_dirs=[tmp_path], pretrained="evil.pt")
    assert _ran == []


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_torchscript_archive_refused(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "ViT-B-32.pt"))
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        C.load_clip(TINY, model_dirs=[tmp_path], pretrained="ViT-B-32.pt")


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(MissingWeightsError) as e:
        C.load_clip(TINY, model_dirs=[tmp_path], pretrained="nothere.safetensors")
    assert "nothere.safetensors" in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(ValueError, match="no published weights"):
        C.load_clip(TINY, model_dirs=[tmp_path])
    with pytest.raises(ValueError, match="unknown pretrained tag 'nope'.*openai"):
        C.load_clip("ViT-B-32", model_dirs=[tmp_path], pretrained="nope")
    with pytest.raises(ValueError, match="pretrained must be None"):
        C.load_clip("hf-hub:timm/vit_base_patch32_clip_224.openai", pretrained="openai")


def test_offline_missing_weights_message(tmp_path):
    """The ViT-B/32 StyleCLIP uses: offline, the error says which file to save where (and builds nothing)."""
    with pytest.raises(MissingWeightsError) as e:
        C.load_clip("ViT-B/32", model_dirs=[tmp_path / "clip", tmp_path / "text_encoders"])
    msg = str(e.value)
    assert "ViT-B-32-openai.safetensors" in msg
    assert "https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors" \
        in msg
    assert str(tmp_path / "clip") in msg and str(tmp_path / "text_encoders") in msg and "not reachable" in msg
    with pytest.raises(MissingWeightsError, match="ViT-B-32-openai.safetensors"):
        C.load_clip("hf-hub:timm/vit_base_patch32_clip_224.openai", model_dirs=[tmp_path])


@pytest.fixture()
def tiny_tag(monkeypatch):
    """Pretend open_clip publishes the tiny architecture as tag 'sgs' on the Hub (trained with QuickGELU)."""
    cfg = {"url": "", "hf_hub": "sgs/tiny-clip/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
           "interpolation": "bicubic", "resize_mode": "shortest", "quick_gelu": True}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY, {"sgs": cfg})
    return cfg


def _quick_gelu(clip) -> bool:
    return isinstance(clip.model.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)


def test_tag_file_names_in_folders(tiny, tiny_tag, tmp_path):
    state = tiny.model.state_dict()
    _save_state(tmp_path / f"{TINY}-sgs.safetensors", state)
    clip = C.load_clip(TINY, model_dirs=[tmp_path], pretrained="sgs")
    assert clip.source.endswith(f"{TINY}-sgs.safetensors")
    assert _quick_gelu(clip) and not _quick_gelu(tiny)
    assert clip.mean == (0.5, 0.5, 0.5) and clip.std == (0.25, 0.25, 0.25)
    # A Hub folder as downloaded, found from the Hub name
    hub = tmp_path / "hub"
    (hub / "tiny-clip").mkdir(parents=True)
    _save_state(hub / "tiny-clip" / "open_clip_model.safetensors", state)
    clip = C.load_clip("hf-hub:sgs/tiny-clip", model_dirs=[hub])
    assert clip.source == str((hub / "tiny-clip" / "open_clip_model.safetensors").resolve()) and _quick_gelu(clip)
    with pytest.raises(MissingWeightsError, match=f"{TINY}-sgs.safetensors"):
        C.load_clip(TINY, model_dirs=[tmp_path / "nowhere"], pretrained="sgs")


def test_download_when_online(tiny, tiny_tag, tmp_path, monkeypatch):
    got = tmp_path / "cache" / "open_clip_model.safetensors"
    got.parent.mkdir()
    _save_state(got, tiny.model.state_dict())
    asked = []
    monkeypatch.setattr(C, "_hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", lambda cfg, **kw: asked.append(cfg) or str(got))
    clip = C.load_clip(TINY, model_dirs=[tmp_path / "models"], pretrained="sgs")
    assert asked == [tiny_tag] and clip.source == str(got.resolve())

    def fail(cfg, **kw):
        raise OSError("connection reset")

    C.clear_clip_cache()
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", fail)
    with pytest.raises(MissingWeightsError, match="OSError: connection reset"):
        C.load_clip(TINY, model_dirs=[tmp_path / "models"], pretrained="sgs")


@pytest.mark.slow
def test_core_imports_without_open_clip(monkeypatch):
    code = "import sys; import core.models.clip; assert 'open_clip' not in sys.modules, 'imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(C.Path(C.__file__).parents[2]))
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(MissingDependencyError, match="pip install open_clip_torch"):
        C.load_clip(TINY)


# ------------------------------------------------------------------------------------------------
# Text


def test_templates_are_clips():
    assert len(C.IMAGENET_TEMPLATES) == 80 == len(set(C.IMAGENET_TEMPLATES))
    assert list(C.IMAGENET_TEMPLATES) == [t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES]


@pytest.mark.parametrize("arch", [TINY, TINY + "-eos"])
@pytest.mark.parametrize("group_by_length", [True, False])
def test_truncated_text_equals_full_pass(arch, group_by_length):
    clip = C.random_clip(arch, seed=1)
    assert clip.text_tower is not None
    long_prompt = " ".join(["many words"] * 60)  # the tokenizer cuts it at 77 with end-of-text last
    texts = [t.replace("{}", p) for p in PROMPTS + [long_prompt, ""] for t in TEMPLATES]
    tokens = clip.tokenize(texts)
    assert int(tokens.argmax(-1).max()) == 76 and int(tokens.argmax(-1).min()) < 10
    with torch.no_grad():
        full = clip.model.encode_text(tokens)
        cut = clip.encode_tokens(tokens, group_by_length=group_by_length)
        short = clip.encode_tokens(tokens[:8], group_by_length=group_by_length)  # no long prompt: real cut
    assert cut.shape == full.shape
    assert (cut - full).abs().max() <= 1e-5
    assert (short - full[:8]).abs().max() <= 1e-5
    assert (full[0] - full[1]).abs().max() > 1e-3  # the texts do differ


def test_template_average(tiny):
    emb = tiny.encode_text(PROMPTS[:2], TEMPLATES)
    assert emb.shape == (2, 32) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-6)
    with torch.no_grad():
        full = F.normalize(tiny.model.encode_text(tiny.tokenize([t.replace("{}", PROMPTS[1]) for t in TEMPLATES])),
                           dim=-1)
    assert torch.allclose(emb[1], F.normalize(full.mean(0), dim=0), atol=1e-5)
    plain = tiny.encode_text(PROMPTS[1])
    assert plain.shape == (1, 32) and torch.allclose(plain[0], full[1], atol=1e-5)  # template "{}"
    assert not torch.allclose(plain[0], emb[1], atol=1e-3)
    with pytest.raises(ValueError, match="templates"):
        tiny.encode_text("x", ["no placeholder"])
    with pytest.raises(ValueError, match="prompt"):
        tiny.encode_text([])


def test_text_cache(monkeypatch):
    clip = C.random_clip(TINY, seed=2)
    calls = []
    encode = clip.encode_tokens
    monkeypatch.setattr(clip, "encode_tokens", lambda tokens, **kw: calls.append(len(tokens)) or encode(tokens, **kw))
    a = clip.encode_text(["smile", "frown"], C.IMAGENET_TEMPLATES)
    assert calls == [160]
    b = clip.encode_text(["frown", "smile", "frown"], C.IMAGENET_TEMPLATES)
    assert calls == [160] and torch.equal(b[1], a[0]) and torch.equal(b[0], a[1]) and torch.equal(b[2], a[1])
    b.zero_()  # callers get their own tensor
    assert torch.equal(clip.encode_text("smile", C.IMAGENET_TEMPLATES)[0], a[0])
    clip.encode_text("smile")  # another template set is another entry
    assert calls == [160, 1]


def test_fallback_for_non_causal_pooling():
    clip = C.random_clip(TINY + "-last")
    assert clip.text_tower is None
    tokens = clip.tokenize(PROMPTS)
    with torch.no_grad():
        assert torch.equal(clip.encode_tokens(tokens), clip.model.encode_text(tokens))
    assert clip.encode_text(PROMPTS, TEMPLATES).shape == (len(PROMPTS), 32)


# ------------------------------------------------------------------------------------------------
# Images


def test_encode_image_differentiable(tiny):
    x = (torch.rand(2, 3, 100, 100) * 2 - 1).requires_grad_(True)
    emb = tiny.encode_image(x)
    assert emb.shape == (2, 32) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    d = C.clip_distance(emb, tiny.encode_text("smile"))
    d.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert x.grad[1].abs().sum() > 0  # each image gets its own gradient


def test_preprocess_gradcheck():
    clip = C.random_clip(TINY, dtype=torch.float64)
    clip.image_size = (5, 5)  # small enough for float64 gradcheck; not a cached model
    x = (torch.rand(1, 3, 10, 12, dtype=torch.float64) * 2 - 1).requires_grad_(True)  # shrinks: antialiased
    assert torch.autograd.gradcheck(lambda t: clip.preprocess(t), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda t: clip.preprocess(t, resample="area"), (x,), fast_mode=True)


def test_preprocess_matches_clip_transform(tiny):
    """Resize shorter side (bicubic, antialiased) + centre crop + mean/std, as open_clip's transform on tensors."""
    tvf = pytest.importorskip("torchvision.transforms.functional")
    from torchvision.transforms import InterpolationMode

    x = torch.rand(2, 3, 96, 150) * 2 - 1
    ours = tiny.preprocess(x)
    assert ours.shape == (2, 3, 64, 64)
    ref = tvf.resize((x + 1) / 2, 64, interpolation=InterpolationMode.BICUBIC, antialias=True)
    ref = tvf.normalize(tvf.center_crop(ref, [64, 64]), tiny.mean, tiny.std)
    assert torch.allclose(ours, ref, atol=1e-5)
    raw = tiny.preprocess(x, normalize=False)
    ref_raw = tvf.center_crop(tvf.resize(x, 64, interpolation=InterpolationMode.BICUBIC, antialias=True), [64, 64])
    assert torch.allclose(raw, ref_raw, atol=1e-5)


def test_normalisation_on_off_differ(tiny):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    on, off = tiny.encode_image(x), tiny.encode_image(x, normalize=False)
    assert (on - off).abs().max() > 1e-3
    with torch.no_grad():
        assert torch.allclose(off, F.normalize(tiny.model.encode_image(x), dim=-1), atol=1e-6)  # the reference bug
        mean = torch.tensor(tiny.mean).reshape(1, 3, 1, 1)
        std = torch.tensor(tiny.std).reshape(1, 3, 1, 1)
        assert torch.allclose(on, F.normalize(tiny.model.encode_image(((x + 1) / 2 - mean) / std), dim=-1), atol=1e-6)
    area = tiny.encode_image(torch.rand(1, 3, 256, 256) * 2 - 1, resample="area")
    assert area.shape == (1, 32)
    with pytest.raises(ValueError, match="resample"):
        tiny.encode_image(x, resample="lanczos")
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        tiny.encode_image(x[:, :1])


def test_deterministic(tiny):
    again = C.random_clip(TINY, seed=0)
    for k, v in tiny.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v), k
    assert not torch.equal(C.random_clip(TINY, seed=5).model.text_projection, tiny.model.text_projection)
    x = torch.rand(2, 3, 80, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.equal(tiny.encode_image(x), again.encode_image(x))
    assert torch.equal(tiny.encode_text(PROMPTS, TEMPLATES), again.encode_text(PROMPTS, TEMPLATES))


def test_clip_distance():
    a = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    t = torch.randn(8, generator=torch.Generator().manual_seed(1))
    d = C.clip_distance(a, t)
    assert d.shape == (3,) and torch.allclose(d, 1 - F.cosine_similarity(a, t[None], dim=-1), atol=1e-6)
    assert torch.allclose(C.clip_distance(a, a), torch.zeros(3), atol=1e-6)
    assert torch.allclose(C.clip_distance(a, t[None]), d)
    with pytest.raises(ValueError, match="text_emb"):
        C.clip_distance(a, torch.randn(4))



def test_text_embedding_cache_is_bounded(tiny, monkeypatch):
    monkeypatch.setattr(C, "MAX_CACHED_TEXTS", 2)
    first = tiny.encode_text(["a", "b", "c"], templates=None)   # more than fit: still every result, then trimmed
    assert len(tiny._text_cache) == 2 and [k[0] for k in tiny._text_cache] == ["b", "c"]
    again = tiny.encode_text(["a", "b", "c"], templates=None)
    assert torch.allclose(first, again, atol=1e-6)
