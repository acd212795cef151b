"""Presets and the time estimate: each preset resolves to the documented step counts per method, every optimising
node offers the `preset` combo without shifting the widgets of graphs saved before it, a graph without `preset` keeps
its old meaning (the reference counts), and the estimate route learns the seconds per step from a recorded run."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from core.edits import clip_optimize as SC
from core.edits import global_directions as GD
from core.edits import inversion as I
from core.edits import latent_mapper as M
from core.edits import presets as PR

P = pytest.importorskip("core.losses.perceptual")

# The documented table (README / tooltips): method -> preset -> values.
DOCUMENTED = {
    ("inversion", "image2stylegan"): ({"num_steps": 100}, {"num_steps": 500}, {"num_steps": 1500}),
    ("inversion", "projector"): ({"num_steps": 100}, {"num_steps": 300}, {"num_steps": 1000}),
    ("inversion", "ii2s"): ({"num_steps": 100}, {"num_steps": 400}, {"num_steps": 1300}),
    ("inversion", "pti"): ({"num_steps": 100, "tune_steps": 50}, {"num_steps": 200, "tune_steps": 150},
                           {"num_steps": 450, "tune_steps": 350}),
    ("clip_optimize", ""): ({"num_steps": 50}, {"num_steps": 120}, {"num_steps": 300}),
    ("latent_mapper", ""): ({"num_steps": 100}, {"num_steps": 1000}, {"num_steps": 50_000}),
    ("global_directions", ""): ({"num_images": 2, "num_samples": 1000}, {"num_images": 10, "num_samples": 10_000},
                                {"num_images": 100, "num_samples": 100_000}),
    ("weight_shift", ""): ({"steps": 30}, {"steps": 100}, {"steps": 200}),
    ("weight_shift_scan", ""): ({"steps": 5}, {"steps": 10}, {"steps": 20}),
    ("neural_style", "gatys2016"): ({"steps": 100}, {"steps": 300}, {"steps": 1000}),
    ("neural_style", "tutorial"): ({"steps": 50}, {"steps": 150}, {"steps": 300}),
    ("neural_style", "multiscale"): ({"steps": 50}, {"steps": 200}, {"steps": 500}),
    ("inversion", "ii2s+fs"): ({"num_steps": 100, "tune_steps": 50}, {"num_steps": 400, "tune_steps": 100},
                               {"num_steps": 1100, "tune_steps": 250}),
    ("fs", ""): ({"num_steps": 50}, {"num_steps": 100}, {"num_steps": 250}),
    ("segment_composite", ""): (
        {"w_steps": 250, "fs_steps": 60, "align_steps1": 40, "align_steps2": 30, "blend_steps": 100,
         "target_fill_steps": 20},
        {"w_steps": 550, "fs_steps": 125, "align_steps1": 70, "align_steps2": 50, "blend_steps": 200,
         "target_fill_steps": 40},
        {"w_steps": 1100, "fs_steps": 250, "align_steps1": 140, "align_steps2": 100, "blend_steps": 400,
         "target_fill_steps": 80}),
}
OPTIMISING = {"SGS_InvertImage": "inversion", "SGS_CLIPLatentOptimize": "clip_optimize",
              "SGS_TrainLatentMapper": "latent_mapper", "SGS_ComputeGlobalDirections": "global_directions",
              "SGS_TrainWeightShift": "weight_shift", "SGS_WeightShiftLayerScan": "weight_shift_scan",
              "SGS_NeuralStyle": "neural_style", "SGS_SegmentComposite": "segment_composite"}


@pytest.mark.parametrize("kind, method", list(DOCUMENTED))
def test_presets_resolve_to_the_documented_counts(kind, method):
    for name, values in zip(PR.PRESETS, DOCUMENTED[kind, method]):
        assert dict(PR.get_preset(kind, method, name).values) == values
    quick, balanced, reference = (PR.get_preset(kind, method, n) for n in PR.PRESETS)
    key = next(iter(quick.values))
    assert quick.values[key] < balanced.values[key] < reference.values[key]


def test_reference_is_each_methods_reference_configuration():
    for m, cfg in I.METHOD_DEFAULTS.items():
        ref = PR.get_preset("inversion", m, "reference").values
        assert ref["num_steps"] == cfg.num_steps and ref.get("tune_steps", 0) == cfg.tune_steps
    assert PR.get_preset("clip_optimize", "", "reference").values["num_steps"] == SC.DEFAULTS.num_steps
    assert PR.get_preset("latent_mapper", "", "reference").values["num_steps"] == M.DEFAULTS.num_steps
    ref = PR.get_preset("global_directions", "", "reference").values
    assert (ref["num_images"], ref["num_samples"]) == (GD.DEFAULTS.num_images, GD.DEFAULTS.num_samples)


def test_overrides_and_errors():
    assert PR.resolve("inversion", "pti", "quick", num_steps=0, tune_steps=7) == {"num_steps": 100, "tune_steps": 7}
    assert PR.resolve("clip_optimize", "", "balanced", num_steps=33) == {"num_steps": 33}
    assert PR.get_preset("inversion", "pti", "quick").steps == 150
    with pytest.raises(ValueError, match="preset must be one of quick, balanced, reference"):
        PR.get_preset("inversion", "ii2s", "fast")
    with pytest.raises(ValueError, match="has no method 'nope'"):
        PR.get_preset("inversion", "nope", "quick")
    with pytest.raises(ValueError, match="no presets for 'x'"):
        PR.get_preset("x", "", "quick")


def _optimising(pack):
    registry = sys.modules[f"{pack.__name__}.nodes.registry"]
    return {e.id: e.cls for e in registry.NODES.values() if e.optimises}


def test_preset_input_of_every_optimising_node(pack):
    nodes = _optimising(pack)
    assert set(nodes) == set(OPTIMISING)
    for node_id, cls in nodes.items():
        spec = cls.INPUT_TYPES()
        optional = list(spec["optional"])
        # Last of all inputs: a workflow saved before presets keeps every widget value in its place.
        assert optional[-1] == "preset" and "preset" not in spec["required"], node_id
        choices, opts = spec["optional"]["preset"]
        assert choices == ["quick", "balanced", "reference"] and opts["default"] == "balanced"
        kind = OPTIMISING[node_id]
        for (k, method), values in DOCUMENTED.items():
            if k == kind:
                first = next(values[0][k] for k in ("num_steps", "num_images", "steps", "w_steps") if k in values[0])
                assert f"{first}" in opts["tooltip"]
                if method:
                    assert method in opts["tooltip"]
        assert cls.PRESET_KIND == kind
        # The step inputs are overrides: 0 = the preset's count.
        for name in ("num_steps", "num_images", "num_samples", "tune_steps", "steps"):
            for section in ("required", "optional"):
                if name in spec[section]:
                    _, o = spec[section][name]
                    assert o["default"] == 0 and o["min"] == 0 and "preset" in o["tooltip"], (node_id, name)


def test_a_graph_without_preset_keeps_the_reference_meaning(pack):
    opt = sys.modules[f"{pack.__name__}.nodes.optimize"]
    assert opt.resolve_preset("inversion", "ii2s", None, num_steps=0) == {"num_steps": 1300}
    assert opt.resolve_preset("inversion", "ii2s", "quick", num_steps=0) == {"num_steps": 100}
    assert opt.resolve_preset("latent_mapper", "", None, num_steps=50_000) == {"num_steps": 50_000}


@pytest.fixture()
def invert(pack, monkeypatch):
    nets = {"lpips_vgg": P.random_lpips("vgg", seed=0), "lpips_alex": P.random_lpips("alex", seed=1),
            "vgg16_features": P.random_vgg16_features(seed=2)}
    mod = sys.modules[f"{pack.__name__}.nodes.inversion"]
    monkeypatch.setattr(mod, "perceptual_nets", lambda method: {k: nets[k] for k in I.PERCEPTUAL_NEEDS[method]})
    monkeypatch.setattr(mod.comfy_env, "free_memory", lambda: None)
    return pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"]()


def test_the_node_runs_the_presets_count(pack, invert, G2, monkeypatch):
    presets = sys.modules[f"{pack.__name__}.core.edits.presets"]
    monkeypatch.setitem(presets._TABLE["inversion"]["image2stylegan"], "quick", {"num_steps": 3})
    target = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    report = invert.invert(G2, target, "image2stylegan", 0, 0, preset="quick")["result"][3]
    assert "image2stylegan: 3 steps" in report
    report = invert.invert(G2, target, "image2stylegan", 2, 0, preset="quick")["result"][3]
    assert "image2stylegan: 2 steps" in report   # a non-zero num_steps overrides the preset


def test_estimate_without_measurements(pack):
    opt = sys.modules[f"{pack.__name__}.nodes.optimize"]
    e = opt.estimate_route({"node": "SGS_InvertImage", "preset": "quick", "method": "ii2s", "resolution": "256"})
    assert e["steps"] == 100 and e["seconds"] is None
    assert "100 steps" in e["text"] and "after a first run" in e["text"] and "256 px" in e["text"]
    e = opt.estimate_route({"node": "SGS_InvertImage", "preset": "reference", "method": "", "resolution": ""})
    assert e["steps"] == I.METHOD_DEFAULTS[I.DEFAULT_METHOD].num_steps
    e = opt.estimate_route({"node": "SGS_ComputeGlobalDirections", "preset": "quick"})
    assert e["steps"] == 0 and "2 images per channel" in e["text"]
    with pytest.raises(ValueError, match="has no presets"):
        opt.estimate_route({"node": "SGS_Synthesize", "preset": "quick"})
    with pytest.raises(ValueError, match="missing \\?node="):
        opt.estimate_route({})
    with pytest.raises(ValueError, match="resolution must be a whole number"):
        opt.estimate_route({"node": "SGS_InvertImage", "resolution": "big"})
    with pytest.raises(ValueError, match="preset must be one of"):
        opt.estimate_route({"node": "SGS_InvertImage", "preset": "fast"})


def test_layer_scan_estimate_is_layers_times_the_presets_steps_per_layer(pack, monkeypatch):
    """The scan's progress counts steps x layers; its estimate must follow the preset's steps per layer (5 / 10 / 20),
    not repeat the last run's total."""
    opt = sys.modules[f"{pack.__name__}.nodes.optimize"]
    monkeypatch.setattr(opt.comfy_env, "torch_device", lambda choice="auto": torch.device("cpu"))
    # A quick scan of 7 layers (5 steps each) took 70 s: 2 s per step of one layer's training.
    state = opt.RunState("weight_shift_scan", "", "cpu", 32, total_units=7)
    opt._record_cost(state, [(0, 0.0), (35, 70.0)])
    quick = opt.estimate("SGS_WeightShiftLayerScan", "quick", "", 32)
    reference = opt.estimate("SGS_WeightShiftLayerScan", "reference", "", 32)
    assert quick["steps"] == reference["steps"] == 7
    assert quick["seconds"] == pytest.approx(7 * 5 * 2.0) and reference["seconds"] == pytest.approx(7 * 20 * 2.0)
    assert "7 layers" in quick["text"]


def test_estimate_learns_from_a_recorded_run(pack, invert, G2, monkeypatch):
    opt = sys.modules[f"{pack.__name__}.nodes.optimize"]
    cenv = opt.comfy_env
    monkeypatch.setattr(cenv, "torch_device", lambda choice="auto": torch.device("cpu"))
    ticks = iter(range(1000))
    monkeypatch.setattr(opt, "_clock", lambda: 2.0 * next(ticks))   # every step takes 2 s
    target = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    invert.invert(G2, target, "projector", 5, 0)
    path = cenv.step_costs_path()
    data = json.loads(path.read_text())
    record = data["records"]["inversion|projector|cpu|32"]
    assert math.isclose(record["seconds_per_unit"], 2.0) and record["runs"] == 1
    e = opt.estimate_route({"node": "SGS_InvertImage", "preset": "quick", "method": "projector",
                            "resolution": "32"})
    assert e == {"steps": 100, "seconds": 200.0, "text": "≈ 3 min on cpu at 32 px (100 steps)"}
    # Another resolution: scaled by the pixel count, and said so.
    e = opt.estimate_route({"node": "SGS_InvertImage", "preset": "quick", "method": "projector",
                            "resolution": "64"})
    assert e["seconds"] == 800.0 and "scaled from a run at 32 px" in e["text"]
    # No resolution given: the newest measured one.
    e = opt.estimate_route({"node": "SGS_InvertImage", "preset": "quick", "method": "projector"})
    assert e["seconds"] == 200.0 and "32 px" in e["text"]
    # Other methods have their own cost.
    assert opt.estimate("SGS_InvertImage", "quick", "ii2s", 32)["seconds"] is None
    # A new process reads the file.
    fresh = PR.StepCosts(path)
    assert fresh.estimate("inversion", "projector", "cpu", 32, 10)["seconds"] == 20.0


def test_step_costs_average_and_survive_a_damaged_file(tmp_path):
    path = tmp_path / "costs.json"
    costs = PR.StepCosts(path)
    costs.record("latent_mapper", "", "cpu", 64, 10.0, 10)
    costs.record("latent_mapper", "", "cpu", 64, 30.0, 10)     # half old, half new
    assert costs.estimate("latent_mapper", "", "cpu", 64, 100)["seconds"] == pytest.approx(200.0)
    assert costs.record("latent_mapper", "", "cpu", 64, float("nan"), 10) is None
    assert costs.record("latent_mapper", "", "cpu", 64, 1.0, 0) is None
    # Global directions: a step is a channel, its cost in proportion to the images per channel.
    costs.record("global_directions", "", "cpu", 64, 50.0, 100, units_per_step=5, total=1000)
    e = costs.estimate("global_directions", "", "cpu", 64, 0, units_per_step=10)
    assert e["steps"] == 1000 and e["seconds"] == pytest.approx(1000.0)
    path.write_text("{not json")
    assert PR.StepCosts(path).estimate("latent_mapper", "", "cpu", 64, 1)["seconds"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["costs.json"]   # atomic writes leave no temporary files


def test_format_seconds():
    assert [PR.format_seconds(s) for s in (0.2, 42, 150, 7200, 86400 * 3)] == ["1 s", "42 s", "2 min", "2.0 h",
                                                                               "3 days"]


def test_a_workflow_saved_before_presets_still_fits_and_gets_the_default(pack):
    from workflows import check_workflow, example_paths, load_workflow, object_info_from_pack, ui_to_api, \
        widget_inputs

    info = object_info_from_pack(pack)
    workflow = load_workflow(next(p for p in example_paths() if p.stem == "invert_and_edit"))
    node = next(n for n in workflow["nodes"] if n["type"] == "SGS_InvertImage")
    full = sum(2 if name == "seed" else 1 for name, _ in widget_inputs(info["SGS_InvertImage"]))
    old = node["widgets_values"][:full - 1]           # as saved before `preset` existed
    node["widgets_values"] = old
    assert check_workflow(workflow, info, combos=False) == []
    prompt = ui_to_api(workflow, info)[str(node["id"])]["inputs"]
    assert prompt["preset"] == "balanced" and prompt["method"] == old[0] and prompt["num_steps"] == old[1]
    node["widgets_values"] = old + ["quick"]
    assert ui_to_api(workflow, info)[str(node["id"])]["inputs"]["preset"] == "quick"
    node["widgets_values"] = old[:-1]                  # anything else missing is still a mismatch
    assert any("widget values, expected" in p for p in check_workflow(workflow, info, combos=False))
