"""Weight-Shift Edit nodes headless (tiny generator, tiny random CLIP): schemas, Train Weight Shift (paper mode with
one latent, batch mode, live preview, Stop keeps the shift so far, Finish now), Save / Load (lists both folders,
imports a NaviGAN .pt for the connected generator), Apply Weight Shifts (k = 0 is the base, stacking), the k sweep
and the layer scan, and the errors a user can cause."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

import core  # noqa: E402
from conftest import tiny_clip, TINY_CLIP_CFG, tiny_generator  # noqa: E402

TINY = "SGS-WeightShift-Tiny"
TINY_CFG = TINY_CLIP_CFG
NODES = ("SGS_TrainWeightShift", "SGS_SaveWeightShift", "SGS_LoadWeightShift", "SGS_ApplyWeightShifts",
         "SGS_WeightShiftSweep", "SGS_WeightShiftLayerScan")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip(tmp_path_factory, TINY, TINY_CFG)


@pytest.fixture(scope="module")
def G():
    return tiny_generator("stylegan2")


@pytest.fixture()
def env(pack, monkeypatch):
    """(the pack's nodes.weight_shift, nodes.optimize, comfy_env, previews, act): `act(k, what)` makes the k-th
    progress update press "Finish now" ('finish') or Stop ('stop'); `previews` records whether each update showed
    an image."""
    ws = sys.modules[f"{pack.__name__}.nodes.weight_shift"]
    opt = sys.modules[f"{pack.__name__}.nodes.optimize"]
    cenv = sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    monkeypatch.setattr(cenv, "free_memory", lambda: None)
    monkeypatch.setattr(cenv, "send_event", lambda event, data: None)
    previews, calls, plan = [], [], {}
    real_update = cenv.Progress.update

    def update(self, done, preview=None, losses=None):
        previews.append(preview is not None)
        real_update(self, done, preview, losses)

    def hook():
        calls.append(1)
        if plan and len(calls) == plan["k"]:
            if plan["what"] == "finish":
                opt.request_finish(None)   # outside ComfyUI the running node's id is None
            else:
                raise cenv.StandInInterrupt()

    monkeypatch.setattr(cenv.Progress, "update", update)
    monkeypatch.setattr(cenv, "throw_if_interrupted", hook)

    def act(k, what):
        calls.clear()
        plan.update(k=k, what=what)

    return ws, opt, cenv, previews, act


def node(pack, name):
    return pack.NODE_CLASS_MAPPINGS[name]()


def snapshot(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def unchanged(G, before) -> bool:
    return all(torch.equal(v, before[k]) for k, v in G.state_dict().items())


def train(pack, G, clip, steps=3, **kw):
    kw = {"neutral_text": "a face", "layer": "b16.conv1", "steps": steps, "lambda_l2": 0.05, **kw}
    with torch.inference_mode():   # as ComfyUI runs nodes
        return node(pack, "SGS_TrainWeightShift").train(G, clip, kw.pop("text", "a face with a big nose"), **kw)


def test_schemas_have_descriptions_tooltips_and_the_preset_last(pack):
    registry = sys.modules[f"{pack.__name__}.nodes.registry"]
    for name in NODES:
        cls = pack.NODE_CLASS_MAPPINGS[name]
        assert cls.DESCRIPTION and cls.CATEGORY.startswith("StyleGAN/"), name
        assert registry.NODES[name].display_name.endswith(" (StyleGAN)")
        spec = cls.INPUT_TYPES()
        for group in ("required", "optional"):
            for inp, entry in spec.get(group, {}).items():
                assert entry[1].get("tooltip"), f"{name}.{inp}"
        assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES), name
    assert {n for n in NODES if registry.NODES[n].optimises} == {"SGS_TrainWeightShift", "SGS_WeightShiftLayerScan"}
    assert registry.NODES["SGS_WeightShiftSweep"].frames
    spec = pack.NODE_CLASS_MAPPINGS["SGS_TrainWeightShift"].INPUT_TYPES()
    assert list(spec["optional"])[-1] == "preset" and spec["required"]["layer"][0] == "STRING"
    assert pack.NODE_CLASS_MAPPINGS["SGS_TrainWeightShift"].RETURN_TYPES == ("SGS_WEIGHT_SHIFT", "IMAGE", "STRING")
    apply = pack.NODE_CLASS_MAPPINGS["SGS_ApplyWeightShifts"].INPUT_TYPES()["optional"]
    assert [k for k in apply if k.startswith("shift_")] == ["shift_1", "shift_2", "shift_3", "shift_4"]
    assert all(apply[f"k_{i}"][1]["min"] == -5 and apply[f"k_{i}"][1]["max"] == 5 for i in range(1, 5))


@pytest.mark.slow
def test_train_on_one_latent_outputs_a_shift_of_that_layer(pack, env, G, clip):
    previews = env[3]
    before = snapshot(G)
    latent = core.sample_latents(G, [5], space="w+")
    out = train(pack, G, clip, steps=4, latent=latent, preview_every=2)
    shift, image, report = out["result"]
    assert list(shift.tensors) == ["synthesis.b16.conv1.weight"]
    assert shift.tensors["synthesis.b16.conv1.weight"].shape == G.synthesis.b16.conv1.weight.shape
    assert shift.norm() > 0 and shift.metadata.get("prompt") == "a face with a big nose"
    assert image.shape == (1, 32, 64, 3) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert out["ui"]["text"] == [report] and "b16.conv1" in report
    assert previews.count(True) >= 2   # every 2 steps and the last
    assert unchanged(G, before)


@pytest.mark.slow
def test_train_without_latent_samples_a_batch(pack, env, G, clip):
    shift, image, _ = train(pack, G, clip, steps=2, batch=3, loss="global", neutral_text="")["result"]
    assert image.shape[0] == 3 and shift.layers == ["b16.conv1"]


@pytest.mark.slow
def test_stop_saves_the_shift_so_far(pack, env, G, clip, tmp_path):
    ws, _, cenv, _, act = env
    before = snapshot(G)
    act(3, "stop")
    with pytest.raises(cenv.StandInInterrupt):
        train(pack, G, clip, steps=50)
    saved = sorted((tmp_path / "output" / "weight_shifts").glob("*_stopped_*.safetensors"))
    assert len(saved) == 1 and saved[0].name.startswith("a_face_with_a_big_nose_stopped_")
    names = ws.shift_files()
    assert f"{saved[0].name} [output]" in names
    shift = node(pack, "SGS_LoadWeightShift").load(f"{saved[0].name} [output]", G)["result"][0]
    assert shift.layers == ["b16.conv1"] and shift.norm() > 0 and int(shift.metadata["steps"]) >= 2
    assert unchanged(G, before)


def test_finish_now_returns_the_shift_so_far(pack, env, G, clip):
    *_, act = env
    act(2, "finish")
    shift, _, report = train(pack, G, clip, steps=50)["result"]
    assert "finished early at step 2 of 50" in report and shift.norm() > 0


@pytest.mark.slow
def test_save_load_and_apply(pack, env, G, clip, tmp_path):
    shift = train(pack, G, clip, steps=2)["result"][0]
    path = node(pack, "SGS_SaveWeightShift").save(shift, "weight_shifts/nose")["result"][0]
    assert path.endswith("nose_00001_.safetensors")
    models = tmp_path / "models" / "weight_shifts"
    models.mkdir(parents=True)
    (models / "mine.safetensors").write_bytes(Path(path).read_bytes())
    listed = pack.NODE_CLASS_MAPPINGS["SGS_LoadWeightShift"].INPUT_TYPES()["required"]["shift_file"][0]
    assert listed == ["mine.safetensors", "nose_00001_.safetensors [output]"]
    load = node(pack, "SGS_LoadWeightShift")
    assert pack.NODE_CLASS_MAPPINGS["SGS_LoadWeightShift"].VALIDATE_INPUTS("mine.safetensors") is True
    assert "not found" in pack.NODE_CLASS_MAPPINGS["SGS_LoadWeightShift"].VALIDATE_INPUTS("gone.safetensors")
    loaded, info = load.load("mine.safetensors")["result"]
    assert torch.equal(loaded.tensors["synthesis.b16.conv1.weight"], shift.tensors["synthesis.b16.conv1.weight"])
    assert "recommended k -3 .. 3" in info
    with pytest.raises(ValueError, match="was made for tiny-stylegan2 .* has other weights"):
        load.load("mine.safetensors", tiny_generator("stylegan2", seed=1))   # another generator's weights

    apply = node(pack, "SGS_ApplyWeightShifts")
    latent = core.sample_latents(G, [1, 2])
    base = core.synthesize(G, latent)
    G0, info0 = apply.apply(G, shift_1=loaded, k_1=0.0)["result"]
    assert torch.equal(core.synthesize(G0, latent), base) and "left out" in info0
    G1 = apply.apply(G, shift_1=loaded, k_1=1.5)["result"][0]
    assert not torch.equal(core.synthesize(G1, latent), base)
    # Two inputs of one shift, and a chain of Apply nodes, add up: 0.5 + 1.0 = 1.5.
    G2 = apply.apply(G, shift_1=loaded, k_1=0.5, shift_3=shift, k_3=1.0)["result"][0]
    G3 = apply.apply(apply.apply(G, shift_2=loaded, k_2=0.5)["result"][0], shift_1=shift, k_1=1.0)["result"][0]
    want = core.synthesize(G1, latent)
    torch.testing.assert_close(core.synthesize(G2, latent), want)
    torch.testing.assert_close(core.synthesize(G3, latent), want)
    same, text = apply.apply(G)["result"]
    assert same is G and "no shift connected" in text


def test_load_refuses_bad_names_and_needs_a_generator_for_pt(pack, env, G, tmp_path):
    ws, *_ = env
    cls = pack.NODE_CLASS_MAPPINGS["SGS_LoadWeightShift"]
    with pytest.raises(ValueError, match="must be a file name inside models/weight_shifts"):
        ws.shift_path("../secret.safetensors")
    models = tmp_path / "models" / "weight_shifts"
    models.mkdir(parents=True)
    conv = G.synthesis.b16.conv1.weight
    x = torch.randn(1, 1, *conv.shape, generator=torch.Generator().manual_seed(0))
    torch.save({"layer_ix": 3, "shift": x}, models / "nose_size.pt")  # NaviGAN: rosinality convs[3] = b16.conv1
    assert "nose_size.pt" in cls.INPUT_TYPES()["required"]["shift_file"][0]
    with pytest.raises(ValueError, match="connect the generator it was made for"):
        cls().load("nose_size.pt")
    shift, info = cls().load("nose_size.pt", G)["result"]
    assert shift.layers == ["b16.conv1"] and torch.equal(shift.tensors["synthesis.b16.conv1.weight"], x[0, 0])
    assert "recommended k -1 .. 1" in info


@pytest.mark.slow
def test_sweep_renders_frames_per_latent(pack, env, G, clip):
    shift = train(pack, G, clip, steps=2)["result"][0]
    sweep = node(pack, "SGS_WeightShiftSweep")
    latent = core.sample_latents(G, [1, 2])
    images, report = sweep.sweep(G, latent, shift, -3.0, 3.0, 7)["result"]
    assert images.shape == (7 * 2, 32, 32, 3) and "k -3 .. 3 in 7 frames" in report
    # k = 0 (the middle of -3 .. 3) is the base generator's image, for each latent.
    convert = sys.modules[f"{pack.__name__}.nodes.convert"]
    base = convert.generator_to_comfy(core.synthesize(G, latent))
    assert sum(any(torch.equal(images[i], b) for i in range(images.shape[0])) for b in base) == 2
    # On a generator that already has a shift applied, the applied one stays and this one is swept on top.
    shifted = node(pack, "SGS_ApplyWeightShifts").apply(G, shift_1=shift, k_1=2.0)["result"][0]
    one = core.sample_latents(G, [1])
    stacked = sweep.sweep(shifted, one, shift, 0.0, 0.0, 1)["result"][0]
    plain = sweep.sweep(G, one, shift, 2.0, 2.0, 1)["result"][0]
    torch.testing.assert_close(stacked, plain, atol=1 / 255, rtol=0)


@pytest.mark.slow
def test_layer_scan_returns_a_sheet_and_the_best_layer(pack, env, G, clip):
    scan = node(pack, "SGS_WeightShiftLayerScan")
    with torch.inference_mode():
        sheet, best, report = scan.scan(G, clip, "a face with a big nose", "a face", "b8.conv1, b16.conv1", 2,
                                        0.05)["result"]
    assert sheet.ndim == 4 and sheet.shape[0] == 1 and sheet.shape[-1] == 3
    assert best in ("b8.conv1", "b16.conv1") and best in report


def test_errors_a_user_can_cause(pack, env, G, clip):
    with pytest.raises(ValueError, match="text is empty"):
        train(pack, G, clip, text="  ")
    with pytest.raises(ValueError, match="needs a neutral_text"):
        train(pack, G, clip, neutral_text=" ")
    with pytest.raises(ValueError, match="no convolution layer 'b17.conv9'; choose one of: b4.conv1, b8.conv0"):
        train(pack, G, clip, layer="b17.conv9")
    with pytest.raises(ValueError, match="no ArcFace is connected"):
        train(pack, G, clip, lambda_id=0.1)
    with pytest.raises(ValueError, match="no convolution layer 'nope'"):
        node(pack, "SGS_WeightShiftLayerScan").scan(G, clip, "big nose", "a face", "b8.conv1, nope", 1, 0.05)
    narrow = tiny_generator("stylegan2", w_dim=8, z_dim=8)
    with pytest.raises(ValueError, match="latent was made for"):
        train(pack, G, clip, latent=core.sample_latents(narrow, [0], space="w+"))


def test_load_imports_a_nada_checkpoint_for_the_connected_generator(pack, env, tmp_path):
    """A .pt that is not a NaviGAN shift is read as a StyleGAN-NADA checkpoint: NADA - base, checked on load."""
    import forge

    fx = forge.load_fixture("rosinality")
    base = core.load_generator(forge.write_rosinality_pt(fx, tmp_path / "base.pt"))
    models = tmp_path / "models" / "weight_shifts"
    models.mkdir(parents=True)
    forge.write_nada_checkpoint(models / "000300.pt", forge.nada_state(fx, {"convs.3.conv.weight": 0.1}))
    shift, info = node(pack, "SGS_LoadWeightShift").load("000300.pt", base)["result"]
    assert list(shift.tensors) == ["synthesis.b16.conv1.weight"] and shift.metadata["source"] == "nada"
    assert "recommended k 0 .. 1" in info
    other = core.load_generator(forge.write_rosinality_pt(fx, tmp_path / "other.pt", g_ema={
        **fx.net, "style.1.weight": fx.net["style.1.weight"] + 1}))
    with pytest.raises(ValueError, match="mapping network differs"):
        node(pack, "SGS_LoadWeightShift").load("000300.pt", other)
