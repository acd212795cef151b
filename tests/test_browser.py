"""Browser test: the real ComfyUI frontend in Debian's chromium runs the invert-and-edit example.

Skipped unless COMFYUI_DIR is set, chromium is installed (`apt install chromium`) and playwright-core is in
tests/browser/node_modules (`cd tests/browser && npm install`). The screenshots are written to
$SGS_ARTIFACTS (default: the pytest temporary folder) and their paths printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import core
from conftest import REPO, tiny_generator

BROWSER_DIR = REPO / "tests" / "browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.skipif(not os.environ.get("COMFYUI_DIR"), reason="set COMFYUI_DIR to run the browser test"),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt install chromium)"),
    pytest.mark.skipif(shutil.which("node") is None, reason="node not installed"),
    pytest.mark.skipif(not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(),
                       reason="playwright-core not installed (cd tests/browser && npm install)"),
]


def test_invert_and_edit_in_the_real_frontend(tmp_path):
    from comfyui_server import ComfyServer
    from test_comfyui import example_face_photo, write_random_perceptual_weights
    from workflows import EXAMPLES, load_workflow

    artifacts = Path(os.environ.get("SGS_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    workflow = load_workflow(EXAMPLES / "invert_and_edit.json")
    ids = {n["type"]: n["id"] for n in workflow["nodes"]}
    load = next(n for n in workflow["nodes"] if n["type"] == "SGS_LoadStyleGAN")
    photo = next(n for n in workflow["nodes"] if n["type"] == "LoadImage")

    server = ComfyServer(tmp_path / "comfyui")
    core.save_generator(tiny_generator("stylegan2"), server.models / load["widgets_values"][0])
    write_random_perceptual_weights(server.root / "models" / "perceptual")
    landmarks = example_face_photo(server.root / "input" / photo["widgets_values"][0])
    server.start()
    try:
        config = {
            "url": server.url, "chromium": CHROMIUM, "workflow": workflow, "timeoutMs": 900_000,
            # The detector's weights cannot be downloaded here: the face's landmarks are typed in instead.
            "widgets": {str(ids["SGS_AlignFace"]): {"landmarks_json": json.dumps(landmarks)}},
            "watchNode": ids["SGS_InvertImage"],
            "frameNode": ids["SGS_Synthesize"],
            "requireStatus": os.environ.get("SGS_BROWSER_REQUIRE_STATUS", "1") == "1",
            "outputNode": next(n["id"] for n in workflow["nodes"]
                               if n["type"] == "SaveImage" and "invert_edit" in n["widgets_values"][0]),
            "midScreenshot": str(artifacts / "browser_mid_inversion.png"),
            "screenshot": str(artifacts / "browser_done.png"),
        }
        cfg_path = tmp_path / "browser.json"
        cfg_path.write_text(json.dumps(config))
        run = subprocess.run(["node", str(BROWSER_DIR / "run_workflow.mjs"), str(cfg_path)], cwd=BROWSER_DIR,
                             capture_output=True, text=True, timeout=1200)
        assert run.returncode == 0, run.stderr[-3000:]
        report = json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        server.stop()
    print(f"\nbrowser test: {report.get('seconds')} s; screenshots {config['midScreenshot']}, {config['screenshot']}")
    assert report["ok"], report.get("error")
    assert report["extensionLoaded"]
    ours = [e for e in report["pageErrors"] + report["consoleErrors"] if "stylegan" in e.lower()]
    assert not ours, ours
    assert report["live"]["imgs"] or report["live"]["preview"]  # a live reconstruction was on the node
    final = report["final"]
    assert final["error"] is None and final["images"] == 8
    assert "step" in report["live"]["status"] and "ETA" in report["live"]["status"]  # the live status line
    assert final["status"].startswith("step 1300/1300") and final["stopButton"]
    assert final["frameScrubberMax"] == 7  # 8 frames on Synthesize
    assert all(a == b for a, b in final["savedWidgets"]), final["savedWidgets"]
    assert not {"sgs_status", "sgs_stop", "sgs_report"} & set(report["promptWidgets"])
    assert Path(config["midScreenshot"]).is_file() and Path(config["screenshot"]).is_file()
