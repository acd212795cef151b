"""Registry and frontend checks that need no ComfyUI: `comfy node validate` (comfy-cli) and the web/ JavaScript
parsing. Each is skipped, saying why, when its tool is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO


def comfy_cli() -> str | None:
    here = Path(sys.executable).parent / "comfy"
    return str(here) if here.is_file() else shutil.which("comfy")


@pytest.mark.slow
@pytest.mark.skipif(comfy_cli() is None, reason="comfy-cli not installed (pip install comfy-cli)")
def test_comfy_node_validate_passes(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}  # comfy-cli writes its config under the home folder
    run = subprocess.run([comfy_cli(), "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env=env)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "validation checks passed" in out, out
    assert "warning" not in out.lower() and "error" not in out.lower(), out  # it passes with warnings too


def test_registry_metadata():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy = meta["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] == "StyleGAN Studio"
    assert comfy["Icon"].endswith("docs/icon.png") and (REPO / "docs" / "icon.png").is_file()
    assert meta["project"]["name"].startswith("comfyui-") and meta["project"]["license"]
    requirements = (REPO / "requirements.txt").read_text().split()
    assert {d.split(">")[0].split("=")[0] for d in meta["project"]["dependencies"]} <= {
        r.split(">")[0].split("=")[0] for r in requirements}


@pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js) not installed")
@pytest.mark.parametrize("script", sorted((REPO / "web").glob("*.js")), ids=lambda p: p.name)
def test_web_script_parses(script, tmp_path):
    module = tmp_path / (script.stem + ".mjs")  # ComfyUI loads web/ files as ES modules
    module.write_text(script.read_text())
    run = subprocess.run(["node", "--check", str(module)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_node_check_catches_a_syntax_error(tmp_path):
    if shutil.which("node") is None:
        pytest.skip("node (Node.js) not installed")
    bad = tmp_path / "bad.mjs"
    bad.write_text('import { app } from "../../scripts/app.js";\nfunction (\n')
    assert subprocess.run(["node", "--check", str(bad)], capture_output=True).returncode != 0
