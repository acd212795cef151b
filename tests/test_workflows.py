"""Example workflows parse, use registered nodes, and fit the node schemas (no ComfyUI needed)."""

from __future__ import annotations

import json

import pytest

from workflows import check_workflow, example_paths, load_workflow, object_info_from_pack, ui_to_api


def test_there_are_example_workflows():
    assert len(example_paths()) >= 2


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_example_workflow_fits_the_schemas(pack, path):
    workflow = load_workflow(path)
    info = object_info_from_pack(pack)
    assert check_workflow(workflow, info, combos=False) == []
    prompt = ui_to_api(workflow, info)
    assert prompt and all(node["class_type"] in info for node in prompt.values())
    json.dumps(prompt)


def test_checker_catches_bad_values(pack):
    workflow = load_workflow(next(p for p in example_paths() if p.stem == "generate_and_style_mix"))
    info = object_info_from_pack(pack)
    node = next(n for n in workflow["nodes"] if n["type"] == "SGS_SampleLatent")
    node["widgets_values"][4] = 5.0  # truncation_psi above its maximum
    workflow["nodes"].append({"id": 99, "type": "NoSuchNode", "inputs": [], "widgets_values": []})
    problems = check_workflow(workflow, info, combos=False)
    assert any("truncation_psi=5.0 is outside" in p for p in problems)
    assert any("unknown type NoSuchNode" in p for p in problems)
    node["widgets_values"].pop()
    assert any("widget values, expected" in p for p in check_workflow(workflow, info, combos=False))
