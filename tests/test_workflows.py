"""Example workflows parse, use registered nodes, fit the node schemas, declare the files they need, are laid out
without overlaps, and (with COMFYUI_DIR) validate against a real server's /object_info, the offline ones running
there with no model files."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import REPO
from workflows import VIRTUAL_NODES, check_workflow, example_paths, load_workflow, object_info_from_pack, ui_to_api

TITLE_BAR = 30  # px the frontend draws above a node's pos
# Loader nodes and the widget that names their file: each must declare that file in properties.models.
FILE_LOADERS = {"SGS_LoadStyleGAN": 0, "SGS_LoadLatentMapper": 0, "CheckpointLoaderSimple": 0, "SGS_LoadEncoder": 0}
# Nodes whose files no widget names: the workflow's top-level `models` must declare them (by folder).
IMPLICIT_FILES = {"SGS_LoadCLIP": "text_encoders", "SGS_InvertImage": "perceptual", "SGS_SegmentComposite": "perceptual",
                  "SGS_LoadFaceParser": "face_parsing"}   # face parsers: 'auto' entries name no file
DOWNLOAD_HOSTS = ("https://huggingface.co/", "https://api.ngc.nvidia.com/", "https://download.pytorch.org/",
                  "https://github.com/", "https://drive.google.com/")


def examples():
    return [(p, load_workflow(p)) for p in example_paths()]


def offline(workflow) -> bool:
    """Runs with nothing downloaded: no file loaders, no photo, no node that loads weights by itself."""
    types = {n["type"] for n in workflow["nodes"]}
    return not types & (set(FILE_LOADERS) | set(IMPLICIT_FILES) | {"LoadImage"})


def test_there_are_example_workflows():
    assert len(example_paths()) >= 2


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_example_workflow_fits_the_schemas(pack, path):
    workflow = load_workflow(path)
    info = object_info_from_pack(pack)
    assert check_workflow(workflow, info, combos=False) == []
    prompt = ui_to_api(workflow, info)
    assert prompt and all(node["class_type"] in info for node in prompt.values())
    assert not any(n["class_type"] in VIRTUAL_NODES for n in prompt.values())
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


def test_the_first_templates_run_offline():
    """The template a user sees first (the first name in sort order: the pack's web extension sorts its list for
    the Templates browser, checked in test_browser.py) and at least three more are Demo Generator graphs that need
    no file: sample, style mix, video, edit."""
    first = examples()[0]
    assert offline(first[1]) and any(n["type"] == "SGS_DemoGenerator" for n in first[1]["nodes"]), first[0].name
    demos = [p.stem for p, w in examples() if offline(w)]
    assert len(demos) >= 4, demos
    for word in ("first_image", "style_mix", "walk_video", "edit"):
        assert any(word in d for d in demos), (word, demos)
    # The frontend shows a custom template's file name as its title: the offline ones say so.
    assert all(d.endswith("_no_download") for d in demos) and all(p.stem.endswith("_no_download") == offline(w)
                                                                   for p, w in examples())


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_example_declares_the_files_it_needs(path):
    workflow = load_workflow(path)
    declared = {m["name"]: m for m in workflow.get("models", [])}
    for n in workflow["nodes"]:
        if n["type"] in FILE_LOADERS:
            name = n["widgets_values"][FILE_LOADERS[n["type"]]]
            models = n.get("properties", {}).get("models", [])
            assert [m["name"] for m in models] == [name], (n["type"], models)  # the dialog matches widget values
            declared.update({m["name"]: m for m in models})
    for ntype, directory in IMPLICIT_FILES.items():
        if any(n["type"] == ntype for n in workflow["nodes"]):
            assert any(m["directory"] == directory for m in workflow.get("models", [])), (ntype, directory)
    for m in declared.values():
        assert set(m) == {"name", "url", "directory"}, m
        assert m["url"].startswith(DOWNLOAD_HOSTS) and " " not in m["url"], m
        assert m["url"].split("?")[0].endswith((m["name"], ".safetensors", ".pth")) or "drive.google" in m["url"], m
    if offline(workflow):
        assert not declared, "an offline example declares downloads"


def test_examples_have_titles_descriptions_and_thumbnails():
    locale = json.loads((REPO / "locales" / "en" / "main.json").read_text())["templateWorkflows"]
    assert locale["category"]["comfyui-stylegan-studio"] == "StyleGAN Studio"  # the template browser's category
    for path, workflow in examples():
        extra = workflow["extra"]
        assert 8 <= len(extra["title"]) <= 60 and 20 <= len(extra["description"]) <= 220, path.name
        assert path.with_suffix(".jpg").is_file(), f"{path.stem}.jpg (scripts/make_thumbnails.py)"


def boxes(workflow) -> list[tuple[str, tuple[float, float, float, float]]]:
    """Every node's box on the canvas (x0, y0, x1, y1), the title bar included."""
    return [(f"{n['id']} {n['type']}", (n["pos"][0], n["pos"][1] - TITLE_BAR, n["pos"][0] + n["size"][0],
                                        n["pos"][1] + n["size"][1])) for n in workflow["nodes"]]


def intersects(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(a, b) -> bool:
    return b[0] <= a[0] and b[1] <= a[1] and a[2] <= b[2] and a[3] <= b[3]


def layout_problems(workflow) -> list[str]:
    problems = []
    nodes = boxes(workflow)
    groups = [(g["title"], (g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
                            g["bounding"][1] + g["bounding"][3])) for g in workflow.get("groups", [])]
    for i, (name, box) in enumerate(nodes):
        problems += [f"{name} overlaps {other}" for other, obox in nodes[i + 1:] if intersects(box, obox)]
        holders = [title for title, gbox in groups if intersects(box, gbox)]
        if len(holders) != 1 or not inside(box, dict(groups)[holders[0]]):
            problems.append(f"{name} is not inside exactly one group: {holders}")
    for i, (title, box) in enumerate(groups):
        problems += [f"group {title!r} overlaps group {other!r}" for other, obox in groups[i + 1:]
                     if intersects(box, obox)]
    return problems


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_example_layout_has_explained_groups_and_no_overlaps(path):
    workflow = load_workflow(path)
    assert layout_problems(workflow) == []
    groups = workflow["groups"]
    assert len(groups) >= 2 and all(len(g["title"]) <= 24 for g in groups)
    notes = [n for n in workflow["nodes"] if n["type"] == "Note"]
    assert len(notes) == len(groups) and all(n["widgets_values"][0].strip() for n in notes)
    by_id = {n["id"]: n for n in workflow["nodes"]}
    if path.stem == "invert_and_edit":  # issue 14: Unalign Face was drawn over Save Image
        unalign = next(n for n in by_id.values() if n["type"] == "SGS_UnalignFace")
        for n in by_id.values():
            if n["type"] == "SaveImage":
                assert not intersects(dict(boxes({"nodes": [unalign]}))[f"{unalign['id']} SGS_UnalignFace"],
                                      dict(boxes({"nodes": [n]}))[f"{n['id']} SaveImage"])


def test_layout_check_catches_overlaps():
    workflow = load_workflow(next(p for p in example_paths() if p.stem == "invert_and_edit"))
    unalign = next(n for n in workflow["nodes"] if n["type"] == "SGS_UnalignFace")
    save = next(n for n in workflow["nodes"] if n["type"] == "SaveImage")
    unalign["pos"] = [save["pos"][0] + 10, save["pos"][1] + 20]
    problems = layout_problems(workflow)
    assert any("SGS_UnalignFace overlaps" in p or "overlaps " + f"{unalign['id']} SGS_UnalignFace" in p
               for p in problems), problems
    workflow["groups"][1]["bounding"] = list(workflow["groups"][0]["bounding"])
    assert any("overlaps group" in p for p in layout_problems(workflow))


# --- against a real ComfyUI ---------------------------------------------------------------------------------------
needs_comfyui = pytest.mark.skipif(not os.environ.get("COMFYUI_DIR"),
                                   reason="set COMFYUI_DIR to a ComfyUI checkout to run integration tests")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from comfyui_server import ComfyServer

    srv = ComfyServer(tmp_path_factory.mktemp("comfyui_examples"))  # a fresh ComfyUI: no model files at all
    srv.start()
    yield srv
    srv.stop()


@needs_comfyui
def test_examples_fit_the_real_server_and_the_offline_ones_run(server):
    """Every example fits the real server's /object_info: node types, widget values (every combo, a file combo
    holding the file the example declares for the missing-model dialog), link types; each declared directory is
    one of the server's model folders. The offline examples run unchanged in a ComfyUI with no model files, the
    first one in under a minute."""
    info = server.get("/object_info")
    folders = {f["name"] for f in server.get("/experiment/models")}
    listed = server.get("/workflow_templates")["comfyui-stylegan-studio"]
    assert sorted(listed) == sorted(p.stem for p in example_paths())
    assert server.get("/i18n")["en"]["templateWorkflows"]["category"]["comfyui-stylegan-studio"] == "StyleGAN Studio"
    for path, workflow in examples():
        declared = [m for n in workflow["nodes"] for m in n.get("properties", {}).get("models", [])]
        declared += workflow.get("models", [])
        assert {m["directory"] for m in declared} <= folders, path.name
        patched = json.loads(json.dumps(info))  # the declared files, as if downloaded
        for n in workflow["nodes"]:
            for m in n.get("properties", {}).get("models", []):
                for entry in patched[n["type"]]["input"]["required"].values():
                    if isinstance(entry[0], list) and not entry[1].get("image_upload"):
                        entry[0].append(m["name"])
        problems = [p for p in check_workflow(workflow, patched)
                    if not (workflow_has_photo(workflow) and "image=" in p)]
        assert problems == [], path.name
        prompt = ui_to_api(workflow, info)
        if not offline(workflow):
            continue
        start = time.time()
        result = server.run_prompt(prompt, timeout=300)
        seconds = time.time() - start
        errors = [m[1].get("exception_message") for m in result["status"]["messages"] if m[0] == "execution_error"]
        assert result["status"]["status_str"] == "success", (path.name, errors)
        saved = [i for out in result["outputs"].values() for i in out.get("images", []) if i.get("type") == "output"]
        assert saved and all((server.output / i["subfolder"] / i["filename"]).is_file() for i in saved), path.name
        if path == example_paths()[0]:
            assert seconds < 60, f"the first template took {seconds:.0f} s"


def workflow_has_photo(workflow) -> bool:
    return any(n["type"] == "LoadImage" for n in workflow["nodes"])


def test_example_script_sets_the_quick_preset_where_a_node_has_one(pack, monkeypatch):
    """scripts/make_example_workflows.py fills widget values from the schema: an optimising node with a `preset`
    input gets 'quick' (its step counts left at their defaults, 0 = the preset's), one without keeps its values."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sgs_make_examples", REPO / "scripts" / "make_example_workflows.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    real = script.schema

    def without_preset(node_type):
        s = real(node_type)
        return {**s, "optional": {k: v for k, v in s.get("optional", {}).items() if k != "preset"}}

    with_ = script.widget_values("SGS_InvertImage", script.invert(4, (1, 0), (3, 0))["values"])
    assert with_[0] == "ii2s" and with_[1] == 0 and with_[-1] == "quick"  # preset last, num_steps 0 = the preset's
    monkeypatch.setattr(script, "schema", without_preset)
    values = script.widget_values("SGS_InvertImage", script.invert(4, (1, 0), (3, 0))["values"])
    assert "quick" not in values and values == with_[:-1]
