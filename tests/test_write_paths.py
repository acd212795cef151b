"""Where the pack writes: generator caches only next to a checkpoint in the model folders (for that checkpoint's own
weights) or in the output folder; one name rule for every picker, with symlinks followed as ComfyUI does; and
leftovers of killed writers cleaned on the next write (issue 13, classes 2 and 8)."""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import pytest
import torch

import core
import forge
from conftest import tiny_generator
from core import files as F
from core.edits import inversion as I

P = pytest.importorskip("core.losses.perceptual")

PRIOR = ".ii2s-prior"


@pytest.fixture(scope="module")
def nets():
    """perceptual_nets for the Invert Image node: random networks, built on first use (most tests never invert)."""
    made = {}

    def for_method(method):
        if not made:
            made.update({"lpips_vgg": P.random_lpips("vgg", seed=0), "lpips_alex": P.random_lpips("alex", seed=1),
                         "vgg16_features": P.random_vgg16_features(seed=2)})
        return {k: made[k] for k in I.PERCEPTUAL_NEEDS[method]}

    return for_method


@pytest.fixture(scope="module")
def image():
    G = tiny_generator("stylegan2")
    z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        x = G.synthesis(G.mapping(z, None, truncation_psi=0.7), noise_mode="const")
    return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous()


@pytest.fixture()
def env(pack, tmp_path, monkeypatch, nets):
    """(pack, comfy_env, inversion module, model folder) with a checkpoint g.safetensors in the model folder, the
    perceptual networks replaced by random ones and the II2S prior measured on 2,000 samples."""
    inv = sys.modules[f"{pack.__name__}.nodes.inversion"]
    ce = sys.modules[f"{pack.__name__}.nodes.comfy_env"]
    monkeypatch.setattr(inv, "perceptual_nets", nets)
    monkeypatch.setattr(ce, "free_memory", lambda: None)
    monkeypatch.setitem(inv.I.METHOD_DEFAULTS, "pti", dataclasses.replace(inv.I.METHOD_DEFAULTS["pti"],
                                                                          tune_lpips_stop=0.0))
    real = inv.I.compute_w_prior
    computed = []
    monkeypatch.setattr(inv.I, "compute_w_prior", lambda G_, **kw: computed.append(G_.info.name) or real(G_, 2000))
    inv._priors.clear()
    models = tmp_path / "models" / "stylegan"
    core.save_generator(tiny_generator("stylegan2"), models / "g.safetensors")
    yield pack, ce, inv, models, computed
    inv._priors.clear()


def load(pack, name):
    return pack.NODE_CLASS_MAPPINGS["SGS_LoadStyleGAN"]().load(name, device="cpu")["result"][0]


def ii2s(pack, G, image):
    return pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"]().invert(G, image, "ii2s", num_steps=2, seed=0)["result"]


def files_in(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def prior_fingerprint(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["fingerprint"]


# ------------------------------------------------------------------------------------------------
# Class 2: a checkpoint's metadata never chooses where we write


def crafted_outside(models, tmp_path):
    """(folder outside the model folders, the file there, [(crafted checkpoint name, the source it records)])."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.bin"
    victim.write_bytes(b"keep me")
    forge.write_recorded_source(models / "g.safetensors", models / "crafted.safetensors", str(victim))
    # The same file outside the model folders, named through a path that climbs out of them as written.
    climbing = str(models / ".." / ".." / "elsewhere" / "victim.bin")
    forge.write_recorded_source(models / "g.safetensors", models / "climbing.safetensors", climbing)
    return elsewhere, victim, [("crafted.safetensors", str(victim)), ("climbing.safetensors", climbing)]


def check_nothing_written_outside(pack, ce, G, models, elsewhere, victim, name):
    assert files_in(elsewhere) == ["victim.bin"] and victim.read_bytes() == b"keep me", name
    assert not [n for n in files_in(models) if PRIOR in n], name
    cache = ce.cache_file(G, PRIOR, "ii2s_priors")
    assert cache.parent == ce.output_dir() / "ii2s_priors" and cache.is_file(), name
    assert cache.name.startswith(pack.core.generator_ref(G).fingerprint)


@pytest.mark.slow
def test_a_recorded_source_outside_the_model_folders_never_chooses_where_invert_image_writes(env, image, tmp_path):
    pack, ce, inv, models, computed = env
    elsewhere, victim, crafted = crafted_outside(models, tmp_path)
    name, source = crafted[0]
    G = load(pack, name)
    assert G.info.source == source  # the metadata does set the source: the rule must not trust it
    ii2s(pack, G, image)  # Invert Image (ii2s), as the probe ran it through a real server
    check_nothing_written_outside(pack, ce, G, models, elsewhere, victim, name)
    # nothing written anywhere else ("user" holds the measured step costs, in the pack's own user folder)
    assert files_in(tmp_path) == ["elsewhere", "input", "models", "output", "user"]


def test_a_recorded_source_outside_the_model_folders_never_chooses_where_the_prior_is_cached(env, tmp_path):
    pack, ce, inv, models, computed = env
    elsewhere, victim, crafted = crafted_outside(models, tmp_path)
    for name, source in crafted:
        G = load(pack, name)
        assert G.info.source == source  # the metadata does set the source: the rule must not trust it
        inv.prior_for(G)
        check_nothing_written_outside(pack, ce, G, models, elsewhere, victim, name)
    assert files_in(tmp_path) == ["elsewhere", "input", "models", "output"]  # nothing written anywhere else
    # The same weights loaded from the genuine file in the model folder cache next to it, as before.
    inv.prior_for(load(pack, "g.safetensors"))
    assert (models / f"g.safetensors{PRIOR}").is_file()


def test_a_recorded_source_naming_another_checkpoint_or_a_folder_is_not_trusted(env, tmp_path):
    pack, ce, _, models, _ = env
    core.save_generator(tiny_generator("stylegan2", seed=7), models / "other.safetensors")  # other weights
    forge.write_recorded_source(models / "g.safetensors", models / "claims_other.safetensors",
                                str(models / "other.safetensors"))
    G = load(pack, "claims_other.safetensors")
    assert ce.checkpoint_of(G) == models / "other.safetensors"  # in the model folders, but not G's weights:
    assert ce.cache_file(G, PRIOR, "ii2s_priors").parent == ce.output_dir() / "ii2s_priors"
    for source in (str(models), "", str(models / "missing.pkl"), "relative/nowhere.pkl", "a\0b"):
        G.info.source = source
        assert ce.checkpoint_of(G) is None, source
        assert ce.cache_file(G, PRIOR, "ii2s_priors").parent == ce.output_dir() / "ii2s_priors"
    G.info.source = str(models / "g.safetensors")  # the checkpoint that does hold these weights
    assert ce.cache_file(G, PRIOR, "ii2s_priors") == models / f"g.safetensors{PRIOR}"


def test_a_read_only_model_folder_caches_in_the_output_folder(env, monkeypatch):
    pack, ce, _, models, _ = env
    G = load(pack, "g.safetensors")
    real_access = os.access
    monkeypatch.setattr(ce.os, "access", lambda p, mode: False if str(p) == str(models) else real_access(p, mode))
    assert ce.cache_file(G, PRIOR, "ii2s_priors").parent == ce.output_dir() / "ii2s_priors"


@pytest.mark.parametrize("tensor", ["synthesis.b8.conv0.weight", "synthesis.b4.const"],
                         ids=["synthesis-only (same fingerprint)", "const (other fingerprint)"])
@pytest.mark.parametrize("base_first", [True, False], ids=["base first", "copy first"])
def test_base_and_its_weight_delta_copy_never_share_a_prior_cache(env, tensor, base_first):
    pack, ce, inv, models, computed = env
    base = load(pack, "g.safetensors")
    change = 0.05 * torch.randn(base.state_dict()[tensor].shape, generator=torch.Generator().manual_seed(1))
    delta = pack.core.deltas.WeightDelta({tensor: change}, pack.core.generator_ref(base))
    pack.core.deltas.save_weight_delta(delta, ce.input_dir() / "d.safetensors")
    copy = pack.NODE_CLASS_MAPPINGS["SGS_ApplyWeightDelta"]().apply(base, "d.safetensors", 1.0)["result"][0]
    assert copy.info.source == base.info.source  # the copy still names the base's checkpoint
    slot = models / f"g.safetensors{PRIOR}"
    own = ce.cache_file(copy, PRIOR, "ii2s_priors")
    assert own.parent == ce.output_dir() / "ii2s_priors" and ce.cache_file(base, PRIOR, "ii2s_priors") == slot
    first, second = (base, copy) if base_first else (copy, base)
    inv.prior_for(first)
    written = {p: p.read_bytes() for p in (slot, own) if p.is_file()}
    assert len(written) == 1
    inv.prior_for(second)
    assert slot.is_file() and own.is_file() and len(computed) == 2  # each computed its own
    for p, data in written.items():
        assert p.read_bytes() == data, f"{p.name} was overwritten by the other generator"
    assert prior_fingerprint(slot) == pack.core.generator_ref(base).fingerprint
    assert prior_fingerprint(own) == pack.core.generator_ref(copy).fingerprint
    # A new session reads both files and computes nothing; neither reads the other's.
    inv._priors.clear()
    inv.prior_for(base)
    inv.prior_for(copy)
    assert len(computed) == 2


@pytest.mark.slow
def test_pti_tuned_copy_caches_apart_from_its_checkpoint(env, image):
    pack, ce, _, models, _ = env
    base = load(pack, "g.safetensors")
    tuned = pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"]().invert(base, image, "pti", num_steps=2, seed=0,
                                                                 tune_steps=2)["result"][1]
    assert tuned is not base and tuned.info.source == base.info.source
    assert ce.cache_file(tuned, PRIOR, "ii2s_priors").parent == ce.output_dir() / "ii2s_priors"
    assert ce.cache_file(base, PRIOR, "ii2s_priors").parent == models


def test_global_directions_cache_follows_the_same_rule(env, tmp_path):
    pack, ce, _, models, _ = env
    gd = sys.modules[f"{pack.__name__}.nodes.global_directions"]
    base = load(pack, "g.safetensors")
    assert gd.cache_path(base, "k") == models / "g.safetensors.global-directions-k"
    delta = pack.core.deltas.WeightDelta({"synthesis.b8.conv0.weight": torch.full_like(
        base.state_dict()["synthesis.b8.conv0.weight"], 0.01)}, pack.core.generator_ref(base))
    copy = pack.core.deltas.apply_weight_delta(base, delta)
    assert gd.cache_path(copy, "k").parent == ce.output_dir() / "global_directions"
    forge.write_recorded_source(models / "g.safetensors", models / "crafted.safetensors", str(tmp_path / "input"))
    assert gd.cache_path(load(pack, "crafted.safetensors"), "k").parent == ce.output_dir() / "global_directions"


# ------------------------------------------------------------------------------------------------
# Class 8: one name rule, symlinks followed everywhere (as ComfyUI's folder_paths)


def comfyui_listing(folder):
    """ComfyUI's folder_paths.recursive_search + filter: os.walk(followlinks=True), relative paths."""
    out = []
    for dirpath, subdirs, names in os.walk(folder, followlinks=True):
        subdirs[:] = [d for d in subdirs if d != ".git"]
        out += [os.path.relpath(os.path.join(dirpath, n), folder).replace(os.sep, "/") for n in names]
    return sorted(out)


def test_symlinks_in_and_out_of_the_model_folder_are_listed_and_load(env, tmp_path):
    pack, ce, inv, models, _ = env
    drive = tmp_path / "drive"
    (drive / "sub").mkdir(parents=True)
    core.save_generator(tiny_generator("stylegan2", seed=3), drive / "real.safetensors")
    core.save_generator(tiny_generator("stylegan2", seed=4), drive / "sub" / "deep.safetensors")
    (models / "linked.safetensors").symlink_to(drive / "real.safetensors")      # a file linked in
    (models / "drive").symlink_to(drive, target_is_directory=True)              # a model drive linked in
    (models / "broken.safetensors").symlink_to(tmp_path / "gone.safetensors")   # a link to nothing
    (models / "loop").symlink_to(models, target_is_directory=True)              # a link back up the tree
    (models / ".git").mkdir()
    (models / ".git" / "x.safetensors").write_bytes(b"")
    listed = ce.list_models()
    assert listed == ["drive/real.safetensors", "drive/sub/deep.safetensors", "g.safetensors",
                      "linked.safetensors"]
    # ComfyUI lists the same files (it also lists the broken link, which it then refuses to load).
    (models / "loop").unlink()
    assert [n for n in comfyui_listing(models) if n != "broken.safetensors"] == listed
    for name in listed:
        path = ce.model_path(name)
        assert path == models / name  # as written: the link itself, never its target
        assert load(pack, name).info.source == str(path)
    with pytest.raises(FileNotFoundError, match="broken.safetensors.*not found"):
        ce.model_path("broken.safetensors")
    # What is written for a linked checkpoint goes next to the link, never next to its target.
    G = load(pack, "linked.safetensors")
    assert ce.cache_file(G, PRIOR, "ii2s_priors") == models / f"linked.safetensors{PRIOR}"
    G = load(pack, "drive/sub/deep.safetensors")  # a linked folder: inside the model folder as written
    assert ce.cache_file(G, PRIOR, "ii2s_priors") == models / "drive" / "sub" / f"deep.safetensors{PRIOR}"


BAD_NAMES = ["../g.safetensors", "sub/../../g.safetensors", "/etc/passwd", "\\\\server\\share\\g.pkl", "C:g.pkl",
             "", "..\\g.safetensors"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_names_leaving_a_folder_are_refused_by_every_picker(env, bad):
    pack, ce, _, _, _ = env
    nodes = pack.NODE_CLASS_MAPPINGS
    for pick in (ce.model_path, ce.latent_file_path, lambda n: ce.latent_file_path(n + " [output]"),
                 lambda n: nodes["SGS_LoadStyleGAN"]().load(n, device="cpu"),
                 lambda n: nodes["SGS_LoadLatent"]().load(n),
                 lambda n: nodes["SGS_ApplyWeightDelta"]().apply(None, n, 1.0),
                 lambda n: nodes["SGS_LoadLatentMapper"]().load(n),
                 lambda n: nodes["SGS_LoadCLIP"]().load("ViT-B-32", n, "openai", "cpu", "fp32")):
        with pytest.raises(ValueError, match="must be a file name inside"):
            pick(bad)


def test_latents_mappers_and_clip_files_linked_in_are_listed_and_found(env, tmp_path):
    pack, ce, _, _, _ = env
    mapper = sys.modules[f"{pack.__name__}.nodes.latent_mapper"]
    G = tiny_generator("stylegan2")
    outside = tmp_path / "outside"
    outside.mkdir()
    lat = core.save_latent(core.sample_latents(G, [1]), outside / "l.safetensors")
    (outside / "mapper.safetensors").write_bytes(b"x")
    (outside / "clip.safetensors").write_bytes(b"x")
    (ce.input_dir() / "l.safetensors").symlink_to(lat)
    (ce.output_dir() / "linked").symlink_to(outside, target_is_directory=True)
    for d in (ce.mapper_dirs()[0], ce.clip_dirs()[0]):
        d.mkdir(parents=True)
    (ce.mapper_dirs()[0] / "m.safetensors").symlink_to(outside / "mapper.safetensors")
    (ce.clip_dirs()[0] / "more").symlink_to(outside, target_is_directory=True)
    names = ce.list_latent_files()
    assert "l.safetensors" in names and "linked/l.safetensors [output]" in names
    for name in ("l.safetensors", "linked/l.safetensors [output]"):
        assert core.load_latent(ce.latent_file_path(name)).tensor.shape == (1, G.z_dim)
    assert ce.latent_file_path("l.safetensors") == ce.input_dir() / "l.safetensors"
    assert mapper.mapper_files() == ["m.safetensors"]
    with pytest.raises(pack.core.errors.CheckpointError, match=r"m\.safetensors"):  # found through the link, read
        pack.NODE_CLASS_MAPPINGS["SGS_LoadLatentMapper"]().load("m.safetensors")
    assert "more/clip.safetensors" in ce.list_files(ce.clip_dirs(), (".safetensors",))
    assert ce.find_in_folders(ce.clip_dirs(), "more/clip.safetensors") == ce.clip_dirs()[0] / "more" / "clip.safetensors"


def test_clip_weights_are_looked_up_in_the_clip_folders_not_the_working_directory(env, tmp_path, monkeypatch):
    pack, _, _, _, _ = env
    models_nodes = sys.modules[f"{pack.__name__}.nodes.models"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stray.safetensors").write_bytes(b"x")  # in the cwd, not in a CLIP folder
    with pytest.raises(FileNotFoundError, match="CLIP weight file 'stray.safetensors' not found in .*text_encoders"):
        models_nodes.LoadCLIP().load("ViT-B-32", "stray.safetensors", "openai", "cpu", "fp32")


def test_output_paths_stay_in_the_output_folder_as_written_and_never_overwrite(env, tmp_path):
    pack, ce, _, _, _ = env
    out = ce.output_dir()
    elsewhere = tmp_path / "outside_out"
    elsewhere.mkdir()
    (out / "linked").symlink_to(elsewhere, target_is_directory=True)  # ComfyUI follows it: so do we
    assert ce.next_output_path("linked/x", ".safetensors") == out / "linked" / "x_00001_.safetensors"
    for bad in ("../x", "a/../../x", str(tmp_path / "x"), ".."):
        with pytest.raises(ValueError, match="points outside the output folder"):
            ce.next_output_path(bad, ".safetensors")
    (out / "x_00001_.safetensors").write_bytes(b"1")
    (out / "x_00003_.png").write_bytes(b"3")  # ComfyUI's counter: one more than the highest of the prefix
    assert ce.next_output_path("x", ".safetensors") == out / "x_00004_.safetensors"
    (out / "x_00004_.safetensors").symlink_to(tmp_path / "nowhere")  # never written through, even broken
    (out / "x_00003_.png").unlink()
    assert ce.next_output_path("x", ".safetensors") == out / "x_00005_.safetensors"


# ------------------------------------------------------------------------------------------------
# Class 8: leftovers of killed writers


def test_leftovers_of_dead_writers_in_the_folder_are_cleaned_on_the_next_write(tmp_path):
    dead, old = forge.dead_pid(), F.ORPHAN_GRACE_SECONDS + 60
    target = tmp_path / "latent_00002_.safetensors"
    removed = [
        forge.write_leftover(target, dead),                                             # this file's, killed
        forge.write_leftover(target, dead, counter=3, torch_hub=True),                  # torch.hub's inside it
        forge.write_leftover(tmp_path / "latent_00001_.safetensors", dead, age_seconds=old),   # another file's
        forge.write_leftover(tmp_path / "vgg16.pth", dead, torch_hub=True, age_seconds=old),   # a killed download
        forge.write_leftover(tmp_path / "p.safetensors", os.getpid(), counter=999, age_seconds=F.STALE_SECONDS + 60),
    ]
    kept = [
        forge.write_leftover(tmp_path / "live.safetensors", os.getpid(), counter=998, age_seconds=old),  # live
        forge.write_leftover(tmp_path / "fresh.safetensors", dead),   # dead here, but fresh: maybe another host's
        tmp_path / "notes.2.partial",                                 # not our name pattern
        tmp_path / "x.safetensors.tmp",                               # another program's / another file's legacy
        tmp_path / f"user.{dead}-1.partial.txt",
    ]
    for p in kept[2:]:
        p.write_bytes(b"user data")
        t = time.time() - F.STALE_SECONDS - 60
        os.utime(p, (t, t))
    outside = tmp_path / "sub"
    outside.mkdir()
    elsewhere = forge.write_leftover(outside / "a.safetensors", dead, age_seconds=old)  # another folder
    core.save_latent(core.sample_latents(tiny_generator("stylegan2"), [0]), target)
    left = set(p.name for p in tmp_path.iterdir())
    assert not left & {p.name for p in removed}, left
    assert {p.name for p in kept} <= left and elsewhere.is_file()
    assert left == {p.name for p in kept} | {target.name, "sub"}


def test_a_link_named_like_a_leftover_is_not_followed(tmp_path):
    dead = forge.dead_pid()
    precious = tmp_path / "precious.bin"
    precious.write_bytes(b"keep")
    folder = tmp_path / "out"
    folder.mkdir()
    link = folder / f"a.safetensors.{dead}-0.partial"
    link.symlink_to(precious)
    F.clean_partials(folder / "b.safetensors")
    F.clean_partials(folder / "a.safetensors")
    assert precious.read_bytes() == b"keep"


def test_a_killed_download_is_cleaned_by_the_next_download(tmp_path, monkeypatch):
    dead = forge.dead_pid()
    forge.write_leftover(tmp_path / "net-0123abcd.pth", dead, torch_hub=True)

    def fake(url, dst, hash_prefix=None, progress=True):
        with open(dst, "wb") as f:
            f.write(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    F.download_url("https://x/net.pth", tmp_path, "net-0123abcd.pth")
    assert files_in(tmp_path) == ["net-0123abcd.pth"]
