"""core.files: atomic writes, leftovers of interrupted writes, tagged safetensors readback errors, the weight-file
finder, the safe state-dict reader and the downloader."""

from __future__ import annotations

import io
import os
import re
import subprocess
import stat
import sys
import time
import types

import pytest
import torch

import core
from conftest import tiny_generator
from core import deltas as D
from core import files as F
from core import latents as L
from core import hub as H
from core.errors import CheckpointError, MissingDependencyError, MissingWeightsError


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------------
# Atomic writes


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.safetensors"
    F.write_safetensors(path, {"a": torch.ones(3)}, format="test-format")
    before = path.read_bytes()

    def broken(tmp):
        tmp.write_bytes(b"half a file")
        raise KeyboardInterrupt  # a cancel in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        F.atomic_write(path, broken)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


def test_failed_save_of_a_latent_keeps_the_old_one(tmp_path, monkeypatch):
    G = tiny_generator("stylegan2")
    path = L.save_latent(L.sample_latents(G, [0]), tmp_path / "a.safetensors")
    before = path.read_bytes()
    import safetensors.torch

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        L.save_latent(L.sample_latents(G, [1]), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def test_leftovers_of_interrupted_writes_are_cleaned_on_the_next_write(tmp_path):
    path = tmp_path / "g.safetensors"
    dead = tmp_path / f"g.safetensors.{_dead_pid()}-0.partial"
    old_style = tmp_path / f"g.safetensors.{_dead_pid()}.partial"          # `<name>.<pid>.partial`
    legacy = [tmp_path / "g.safetensors.partial", tmp_path / "g.safetensors.tmp"]  # before core.files
    live = tmp_path / f"g.safetensors.{os.getpid()}-999999.partial"      # another thread writing right now
    stale = tmp_path / f"g.safetensors.{os.getpid()}-999998.partial"     # a day old: its pid was reused
    other = tmp_path / "h.safetensors.1.partial"                         # another file's: not ours to touch
    longer = tmp_path / f"g.safetensors.bak.{_dead_pid()}-0.partial"     # nor this one (`g.safetensors.bak`)
    for p in [dead, old_style, *legacy, live, stale, other, longer]:
        p.write_bytes(b"junk")
    day_ago = time.time() - F.STALE_SECONDS - 60
    os.utime(stale, (day_ago, day_ago))
    core.save_generator(tiny_generator("stylegan2"), path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["g.safetensors", live.name, other.name, longer.name])
    assert core.load_generator(path).info.source_format == "safetensors"


def test_glob_characters_in_names_are_literal(tmp_path):
    path = tmp_path / "a[1].safetensors"
    leftover = tmp_path / f"a[1].safetensors.{_dead_pid()}-0.partial"
    leftover.write_bytes(b"junk")
    (tmp_path / "a1.safetensors.7.partial").write_bytes(b"junk")  # matched by the pattern if not escaped
    assert F.clean_partials(path) == [leftover]


def test_format_tag_cannot_be_overridden(tmp_path):
    with pytest.raises(ValueError, match="format tag"):
        F.write_safetensors(tmp_path / "x.safetensors", {}, format="a", metadata={"format": "b"})


# ------------------------------------------------------------------------------------------------
# Readback errors


def test_format_mismatch_names_the_file_and_both_formats(tmp_path):
    G = tiny_generator("stylegan2")
    latent = L.save_latent(L.sample_latents(G, [0]), tmp_path / "lat.safetensors")
    with pytest.raises(CheckpointError) as e:
        D.load_weight_delta(latent)
    msg = str(e.value)
    assert str(latent) in msg and repr(L.LATENT_FORMAT) in msg and repr(D.DELTA_FORMAT) in msg
    assert "Save Weight Delta" in msg  # what to do
    with pytest.raises(CheckpointError, match=r"format 'a', expected 'b' or 'c'"):
        F.read_safetensors(F.write_safetensors(tmp_path / "x.safetensors", {}, format="a"), what="x",
                           format=("b", "c"))


def test_malformed_metadata_names_the_field(tmp_path):
    G = tiny_generator("stylegan2")
    t = {"latent": torch.zeros(1, G.w_dim)}
    ref = L.generator_ref(G).to_dict()
    cases = {
        "generator": {"space": "w", "generator": "{not json"},
        "truncation_psi": {"space": "w", "generator": ref, "truncation_psi": "strong"},
    }
    for field, meta in cases.items():
        path = F.write_safetensors(tmp_path / f"{field}.safetensors", t, format=L.LATENT_FORMAT, metadata=meta)
        with pytest.raises(CheckpointError, match=re.escape(str(path)) + f".*field '{field}'"):
            L.load_latent(path)
    path = F.write_safetensors(tmp_path / "nogen.safetensors", t, format=L.LATENT_FORMAT, metadata={"space": "w"})
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*no 'generator' field"):
        L.load_latent(path)
    # fields the reference does not have (a file from another program)
    path = F.write_safetensors(tmp_path / "extra.safetensors", t, format=L.LATENT_FORMAT,
                               metadata={"space": "w", "generator": {**ref, "colour": "blue"}})
    with pytest.raises(CheckpointError, match=r"field 'generator' is invalid \(TypeError.*colour"):
        L.load_latent(path)
    path = F.write_safetensors(tmp_path / "d.safetensors", {}, format=D.DELTA_FORMAT,
                               metadata={"base": ref, "metadata": "[1, 2]"})
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*field 'metadata'.*JSON object"):
        D.load_weight_delta(path)
    meta = {"info": "{"}
    with pytest.raises(CheckpointError, match=r"g\.st: model metadata field 'info' is invalid"):
        F.meta_json(meta, "info", "g.st", "model")
    assert F.meta_json(meta, "absent", "g.st", "model", default=None) is None


def test_truncated_and_missing_files_are_named(tmp_path):
    G = tiny_generator("stylegan2")
    path = L.save_latent(L.sample_latents(G, [0]), tmp_path / "lat.safetensors")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*truncated or corrupt.*Save Latent"):
        L.load_latent(path)
    with pytest.raises(FileNotFoundError, match="weight delta not found: .*nope"):
        D.load_weight_delta(tmp_path / "nope.safetensors")
    g = core.save_generator(G, tmp_path / "g.safetensors")
    with pytest.raises(CheckpointError, match="no 'latent' tensor"):
        L.load_latent(F.write_safetensors(tmp_path / "empty.safetensors", {}, format=L.LATENT_FORMAT))
    # a generator whose architecture field is damaged
    tensors, meta = F.read_safetensors(g, what="generator")
    meta["config"] = '{"arch": "stylegan2", "mapping": {"bogus": 1}}'
    bad = F.write_safetensors(tmp_path / "bad.safetensors", tensors, format=meta.pop("format"), metadata=meta)
    with pytest.raises(CheckpointError, match=re.escape(str(bad)) + ".*field 'config'.*bogus"):
        core.load_generator(bad)


# ------------------------------------------------------------------------------------------------
# Finding and reading weight files


def test_finder_first_folder_wins_then_name_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "w.pth").write_bytes(b"1")
    (a / "w.safetensors").write_bytes(b"2")
    (b / "w.safetensors").write_bytes(b"3")
    names = F.weight_names("w.pth")
    assert names == ["w.pth", "w.safetensors"]
    assert F.find_weights(names, [a, b]) == a / "w.safetensors"   # first folder, even with the second name
    assert F.find_weights(names, [b, a]) == b / "w.pth"            # within a folder, names in order
    assert F.find_weights(names, [tmp_path / "none"]) is None
    (tmp_path / "c" / "w.pth").mkdir(parents=True)               # a folder is not a file
    assert F.find_weights(["w.pth"], [tmp_path / "c"]) is None


from forge import CODE_RAN as _ran, CodeRunningPayload as _Evil  # noqa: E402


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_state_dict_reader_runs_nothing_and_names_the_file(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(F.read_state_dict(good)["w"], torch.ones(2))
    evil = tmp_path / "evil.pth"
    torch.save({"w": _Evil()}, evil)
    with pytest.raises(CheckpointError, match=re.escape(str(evil)) + ": cannot read ArcFace weights.*get it again"):
        F.read_state_dict(evil, what="ArcFace weights", hint="get it again")
    assert _ran == []
    script = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(script))
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        F.read_state_dict(script)
    lst = tmp_path / "list.pth"
    torch.save([torch.ones(1)], lst)
    with pytest.raises(CheckpointError, match="expected a state dict of tensors, got list"):
        F.read_state_dict(lst)


# ------------------------------------------------------------------------------------------------
# Downloading


def test_offline_download_names_file_url_and_folders(tmp_path, monkeypatch):
    def offline(url, dst, *a, **k):
        raise OSError(f"network is unreachable ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    url = "https://example.org/weights/net-0123abcd.pth"
    got = F.find_or_download("Example net", F.weight_names("net-0123abcd.pth"), url, [tmp_path / "models"],
                             download_dir=tmp_path / "cache")
    assert isinstance(got, F.MissingWeights) and "network is unreachable" in got.error
    err = F.missing_weights_error([got], [tmp_path / "models", tmp_path / "cache"])
    msg = str(err)
    assert isinstance(err, MissingWeightsError) and isinstance(err, FileNotFoundError)
    assert f"download {url} and save it as net-0123abcd.pth" in msg and "network is unreachable" in msg
    assert str(tmp_path / "models") in msg and str(tmp_path / "cache") in msg
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing half-written
    assert "no model folders were given" in str(F.missing_weights_error([got], []))


def test_download_checks_the_hash_in_the_name_and_is_found_next_time(tmp_path, monkeypatch):
    calls = []

    def fake(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        with open(dst, "wb") as f:
            f.write(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    got = F.find_or_download("net", ["net-0123abcd.pth"], "https://x/net.pth", [], download_dir=tmp_path)
    assert got == tmp_path / "net-0123abcd.pth" and got.read_bytes() == b"weights"
    assert calls == [("https://x/net.pth", "0123abcd")]
    assert F.find_or_download("net", ["net-0123abcd.pth"], "https://x/net.pth", [], download_dir=tmp_path) == got
    assert len(calls) == 1  # found in the download folder, not downloaded again
    F.download_url("https://x/lin.pth", tmp_path, "lpips_vgg.pth")
    assert calls[-1] == ("https://x/lin.pth", None)  # no hash in that name: nothing to check


def test_hub_download_through_huggingface_hub(tmp_path, monkeypatch):
    calls = []

    def hf_hub_download(repo_id, filename, revision=None, local_dir=None):
        calls.append((repo_id, filename, revision, local_dir))
        p = tmp_path / "dl" / filename
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        return str(p)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=hf_hub_download))
    assert F.download_from_hub("a/b", "g.pkl", tmp_path / "a--b") == tmp_path / "dl" / "g.pkl"
    assert calls == [("a/b", "g.pkl", None, str(tmp_path / "a--b"))]
    for repo, name in [("../b", "g.pkl"), ("a/..", "g.pkl"), ("ab", "g.pkl"), ("a/b", "../g.pkl"),
                       ("a/b", "/etc/passwd"), ("a/b", "x/../../g.pkl"), ("a/b", "")]:
        with pytest.raises(ValueError, match="Hugging Face"):
            F.download_from_hub(repo, name, tmp_path)
    # an already downloaded checkpoint is used offline, without asking the hub
    (tmp_path / "models" / "a--b").mkdir(parents=True)
    (tmp_path / "models" / "a--b" / "stylegan2-ffhq.pkl").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    path, licence = H.download_checkpoint("a/b", "stylegan2-ffhq.pkl", tmp_path / "models")
    assert path == tmp_path / "models" / "a--b" / "stylegan2-ffhq.pkl" and "NVIDIA" in licence
    with pytest.raises(MissingDependencyError, match="pip install huggingface_hub"):
        H.download_checkpoint("a/b", "other.pkl", tmp_path / "models")


def test_try_download_reports_why():
    def fail():
        raise OSError("connection reset")

    assert F.try_download("x", fail) == (None, "OSError: connection reset")
    assert F.try_download("x", lambda: "/tmp/x") == (F.Path("/tmp/x"), "")


def test_hub_offline_switch(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert F.hub_reachable() is False


# ------------------------------------------------------------------------------------------------
# The restricted unpicklers' shared tensor-record rebuild


class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def test_tensor_records_are_checked_against_their_storage():
    from core.errors import UnsafeCheckpointError
    from core.loaders.safe_pickle import rebuild_tensor

    flat = torch.arange(6.0)
    assert torch.equal(rebuild_tensor(flat, 1, (2, 2), (2, 1)), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    buf = io.BytesIO()
    torch.save(flat.untyped_storage(), buf)
    untyped = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)  # a storage as pickles hold it
    assert torch.equal(rebuild_tensor(untyped, 16, (8,), (1,)).view(torch.float32), torch.tensor([4.0, 5.0]))
    with pytest.raises(CheckpointError, match="does not fit its storage"):
        rebuild_tensor(flat, 3, (2, 2), (2, 1))      # ends past the storage
    with pytest.raises(CheckpointError, match="does not fit its storage"):
        rebuild_tensor(flat, 0, (2,), (-1,))          # negative stride
    with pytest.raises(UnsafeCheckpointError, match="autograd hooks"):
        rebuild_tensor(flat, 0, (2,), (1,), hooks={0: print})
    with pytest.raises(UnsafeCheckpointError, match="not backed"):
        rebuild_tensor(b"\0" * 24, 0, (2,), (1,))


def test_out_of_bounds_tensor_record_in_a_network_pickle_names_the_file(tmp_path):
    import forge

    t = torch.zeros(4)
    fn, args = t.__reduce_ex__(2)[:2]
    bad = _Reduce(fn, args[0], 2, (4,), (1,), *args[4:])  # 4 values from offset 2 of a 4-value storage
    objects = forge.nvidia_objects(forge.load_fixture("ada_skip"))
    objects["G_ema"].meta["state"]["_buffers"] = {"bad": bad}
    path = tmp_path / "bad.pkl"
    path.write_bytes(forge.dumps(objects))
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ": a tensor in the pickle does not fit its"):
        core.load_generator(path)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_written_files_get_the_permissions_of_a_plain_write(tmp_path):
    """safetensors creates 0o600 files; the pack's files get 0o666 minus the umask like any file, and a replaced
    file keeps its permissions."""
    old = os.umask(0o022)
    try:
        F._new_file_mode = None
        path = F.write_safetensors(tmp_path / "a.safetensors", {"x": torch.zeros(2)}, format="t")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.chmod(path, 0o640)
        F.write_safetensors(path, {"x": torch.ones(2)}, format="t")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]
    finally:
        os.umask(old)
        F._new_file_mode = None


def test_latent_and_delta_pickers_list_only_their_own_files(pack, tmp_path):
    """Load Latent lists latents, Apply Weight Delta lists deltas; a checkpoint saved as .safetensors in the input
    folder is in neither; a damaged file is in both, so loading it says what is wrong."""
    from core import latents as L

    G = tiny_generator()
    L.save_latent(L.sample_latents(G, [0], space="w"), tmp_path / "input" / "face.safetensors")
    tuned = D.clone_generator(G)
    with torch.no_grad():
        tuned.synthesis.b4.conv1.weight.add_(0.01)
    D.save_weight_delta(D.compute_weight_delta(G, tuned), tmp_path / "output" / "tuned.safetensors")
    core.save_generator(G, tmp_path / "input" / "model.safetensors")
    (tmp_path / "input" / "broken.safetensors").write_bytes(b"\x05\x00")
    nodes = {k: v for k, v in pack.NODE_CLASS_MAPPINGS.items()}
    latents = nodes["SGS_LoadLatent"].INPUT_TYPES()["required"]["latent_file"][0]
    deltas = nodes["SGS_ApplyWeightDelta"].INPUT_TYPES()["required"]["delta_file"][0]
    assert latents == ["broken.safetensors", "face.safetensors"]
    assert deltas == ["broken.safetensors", "tuned.safetensors [output]"]


# --- load_state_strict: the one strict state-dict loader (ArcFace, encoders, BiSeNet) ---

def _strict_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))


@pytest.mark.parametrize("damage, message", [
    ("missing", r"net\.pt: not a test net: missing \['0\.bias'\] \(1 in all\)\. Expected test\.pt"),
    ("unexpected", r"net\.pt: not a test net: unexpected \['2\.weight'\] \(1 in all\)\. Expected test\.pt"),
    ("shape", r"net\.pt: tensor 0\.weight has shape \[4, 3, 5, 5\], expected \[4, 3, 3, 3\] \(3x3 convs\)"),
    ("integer", r"net\.pt: tensor 1\.weight is torch\.int64, expected floating point"),
    ("not_a_tensor", r"net\.pt: entry '1\.bias' is a list, expected a tensor"),
    ("nan", r"net\.pt: tensor 1\.running_var holds NaN or infinite values: the file is damaged"),
    ("inf", r"net\.pt: tensor 0\.bias holds NaN or infinite values"),
])
def test_load_state_strict_names_what_is_wrong_and_copies_nothing(damage, message):
    src, dst = _strict_net(), _strict_net()
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    state = {k: v.clone() for k, v in src.state_dict().items()}
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    if damage == "missing":
        del state["0.bias"]
    elif damage == "unexpected":
        state["2.weight"] = torch.zeros(1)
    elif damage == "shape":
        state["0.weight"] = torch.zeros(4, 3, 5, 5)
    elif damage == "integer":
        state["1.weight"] = torch.zeros(4, dtype=torch.long)
    elif damage == "not_a_tensor":
        state["1.bias"] = [0.0]
    elif damage == "nan":
        state["1.running_var"][2] = float("nan")
    elif damage == "inf":
        state["0.bias"][0] = float("inf")
    with pytest.raises(CheckpointError, match=message):
        F.load_state_strict(dst, state, "net.pt", mismatch="not a test net", hint=". Expected test.pt",
                            shape_note=" (3x3 convs)")
    for k, v in dst.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} was changed by a refused state dict"


def test_load_state_strict_copies_everything_and_allows_missing_batchnorm_counters():
    src, dst = _strict_net(), _strict_net()
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    state = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert F.load_state_strict(dst, state, "net.pt", mismatch="not a test net") is dst
    for k, v in state.items():
        assert torch.equal(dst.state_dict()[k], v)


def test_load_state_strict_bounds_hostile_key_names():
    dst = _strict_net()
    state = dict(dst.state_dict())
    state["x" * 100_000] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        F.load_state_strict(dst, state, "net.pt", mismatch="not a test net")
    assert len(str(e.value)) < 600
