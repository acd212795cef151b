"""Latent directions (issue 20): SeFa/GANSpace discovery against linear algebra written here, applying edits and
sweeps, InterFaceGAN's conditional edit, our files and every importer on forged and hostile files."""

import json
import re

import numpy as np
import pytest
import torch

import core
from core.directions import (Directions, apply_directions, conditional_direction, direction_sweep, ganspace,
                             load_direction_file, load_directions, make_conditional, save_directions, sefa,
                             sefa_layers)
from conftest import tiny_generator
from forge import CODE_RAN, CodeRunningPayload


@pytest.fixture(scope="module")
def G64():
    return tiny_generator("stylegan2", img_resolution=64)


def _affines(G, pattern):
    """Affine weights [channels, w_dim] float64 picked from the state dict by name (independent of sefa_layers)."""
    return [t.double() for k, t in G.state_dict().items() if re.fullmatch(pattern, k)]


def _same_up_to_sign(a, b, atol=1e-5):
    a, b = a.double(), b.double()
    signs = torch.sign((a * b).sum(-1, keepdim=True))
    assert (signs != 0).all()
    torch.testing.assert_close(a, b * signs, atol=atol, rtol=0)


# --- SeFa ------------------------------------------------------------------------------------------------------

def test_sefa_rosinality_is_the_svd_of_the_conv_affines(G2):
    # rosinality: every modulated conv plus to_rgb1 (its 'to_rgbs' filter keeps the 4 px ToRGB)
    A = torch.cat(_affines(G2, r"synthesis\.b\d+\.conv[01]\.affine\.weight|synthesis\.b4\.torgb\.affine\.weight"))
    V = torch.svd(A).V                                       # columns are the directions (closed_form_factorization)
    d = sefa(G2, variant="rosinality", num=6)
    assert d.method == "sefa" and d.variant == "rosinality" and d.vectors.shape == (6, G2.w_dim)
    _same_up_to_sign(d.vectors, V[:, :6].t())
    s = torch.linalg.svdvals(A)
    np.testing.assert_allclose(d.info["eigenvalues"], (s[:6] ** 2).numpy(), rtol=1e-6)


def test_sefa_genforce_normalises_columns_and_takes_one_affine_per_w(G2):
    # genforce: layer{i} reads w i; the last index is the final ToRGB ('output')
    last = max(G2.synthesis.block_resolutions)
    Wt = torch.cat([w.t() for w in _affines(G2, r"synthesis\.b\d+\.conv[01]\.affine\.weight")] +
                   [_affines(G2, rf"synthesis\.b{last}\.torgb\.affine\.weight")[0].t()], 1).numpy()
    Wt = Wt / np.linalg.norm(Wt, axis=0, keepdims=True)
    vals, vecs = np.linalg.eig(Wt @ Wt.T)                    # genforce's own call (unsorted)
    order = np.argsort(-vals.real)
    d = sefa(G2, variant="genforce", num=5)
    _same_up_to_sign(d.vectors, torch.from_numpy(vecs.real.T[order[:5]].copy()))
    # a layer subset: only the affines reading w 2..4
    sub = sefa(G2, variant="genforce", num=3, layers=(2, 5))
    names = [s.name for s in G2.synthesis.style_layers() if not s.is_torgb and 2 <= s.w_index < 5]
    assert sub.info["affines"] == names and sub.layers == (2, 5)
    Wt = torch.cat([dict(G2.synthesis.named_modules())[n].affine.weight.double().t() for n in names], 1)
    Wt = Wt / Wt.norm(dim=0, keepdim=True)
    ev, ec = torch.linalg.eigh(Wt @ Wt.t())
    _same_up_to_sign(sub.vectors, ec[:, ev.argsort(descending=True)[:3]].t())


@pytest.mark.parametrize("arch", ["stylegan2", "stylegan3"])
def test_sefa_torgb_is_eigh_of_every_synthesis_and_torgb_affine(arch, G2, G3):
    G = G2 if arch == "stylegan2" else G3
    A = torch.cat(_affines(G, r"synthesis\.(?!input\.).*\.affine\.weight"))   # everything but SG3's input affine
    ev, ec = torch.linalg.eigh(A.t() @ A)
    d = sefa(G, variant="torgb", num=4)
    _same_up_to_sign(d.vectors, ec[:, ev.abs().argsort(descending=True)[:4]].t())
    torch.testing.assert_close(d.vectors.norm(dim=1), torch.ones(4))


def test_sefa_variants_differ_and_name_their_layers(G2, G3):
    sets = {v: sefa(G2, variant=v, num=3) for v in ("rosinality", "genforce", "torgb")}
    assert not torch.allclose(sets["rosinality"].vectors.abs(), sets["torgb"].vectors.abs(), atol=1e-3)
    assert "b4.torgb" in sefa_layers(G2, "rosinality") and "b8.torgb" not in sefa_layers(G2, "rosinality")
    assert "input" not in sefa_layers(G3, "torgb")
    assert not any(n.endswith("torgb") for n in sefa_layers(G3, "rosinality"))
    with pytest.raises(core.LatentError, match="variant must be one of"):
        sefa(G2, variant="svd")
    with pytest.raises(core.LatentError, match="num must be a whole number in 1..16"):
        sefa(G2, num=17)


# --- GANSpace --------------------------------------------------------------------------------------------------

def test_ganspace_components_orthonormal_ordered_and_one_sigma(G2):
    d = ganspace(G2, num_samples=3000, num_components=6, seed=3)
    u = d.vectors / d.scales[:, None]
    torch.testing.assert_close(u @ u.t(), torch.eye(6), atol=1e-5, rtol=0)
    assert (d.scales[:-1] >= d.scales[1:]).all()
    # the same samples, drawn here: the variance along each component is σ², and no direction has more than σ_0²
    z = torch.randn([3000, G2.z_dim], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        w = torch.cat([G2.mapping(z[i:i + 2000], None)[:, 0] for i in range(0, 3000, 2000)]).double()
    proj = (w - w.mean(0)) @ u.double().t()
    torch.testing.assert_close(proj.std(0), d.scales.double(), rtol=1e-4, atol=0)
    top = torch.linalg.eigvalsh(torch.cov(w.t())).max().sqrt()
    torch.testing.assert_close(d.scales[0].double(), top, rtol=1e-4, atol=0)
    assert sum(d.info["var_ratio"]) <= 1 and d.info["num_samples"] == 3000
    assert torch.equal(ganspace(G2, num_samples=3000, num_components=6, seed=3).vectors, d.vectors)


# --- Applying --------------------------------------------------------------------------------------------------

def test_mapped_w_covariance_equals_torch_cov_of_the_same_samples(G2):
    """The streamed mean / covariance (GANSpace's and the II2S prior's) against torch.cov of the same w, drawn with
    the same generator, for chunks that do not divide the count and a transform."""
    from core.latents import mapped_w_covariance
    n, seed = 250, 7
    z = torch.randn([n, G2.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = G2.mapping(z, None)[:, 0].double()
    for transform, ref in ((None, w), (lambda t: torch.nn.functional.leaky_relu(t, 5.0),
                                       torch.nn.functional.leaky_relu(w, 5.0))):
        seen = []
        mean, cov = mapped_w_covariance(G2, n, seed=seed, chunk=60, transform=transform,
                                        callback=lambda d, t: seen.append((d, t)))
        torch.testing.assert_close(mean, ref.mean(0), rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(cov, torch.cov(ref.t()), rtol=1e-5, atol=1e-9)
        assert seen == [(60, n), (120, n), (180, n), (240, n), (250, n)]


@pytest.fixture(scope="module")
def dirs(G64):
    return sefa(G64, num=4)


def test_apply_then_negative_returns_the_start(G64, dirs):
    w = core.sample_latents(G64, [1, 2, 3], space="w")
    wp = core.sample_latents(G64, [4], space="w+", truncation_psi=0.7, truncation_cutoff=4)
    per_layer = Directions(torch.randn(1, G64.num_ws, G64.w_dim, generator=torch.Generator().manual_seed(0)),
                           ("pose",), method="interfacegan")
    cases = [(w, [(dirs, 0, 7.5), (dirs, "sefa_02", -3.25)], None), (w, [(dirs, 1, 12.0)], (2, 6)),
             (wp, [(dirs, 3, 5.0)], None), (w, [(per_layer, 0, 2.5)], None)]
    for latent, edits, layers in cases:
        moved = apply_directions(G64, latent, edits, layers=layers)
        assert (moved.tensor - latent_to(moved, latent, G64)).abs().max() > 0.1
        back = apply_directions(G64, moved, [(d, i, -s) for d, i, s in edits], layers=layers)
        torch.testing.assert_close(back.tensor, latent_to(back, latent, G64), atol=1e-6, rtol=1e-6)


def latent_to(result, start, G):
    """The start latent in the result's space (w -> w+ broadcast)."""
    return core.convert_latent(G, start, result.space).tensor


def test_apply_spaces_and_layer_ranges(G64, dirs):
    w = core.sample_latents(G64, [5], space="w")
    assert apply_directions(G64, w, [(dirs, 0, 1.0)]).space == "w"
    ranged = apply_directions(G64, w, [(dirs, 0, 2.0)], layers=(3, 7))
    assert ranged.space == "w+"
    delta = ranged.tensor - w.tensor[:, None]
    assert delta[:, :3].abs().max() == 0 and delta[:, 7:].abs().max() == 0
    torch.testing.assert_close(delta[:, 3:7], (2.0 * dirs.vectors[0]).expand(1, 4, -1), atol=1e-6, rtol=0)
    # the record's own suggested range is used unless one is given; (0, num_ws) is every layer
    suggested = Directions(dirs.vectors, dirs.names, layers=(0, 2), generator=dirs.generator)
    assert apply_directions(G64, w, [(suggested, 0, 1.0)]).space == "w+"
    assert apply_directions(G64, w, [(suggested, 0, 1.0)], layers=(0, G64.num_ws)).space == "w"
    # z latents with w directions are mapped first, with their truncation
    z = core.sample_latents(G64, [6], space="z", truncation_psi=0.5)
    mapped = core.sample_latents(G64, [6], space="w", truncation_psi=0.5)
    out = apply_directions(G64, z, [(dirs, 1, 3.0)])
    assert out.space == "w"
    torch.testing.assert_close(out.tensor, mapped.tensor + 3.0 * dirs.vectors[1], atol=1e-5, rtol=0)
    zc = core.sample_latents(G64, [6], space="z", truncation_psi=0.5, truncation_cutoff=2)
    assert apply_directions(G64, zc, [(dirs, 1, 3.0)]).space == "w+"
    # z directions move z
    zdir = Directions(torch.ones(1, G64.z_dim), ("ones",), space="z")
    moved = apply_directions(G64, z, [(zdir, 0, 0.5)])
    assert moved.space == "z" and moved.truncation_psi == 0.5
    torch.testing.assert_close(moved.tensor, z.tensor + 0.5)
    with pytest.raises(core.LatentError, match="z directions move z before the mapping, but this is a w latent"):
        apply_directions(G64, w, [(zdir, 0, 1.0)])


def test_apply_to_fs_moves_only_the_codes_after_F(G64, dirs):
    fs = core.fs_from_wplus(G64, core.sample_latents(G64, [7], space="w+"))
    first = core.latents.fs_first_w(G64)
    out = apply_directions(G64, fs, [(dirs, 0, 4.0)])
    assert out.space == "fs" and torch.equal(out.features, fs.features)
    delta = out.tensor - fs.tensor
    assert delta[:, :first].abs().max() == 0 and delta[:, first:].abs().min() >= 0
    torch.testing.assert_close(delta[:, first:], (4.0 * dirs.vectors[0]).expand(1, G64.num_ws - first, -1),
                               atol=1e-6, rtol=0)
    with pytest.raises(core.LatentError, match="lies inside the fs latent's F"):
        apply_directions(G64, fs, [(dirs, 0, 1.0)], layers=(0, 3))


def test_apply_refuses_what_does_not_fit(G2, G64, dirs):
    w2 = core.sample_latents(G2, [1], space="w")
    wide = Directions(torch.randn(2, 32), ("a", "b"))
    with pytest.raises(core.LatentError, match="have 32 values, but tiny-stylegan2 has w_dim 16"):
        apply_directions(G2, w2, [(wide, 0, 1.0)])
    per_layer = Directions(torch.randn(1, 18, 16), ("pose",))
    with pytest.raises(core.LatentError, match="18 w\\+ layers, but tiny-stylegan2 has num_ws 8"):
        apply_directions(G2, w2, [(per_layer, 0, 1.0)])
    w = core.sample_latents(G64, [1], space="w")
    with pytest.raises(core.LatentError, match="finite number"):
        apply_directions(G64, w, [(dirs, 0, float("nan"))])
    with pytest.raises(core.LatentError, match="no direction named 'smile'"):
        apply_directions(G64, w, [(dirs, "smile", 1.0)])
    with pytest.raises(core.LatentError, match="index must be a whole number in 0..3"):
        apply_directions(G64, w, [(dirs, 4, 1.0)])
    with pytest.raises(core.LatentError, match="0 <= start < end <= 10"):
        apply_directions(G64, w, [(dirs, 0, 1.0)], layers=(3, 30))
    s = core.convert_latent(G64, w, "s")
    with pytest.raises(core.LatentError, match="S \\(StyleSpace\\) latent"):
        apply_directions(G64, s, [(dirs, 0, 1.0)])
    assert torch.equal(w.tensor, core.sample_latents(G64, [1], space="w").tensor)   # inputs never modified


def test_direction_sweep_is_latent_major_and_capped(G64, dirs):
    w = core.sample_latents(G64, [1, 2], space="w")
    out = direction_sweep(G64, w, dirs, "sefa_01", [-2.0, 0.0, 2.0])
    assert out.space == "w" and out.batch_size == 6
    for n in range(2):
        for j, s in enumerate((-2.0, 0.0, 2.0)):
            single = apply_directions(G64, core.Latent(w.tensor[n:n + 1], "w", w.generator), [(dirs, 1, s)])
            assert torch.equal(out.tensor[3 * n + j], single.tensor[0])
    assert direction_sweep(G64, w, dirs, 0, [1.0], layers=(0, 4)).space == "w+"
    with pytest.raises(core.LatentError, match="asks for 20,000 latents"):
        direction_sweep(G64, w, dirs, 0, [0.0] * 10_000)


# --- Conditional edit ------------------------------------------------------------------------------------------

def test_conditional_direction_is_orthogonal_to_each_protected_one():
    g = torch.Generator().manual_seed(1)
    primary, a, b = (torch.randn(1, 64, generator=g) for _ in range(3))
    one = conditional_direction(primary, [a])
    assert abs(float((one.double() * a.double()).sum())) < 1e-5 * float(a.norm())
    torch.testing.assert_close(one.norm(), primary.norm())
    # InterFaceGAN's formula for unit boundaries: n1 - (n1ᵀn2) n2, normalised
    n1, n2 = primary / primary.norm(), a / a.norm()
    expected = n1 - (n1 * n2).sum() * n2
    torch.testing.assert_close(conditional_direction(n1, [n2]), expected / expected.norm(), atol=1e-6, rtol=0)
    two = conditional_direction(primary, [a, b])
    for q in (a, b):
        assert abs(float((two.double() * q.double()).sum())) < 1e-5 * float(q.norm() * two.norm())
    # a protected direction dependent on earlier ones adds nothing
    assert torch.allclose(conditional_direction(primary, [a, b, a + b]), two, atol=1e-5)
    with pytest.raises(core.LatentError, match="lies in the span"):
        conditional_direction(a + 2 * b, [a, b])
    with pytest.raises(core.LatentError, match="protected direction 0 has shape"):
        conditional_direction(primary, [torch.randn(1, 18, 64)])
    per = torch.randn(18, 8, generator=g)
    assert conditional_direction(per, [torch.randn(18, 8, generator=g)]).shape == (18, 8)


def test_make_conditional_record(G64, dirs):
    d = make_conditional(dirs, 0, [(dirs, 1), (dirs, "sefa_02")])
    assert d.names == ("sefa_00 | sefa_01, sefa_02",) and d.method == "conditional" and d.count == 1
    assert d.strength_range == dirs.strength_range == 10.0
    assert abs(float(d.vectors[0] @ dirs.vectors[1])) < 1e-6 and abs(float(d.vectors[0] @ dirs.vectors[2])) < 1e-6


# --- Our files -------------------------------------------------------------------------------------------------

def test_save_load_round_trip(G64, tmp_path):
    for d in (sefa(G64, variant="genforce", num=3, layers=(2, 6)), ganspace(G64, num_samples=500, num_components=3)):
        path = save_directions(d, tmp_path / f"{d.method}.safetensors")
        back = load_directions(path)
        assert torch.equal(back.vectors, d.vectors) and torch.equal(back.scales, d.scales)
        assert (back.names, back.space, back.method, back.variant, back.generator, back.layers, back.info) == \
            (d.names, d.space, d.method, d.variant, d.generator, d.layers, d.info)
        assert load_direction_file(path).names == d.names
    assert not list(tmp_path.glob("*.partial"))


def _ours(tmp_path, name="d.safetensors", tensors=None, **meta):
    from safetensors.torch import save_file

    base = {"format": "stylegan-studio-directions", "version": "1", "names": json.dumps(["a", "b"]), "space": "w",
            "method": "imported", "variant": "", "generator": "", "layers": "", "info": "{}"}
    base.update(meta)
    tensors = tensors if tensors is not None else {"vectors": torch.randn(2, 8), "scales": torch.ones(2)}
    save_file(tensors, str(tmp_path / name), metadata={k: v for k, v in base.items() if v is not None})
    return tmp_path / name


@pytest.mark.parametrize("tensors, meta, match", [
    ({"vectors": torch.full((2, 8), float("nan")), "scales": torch.ones(2)}, {}, "NaN or infinite"),
    ({"vectors": torch.ones(2, 8, dtype=torch.int32), "scales": torch.ones(2)}, {}, "dtype torch.int32"),
    ({"vectors": torch.ones(2, 8)}, {}, "no 'scales' tensor"),
    ({"vectors": torch.ones(2, 8), "scales": torch.ones(2), "code": torch.ones(1)}, {}, "unexpected tensors"),
    (None, {"names": json.dumps(["a"])}, "names has 1 entries but there are 2"),
    (None, {"names": "not json"}, "field 'names' is invalid"),
    (None, {"version": "9"}, "update the pack"),
    (None, {"space": "w+"}, "field 'space' is invalid"),
    (None, {"method": "sefa", "variant": "svd"}, "field 'variant' is invalid"),
    (None, {"layers": "5,2"}, "field 'layers' is invalid"),
    (None, {"generator": '{"name": 1}'}, "field 'generator' is invalid"),
    (None, {"info": "[1, 2]"}, "field 'info' is invalid"),
    (None, {"method": None}, "no 'method' field"),
    ({"vectors": torch.ones(2, 8), "scales": -torch.ones(2)}, {}, "finite and positive"),
])
def test_our_file_refuses_damage(tmp_path, tensors, meta, match):
    path = _ours(tmp_path, tensors=tensors, **meta)
    with pytest.raises(core.CheckpointError, match=match):
        load_direction_file(path)


def test_other_tags_and_suffixes_are_refused(tmp_path, G2):
    latent = core.save_latent(core.sample_latents(G2, [1]), tmp_path / "latent.safetensors")
    with pytest.raises(core.CheckpointError, match="another kind \\('stylegan-studio-latent'\\)"):
        load_direction_file(latent)
    (tmp_path / "x.bin").write_bytes(b"1234")
    with pytest.raises(core.CheckpointError, match="unknown suffix '.bin'"):
        load_direction_file(tmp_path / "x.bin")
    with pytest.raises(FileNotFoundError, match="direction file not found"):
        load_direction_file(tmp_path / "none.npy")


# --- Importers -------------------------------------------------------------------------------------------------

def test_interfacegan_npy_and_pt(tmp_path):
    b = np.random.RandomState(0).randn(1, 512).astype(np.float32)
    np.save(tmp_path / "stylegan_ffhq_smile_w_boundary.npy", b)
    d = load_direction_file(tmp_path / "stylegan_ffhq_smile_w_boundary.npy")
    assert d.method == "interfacegan" and d.names == ("stylegan_ffhq_smile_w_boundary",) and d.space == "w"
    assert torch.equal(d.vectors, torch.from_numpy(b))
    torch.save(torch.from_numpy(b), tmp_path / "age.pt")                        # e4e/NADA/HyperStyle [1, 512]
    assert torch.equal(load_direction_file(tmp_path / "age.pt").vectors, torch.from_numpy(b))
    pose = torch.randn(1, 18, 512)
    torch.save(pose, tmp_path / "pose.pt")                                      # the per-layer pose boundary
    d = load_direction_file(tmp_path / "pose.pt")
    assert d.per_layer and d.names == ("pose",) and torch.equal(d.vectors, pose)
    np.save(tmp_path / "flat.npy", b[0].astype(np.float64))
    assert load_direction_file(tmp_path / "flat.npy", space="z").space == "z"
    np.save(tmp_path / "bad.npy", np.zeros((3, 4, 5, 6), np.float32))
    with pytest.raises(core.CheckpointError, match="got \\[3, 4, 5, 6\\]"):
        load_direction_file(tmp_path / "bad.npy")
    np.save(tmp_path / "ints.npy", np.zeros((1, 8), np.int64))
    with pytest.raises(core.CheckpointError, match="dtype int64; direction arrays hold floats"):
        load_direction_file(tmp_path / "ints.npy")


def test_hostile_npy_is_refused_before_numpy_reads_it(tmp_path):
    evil = np.empty(1, dtype=object)
    evil[0] = CodeRunningPayload()
    np.save(tmp_path / "evil.npy", evil, allow_pickle=True)
    np.load(tmp_path / "evil.npy", allow_pickle=True)                  # the payload is live: loading runs it
    assert CODE_RAN == [1]
    CODE_RAN.clear()
    with pytest.raises(core.CheckpointError, match="holds Python objects .* which numpy would unpickle"):
        load_direction_file(tmp_path / "evil.npy")
    assert CODE_RAN == []
    # a header declaring far more data than the file holds (numpy would allocate it before reading)
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 8), np.float32))
    header["shape"] = (10 ** 6, 10 ** 6)
    with open(tmp_path / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 32)
    with pytest.raises(core.CheckpointError, match="declares shape \\[1000000, 1000000\\].*holds 32 bytes"):
        load_direction_file(tmp_path / "huge.npy")


def test_rosinality_factor_and_hostile_pt(tmp_path):
    eig = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(2)))[0]
    torch.save({"ckpt": "550000.pt", "eigvec": eig}, tmp_path / "factor.pt")
    d = load_direction_file(tmp_path / "factor.pt")
    assert (d.method, d.variant, d.count, d.info["ckpt"]) == ("sefa", "rosinality", 16, "550000.pt")
    assert torch.equal(d.vectors[3], eig[:, 3])                                # columns are directions
    torch.save({"ckpt": "x", "eigvec": CodeRunningPayload()}, tmp_path / "evil.pt")
    with pytest.raises(core.CheckpointError, match="cannot read the file safely"):
        load_direction_file(tmp_path / "evil.pt")
    assert CODE_RAN == []
    import forge

    bomb = forge.write_torch_zip_bomb(tmp_path / "bomb.pt", 1 << 28)           # 256 MiB of zeros in ~256 KB
    with pytest.raises(core.CheckpointError, match="bomb.pt: not a readable direction file"):
        load_direction_file(bomb)
    torch.save({"g_ema": {"w": torch.ones(1)}}, tmp_path / "ckpt.pt")
    with pytest.raises(core.CheckpointError, match="dict with keys \\['g_ema'\\]: neither an InterFaceGAN"):
        load_direction_file(tmp_path / "ckpt.pt")
    torch.save({"ckpt": "x", "eigvec": torch.ones(4, 5)}, tmp_path / "rect.pt")
    with pytest.raises(core.CheckpointError, match="'eigvec' \\[dim, dim\\]"):
        load_direction_file(tmp_path / "rect.pt")


def _ganspace_npz(path, k=5, dim=16, compress=True, **override):
    g = np.random.RandomState(0)
    comp = np.linalg.qr(g.randn(dim, dim))[0][:, :k].T.reshape(k, 1, dim).astype(np.float32)
    arrays = {"act_comp": comp, "act_mean": np.zeros((1, dim), np.float32), "act_stdev": np.ones(k, np.float32),
              "lat_comp": comp, "lat_mean": np.zeros((1, dim), np.float32),
              "lat_stdev": np.linspace(3, 1, k).astype(np.float32), "var_ratio": np.full(k, 0.1, np.float32),
              "random_stdevs": np.ones(k, np.float32)}
    arrays.update(override)
    (np.savez_compressed if compress else np.savez)(path, **arrays)
    return path


def test_ganspace_npz(tmp_path):
    d = load_direction_file(_ganspace_npz(tmp_path / "stylegan2-ffhq_style_ipca_c5_n1000000_w.npz"))
    assert d.space == "w" and d.method == "ganspace" and d.count == 5
    torch.testing.assert_close(d.vectors.norm(dim=1), torch.linspace(3, 1, 5))
    torch.testing.assert_close(d.scales, torch.linspace(3, 1, 5))
    assert d.info["var_ratio"] == pytest.approx([0.1] * 5)
    assert load_direction_file(_ganspace_npz(tmp_path / "stylegan-ffhq_g_mapping_ipca_c5_n1000.npz")).space == "z"
    assert load_direction_file(tmp_path / "stylegan-ffhq_g_mapping_ipca_c5_n1000.npz", space="w").space == "w"
    evil = np.empty(1, dtype=object)
    evil[0] = CodeRunningPayload()
    _ganspace_npz(tmp_path / "evil_w.npz", compress=False, lat_stdev=evil)
    with pytest.raises(core.CheckpointError, match="array 'lat_stdev.npy' holds Python objects"):
        load_direction_file(tmp_path / "evil_w.npz")
    assert CODE_RAN == []
    np.savez(tmp_path / "other.npz", weights=np.ones(3, np.float32))
    with pytest.raises(core.CheckpointError, match="holds 'lat_comp' and 'lat_stdev'"):
        load_direction_file(tmp_path / "other.npz")
    _ganspace_npz(tmp_path / "neg_w.npz", lat_stdev=-np.ones(5, np.float32))
    with pytest.raises(core.CheckpointError, match="finite and positive"):
        load_direction_file(tmp_path / "neg_w.npz")
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "neg_w.npz").read_bytes()[:100])
    with pytest.raises(core.CheckpointError, match="not a readable .npz"):
        load_direction_file(tmp_path / "trunc.npz")


def test_dfl_component_files(tmp_path):
    from safetensors.torch import save_file

    rows = torch.linalg.qr(torch.randn(16, 16))[0][:, :3].t().contiguous()
    order = ["component_02", "component_00", "component_01"]
    save_file({f"component_{i:02d}": rows[i] for i in range(3)}, str(tmp_path / "sefa.safetensors"),
              metadata={"method": "sefa", "num_components": "3", "w_dim": "16", "component_order": json.dumps(order)})
    d = load_direction_file(tmp_path / "sefa.safetensors")
    assert d.names == tuple(order) and (d.method, d.variant) == ("sefa", "torgb")
    assert torch.equal(d.vectors[0], rows[2])
    save_file({f"component_{i:02d}": 2.5 * rows[i] for i in range(3)}, str(tmp_path / "gs.safetensors"),
              metadata={"method": "ganspace"})
    d = load_direction_file(tmp_path / "gs.safetensors")
    assert d.method == "ganspace" and d.names == ("component_00", "component_01", "component_02")
    torch.testing.assert_close(d.scales, torch.full((3,), 2.5))
    save_file({"component_00": rows[0]}, str(tmp_path / "lying.safetensors"),
              metadata={"component_order": json.dumps(["component_00", "component_01"])})
    with pytest.raises(core.CheckpointError, match="'component_order' lists"):
        load_direction_file(tmp_path / "lying.safetensors")
    save_file({"synthesis.b4.conv1.weight": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(core.CheckpointError, match="only 'component_NN' tensors"):
        load_direction_file(tmp_path / "model.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(core.CheckpointError, match="not a readable safetensors"):
        load_direction_file(tmp_path / "junk.safetensors")


def test_imported_directions_apply_and_check_w_dim(G2, tmp_path):
    np.save(tmp_path / "smile.npy", np.ones((1, 512), np.float32))
    d = load_direction_file(tmp_path / "smile.npy")
    with pytest.raises(core.LatentError, match="have 512 values, but tiny-stylegan2 has w_dim 16"):
        apply_directions(G2, core.sample_latents(G2, [0]), [(d, 0, 1.0)])
    np.save(tmp_path / "small.npy", np.ones((1, 16), np.float32))
    out = apply_directions(G2, core.sample_latents(G2, [0]), [(load_direction_file(tmp_path / "small.npy"), 0, 1.0)])
    torch.testing.assert_close(out.tensor, core.sample_latents(G2, [0]).tensor + 1)


def test_npz_inflating_past_the_cap_is_refused_unread(tmp_path, monkeypatch):
    from core.directions import files as DF

    _ganspace_npz(tmp_path / "big_w.npz", random_stdevs=np.zeros(1 << 20, np.float32))   # 4 MiB of zeros, ~4 KB
    assert (tmp_path / "big_w.npz").stat().st_size < 100_000
    monkeypatch.setattr(DF, "MAX_DIRECTION_FILE_BYTES", 1 << 20)
    with pytest.raises(core.CheckpointError, match="the archive inflates to 4,19.* bytes"):
        load_direction_file(tmp_path / "big_w.npz")


def test_per_layer_directions_with_a_range_and_mixed_z_and_w_edits(G64, dirs):
    w = core.sample_latents(G64, [2], space="w")
    pose = Directions(torch.arange(G64.num_ws * G64.w_dim, dtype=torch.float32).reshape(1, G64.num_ws, G64.w_dim),
                      ("pose",))
    out = apply_directions(G64, w, [(pose, 0, 0.5)], layers=(1, 3))
    delta = out.tensor - w.tensor[:, None]
    assert out.space == "w+" and delta[:, [0, 3, 4]].abs().max() == 0
    torch.testing.assert_close(delta[0, 1:3], 0.5 * pose.vectors[0, 1:3])
    z = core.sample_latents(G64, [2], space="z")
    zdir = Directions(torch.ones(1, G64.z_dim), ("ones",), space="z")
    both = apply_directions(G64, z, [(zdir, 0, 0.25), (dirs, 0, 2.0)])
    moved_z = core.Latent(z.tensor + 0.25, "z", z.generator)
    torch.testing.assert_close(both.tensor, core.convert_latent(G64, moved_z, "w").tensor + 2.0 * dirs.vectors[0],
                               atol=1e-5, rtol=0)


def test_stylegan3_directions_apply(G3):
    d = sefa(G3, variant="genforce", num=2)
    w = core.sample_latents(G3, [0], space="w")
    out = apply_directions(G3, w, [(d, 1, 5.0)])
    torch.testing.assert_close(out.tensor, w.tensor + 5.0 * d.vectors[1])
    images = core.synthesize(G3, out)
    assert images.shape[0] == 1 and torch.isfinite(images).all()
