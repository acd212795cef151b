"""`core` works on its own and never imports ComfyUI; the pack imports cleanly without ComfyUI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

BLOCKED = ["comfy", "folder_paths", "server", "nodes", "comfy_api", "comfy_execution", "latent_preview"]


def run_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_core_imports_and_runs_with_comfyui_blocked():
    result = run_python(f"""
        import importlib.abc, json, sys
        BLOCKED = {BLOCKED!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in BLOCKED:
                    raise ImportError('blocked ' + name)
        sys.meta_path.insert(0, Block())
        import numpy, torch, safetensors.torch  # what core may use; anything new beyond these is core's doing
        before = set(sys.modules)
        import core, core.hub
        G = core.build_generator(core.GeneratorConfig(arch='stylegan2', z_dim=8, w_dim=8, img_resolution=8,
            synthesis=core.StyleGAN2Config(channel_base=64, channel_max=8)), seed=0)
        img = core.synthesize(G, core.sample_latents(G, [0]))
        new = sorted({{m.split('.')[0] for m in set(sys.modules) - before}})
        print(json.dumps({{"shape": list(img.shape), "modules": new}}))
    """)
    assert result["shape"] == [1, 3, 8, 8]
    new = {m for m in result["modules"] if not m.startswith("_")}
    assert not new & set(BLOCKED)
    assert new - set(sys.stdlib_module_names) <= {"core", "torch", "numpy", "safetensors"}, new


def test_core_sources_never_import_comfyui():
    offenders = []
    for path in (REPO / "core").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] in BLOCKED:
                offenders.append(f"{path.relative_to(REPO)}: {line.strip()}")
    assert not offenders


@pytest.mark.slow
def test_pack_imports_without_comfyui_and_exports_mappings():
    result = run_python("""
        import importlib.util, json, sys
        spec = importlib.util.spec_from_file_location('sgs_pack', '__init__.py', submodule_search_locations=['.'])
        pack = importlib.util.module_from_spec(spec); sys.modules['sgs_pack'] = pack; spec.loader.exec_module(pack)
        print(json.dumps({"nodes": sorted(pack.NODE_CLASS_MAPPINGS), "web": pack.WEB_DIRECTORY,
                          "comfy": [m for m in sys.modules if m.split('.')[0] in ('comfy', 'folder_paths')]}))
    """)
    assert result["web"] == "./web"
    assert result["comfy"] == []
    assert {"SGS_LoadStyleGAN", "SGS_SampleLatent", "SGS_Synthesize", "SGS_InterpolateLatents", "SGS_StyleMix",
            "SGS_SaveLatent", "SGS_LoadLatent"} <= set(result["nodes"])


def test_only_nodes_comfy_env_imports_comfyui():
    offenders = []
    for path in list((REPO / "nodes").rglob("*.py")) + [REPO / "__init__.py"]:
        if path.name == "comfy_env.py":
            continue
        for line in path.read_text().splitlines():
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] in BLOCKED:
                offenders.append(f"{path.relative_to(REPO)}: {line.strip()}")
    assert not offenders


def test_error_type_names_shown_by_comfyui_have_no_filesystem_path():
    """ComfyUI imports a pack under its folder's path and shows `<module>.<class>` for an error; ours read
    'stylegan_studio.errors.CheckpointError', not '/home/.../custom_nodes/...'; `core` alone keeps 'core.errors'."""
    code = textwrap.dedent(f"""
        import importlib.util, sys
        name = {str(REPO)!r}.replace(".", "_x_")  # what ComfyUI's load_custom_node uses for a folder
        spec = importlib.util.spec_from_file_location(name, {str(REPO / "__init__.py")!r},
                                                      submodule_search_locations=[{str(REPO)!r}])
        pack = importlib.util.module_from_spec(spec); sys.modules[name] = pack; spec.loader.exec_module(pack)
        errors = sys.modules[name + ".core.errors"]
        print(errors.CheckpointError.__module__, errors.LatentFileError.__module__)
        sys.path.insert(0, {str(REPO)!r}); import core
        print(core.CheckpointError.__module__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["stylegan_studio.errors", "stylegan_studio.errors", "core.errors"]
