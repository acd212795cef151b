"""StyleCLIP latent mapper: architecture, Ranger/Lookahead, training, checkpoint/resume/cancel, mapper files; on a
tiny generator (64 px, so all three layer groups exist) and a tiny random open_clip model."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

import core  # noqa: E402
from core.edits import latent_mapper as M  # noqa: E402
from conftest import SMALL_CLIP_CFG, tiny_clip, tiny_generator  # noqa: E402

TINY = "SGS-Mapper-Tiny"
TINY_CFG = SMALL_CLIP_CFG

# A few steps on a handful of latents; no identity term unless a test brings one.
FAST = dataclasses.replace(M.DEFAULTS, num_steps=8, id_lambda=0.0, num_train_latents=6)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip(tmp_path_factory, TINY, TINY_CFG)


@pytest.fixture(scope="module")
def G():
    return tiny_generator("stylegan2", img_resolution=64)  # num_ws 10: coarse 0-3, medium 4-7, fine 8-9


@pytest.fixture(scope="module")
def text(clip):
    return clip.encode_text(["a bright red face"])


def random_ws(G, n=3, seed=0):
    return torch.randn([n, G.num_ws, G.w_dim], generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------
# Architecture


def test_parameter_count_and_layout():
    m = M.LatentMapper(512, 18)
    per_group = 4 * (512 * 512 + 512)  # 4 equalised linear layers, weight + bias each
    for g in ("coarse", "medium", "fine"):
        assert sum(p.numel() for p in getattr(m, g).parameters()) == per_group
    assert sum(p.numel() for p in m.parameters()) == 3 * per_group == 3_151_872
    assert "coarse.fc0.weight" in m.state_dict() and "fine.fc3.bias" in m.state_dict()
    # Other generator sizes: fine = 8..num_ws-1; with num_ws <= 8 it has no layers and no network.
    assert [list(r) for r in M.group_layers(14).values()] == [[0, 1, 2, 3], [4, 5, 6, 7], list(range(8, 14))]
    assert list(M.group_layers(16)["fine"]) == list(range(8, 16))
    small = M.LatentMapper(16, 8)
    assert small.groups == ("coarse", "medium") and not hasattr(small, "fine")
    assert small(torch.randn(2, 8, 16)).shape == (2, 8, 16)
    with pytest.raises(ValueError, match="nothing to train"):
        M.LatentMapper(16, 8, coarse=False, medium=False)


def test_equalised_lr_and_leaky_relu_by_hand():
    m = M.LatentMapper(16, 10, pixel_norm="w", seed=3)
    fc = m.medium.fc0
    # Stored weights are N(0, 1/lr_mul^2): std about 100; the layer uses them times lr_mul / sqrt(fan_in).
    assert 80 < float(m.coarse.fc0.weight.detach().std()) < 120 and torch.all(m.coarse.fc0.bias == 0)
    with torch.no_grad():
        fc.bias.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.randn(5, 16)
    expected = F.leaky_relu(x @ (fc.weight * (0.01 / 4)).t() + 0.01 * fc.bias, 0.2) * math.sqrt(2)
    torch.testing.assert_close(fc(x), expected)
    # Whole group by hand: PixelNorm of each w over its 16 channels, then 4 such layers.
    ws = torch.randn(2, 10, 16)
    h = ws[:, 4:8] / ws[:, 4:8].square().mean(dim=2, keepdim=True).add(1e-8).sqrt()
    for i in range(4):
        layer = getattr(m.medium, f"fc{i}")
        h = F.leaky_relu(h @ (layer.weight * 0.0025).t() + 0.01 * layer.bias, 0.2) * math.sqrt(2)
    torch.testing.assert_close(m(ws)[:, 4:8], h)
    torch.testing.assert_close(m.apply(ws, 0.5), ws + 0.05 * m(ws))


def test_pixel_norm_per_w_and_reference_per_layer_axis():
    ws = torch.randn(2, 10, 16)
    m = M.LatentMapper(16, 10, seed=1)
    # Per w: scaling one w does not change its delta, and the other ws' deltas do not depend on it.
    scaled = ws.clone()
    scaled[:, 2] *= 7.0
    torch.testing.assert_close(m(scaled), m(ws))
    moved = ws.clone()
    moved[:, 2] += 1.0
    d0, d1 = m(ws), m(moved)
    assert not torch.allclose(d0[:, 2], d1[:, 2])
    torch.testing.assert_close(d0[:, [0, 1, 3]], d1[:, [0, 1, 3]])
    # The reference's PixelNorm normalises dim 1 of [N, L, C], i.e. each channel over the group's layers.
    r = M.LatentMapper(16, 10, pixel_norm="layers", seed=1)
    r.load_state_dict(m.state_dict())
    g = ws[:, 0:4]
    torch.testing.assert_close(r(ws)[:, 0:4], r.coarse((g / g.square().mean(1, keepdim=True).add(1e-8).sqrt())
                                                       .reshape(-1, 16)).reshape(2, 4, 16))
    d2 = r(moved)
    assert not torch.allclose(r(ws)[:, 0], d2[:, 0])  # another layer of the same group moved it


def test_groups_off_leave_their_layers_alone(G, clip, text):
    with pytest.raises(ValueError, match="at least one"):
        M.train_latent_mapper(G, clip, text, config=dataclasses.replace(FAST, coarse=False, medium=False, fine=False))
    r = M.train_latent_mapper(G, clip, text, config=dataclasses.replace(FAST, num_steps=3, coarse=False, fine=False))
    m = r.mapper
    assert m.groups == ("medium",) and not any(k.startswith(("coarse", "fine")) for k in m.state_dict())
    ws = random_ws(G)
    out = M.apply_latent_mapper(m, ws)
    assert torch.equal(out[:, :4], ws[:, :4]) and torch.equal(out[:, 8:], ws[:, 8:])
    assert not torch.allclose(out[:, 4:8], ws[:, 4:8])


def test_apply_strength_batches_and_shape_errors(G):
    m = M.LatentMapper(G.w_dim, G.num_ws, seed=2)
    ws = random_ws(G, 5)
    before = ws.clone()
    full = M.apply_latent_mapper(m, ws)
    torch.testing.assert_close(M.apply_latent_mapper(m, ws, strength=0.5) - ws, 0.5 * (full - ws))
    assert torch.equal(M.apply_latent_mapper(m, ws, strength=0.0), ws) and torch.equal(ws, before)
    torch.testing.assert_close(torch.cat([M.apply_latent_mapper(m, ws[i:i + 1]) for i in range(5)]), full)
    with pytest.raises(core.LatentError, match=r"\[N, 10, 16\]"):
        M.apply_latent_mapper(m, torch.zeros(1, 8, 16))


def test_reference_clip_pool_equals_upsample_and_avgpool():
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    ref = F.avg_pool2d(F.interpolate(x, scale_factor=7, mode="nearest"), kernel_size=64 // 32)
    out = M.reference_clip_pool(x)
    assert out.shape == (2, 3, 224, 224)
    torch.testing.assert_close(out, ref)
    x = torch.randn(1, 3, 256, 256, dtype=torch.float64)
    torch.testing.assert_close(M.reference_clip_pool(x),
                               F.avg_pool2d(F.interpolate(x, scale_factor=7, mode="nearest"), kernel_size=8))


# ------------------------------------------------------------------------------------------------
# Optimiser


def test_lookahead_two_steps_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = M.Lookahead(torch.optim.SGD([p], lr=1.0), k=2, alpha=0.5)
    g = torch.tensor([0.25, 0.5])
    opt.zero_grad()
    (p * g).sum().backward()
    opt.step()  # fast: p - g = [0.75, -2.5]; no sync yet
    assert torch.equal(p.detach(), torch.tensor([0.75, -2.5]))
    opt.zero_grad()
    (p * g).sum().backward()
    opt.step()  # fast [0.5, -3.0]; slow = 1·[1, -2] + 0.5·([0.5, -3] - [1, -2]) = [0.75, -2.5]; fast = slow
    assert torch.equal(p.detach(), torch.tensor([0.75, -2.5]))
    assert torch.equal(opt.slow[0], torch.tensor([0.75, -2.5])) and opt.num_steps == 2


def _ranger_reference(p0: list[torch.Tensor], grads: list[list[torch.Tensor]], lr: float, k: int) -> list[torch.Tensor]:
    """ranger.py's update written out in float64 (per parameter: GC for ndim > 1, RAdam with threshold 5,
    Lookahead every k steps), betas (0.95, 0.999), eps 1e-5."""
    b1, b2, eps = 0.95, 0.999, 1e-5
    out = []
    for i, p in enumerate(p0):
        p, m, v, slow = p.double().clone(), torch.zeros_like(p, dtype=torch.float64), \
            torch.zeros_like(p, dtype=torch.float64), p.double().clone()
        for t, gs in enumerate(grads, start=1):
            g = gs[i].double().clone()
            if g.ndim > 1:
                g -= g.mean(dim=tuple(range(1, g.ndim)), keepdim=True)
            v = b2 * v + (1 - b2) * g * g
            m = b1 * m + (1 - b1) * g
            n_max = 2 / (1 - b2) - 1
            n_sma = n_max - 2 * t * b2 ** t / (1 - b2 ** t)
            if n_sma > 5:
                step = math.sqrt((1 - b2 ** t) * (n_sma - 4) / (n_max - 4) * (n_sma - 2) / n_sma * n_max
                                 / (n_max - 2)) / (1 - b1 ** t)
                p = p - step * lr * m / (v.sqrt() + eps)
            else:
                p = p - lr / (1 - b1 ** t) * m
            if t % k == 0:
                slow = slow + 0.5 * (p - slow)
                p = slow.clone()
        out.append(p)
    return out


def test_ranger_matches_ranger_py_math():
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 4, generator=gen))
    b = torch.nn.Parameter(torch.randn(4, generator=gen))
    p0 = [w.detach().clone(), b.detach().clone()]
    grads = [[torch.randn(3, 4, generator=gen), torch.randn(4, generator=gen)] for _ in range(13)]
    opt = M.Ranger([w, b], lr=0.5, k=6)  # 13 steps: the SMA threshold at step 6, Lookahead at 6 and 12
    for gs in grads:
        opt.zero_grad()
        w.grad, b.grad = gs[0].clone(), gs[1].clone()
        opt.step()
    ref = _ranger_reference(p0, grads, lr=0.5, k=6)
    torch.testing.assert_close(w.detach().double(), ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.detach().double(), ref[1], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Training


@pytest.mark.slow
def test_training_lowers_the_loss_and_leaves_the_generator_alone(G, clip, text):
    G = copy.deepcopy(G).requires_grad_(True)  # a generator whose weights would take gradients if it could
    before = {k: v.clone() for k, v in G.state_dict().items()}
    seen = []
    # Two latents (the same batch every step, so the curve is not batch noise) and a larger lr than the
    # reference's 0.5: a few dozen Ranger steps then move the mapper visibly.
    cfg = dataclasses.replace(FAST, num_steps=30, lr=5.0, num_train_latents=2)
    r = M.train_latent_mapper(G, clip, text, config=cfg, seed=1, preview_every=10, callback=seen.append)
    losses = [h["loss"] for h in r.history]
    assert len(losses) == 30 and set(r.history[0]) == {"clip", "l2", "loss"}
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 2e-3
    assert sum(h["clip"] for h in r.history[-5:]) < sum(h["clip"] for h in r.history[:5])
    assert [p.step for p in seen] == list(range(1, 31))
    assert [p.step for p in seen if p.image is not None] == [1, 10, 20, 30]
    p = seen[-1]
    assert p.image.shape == (1, 3, 64, 64) and p.original.shape == (1, 3, 64, 64) and p.total == 30
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in before.items())
    assert all(q.grad is None for q in G.parameters())  # backward(inputs=mapper params) only
    assert not r.mapper.training and not any(q.requires_grad for q in r.mapper.parameters())
    assert "loss:" in r.report() and "30 steps" in r.report()


def test_identity_term_compares_edited_with_unedited_images(G, clip, text):
    calls = []

    def id_loss(x_hat, x):
        calls.append((x_hat.requires_grad, x.requires_grad))
        return (x_hat - x).square().mean()

    with pytest.raises(ValueError, match="identity loss"):
        M.train_latent_mapper(G, clip, text, config=dataclasses.replace(FAST, id_lambda=0.1))
    lat = core.sample_latents(G, [1, 2], space="w+", truncation_psi=0.5)
    r = M.train_latent_mapper(G, clip, text, config=dataclasses.replace(FAST, num_steps=2, id_lambda=0.1),
                              id_loss=id_loss, latents=lat)
    assert calls == [(True, False)] * 2 and r.history[0]["id"] > 0
    h = r.history[0]
    assert h["loss"] == pytest.approx(0.1 * h["id"] + h["clip"] + 0.8 * h["l2"], rel=1e-5)
    with pytest.raises(core.LatentError, match=r"\[M, 10, 16\]"):
        M.train_latent_mapper(G, clip, text, config=FAST, latents=torch.zeros(3, 8, 16))


@pytest.mark.parametrize("reference", [False, True])
def test_first_step_loss_by_hand(G, clip, text, reference):
    """Step 1's terms recomputed from the definition: batch 0 of the seeded order, the seeded initial mapper,
    D_CLIP on G(w + 0.1·M(w)) (with the reference's pooling and un-normalised input, or CLIP's own), MSE(w', w)."""
    w_train = torch.randn(5, G.w_dim, generator=torch.Generator().manual_seed(9)) * 0.3 + G.w_avg  # w [M, w_dim]
    cfg = dataclasses.replace(FAST, num_steps=1, clip_resample="reference" if reference else "bicubic",
                              clip_normalize=not reference, pixel_norm="layers" if reference else "w")
    r = M.train_latent_mapper(G, clip, text, config=cfg, latents=w_train, seed=2)
    m = M.LatentMapper(G.w_dim, G.num_ws, pixel_norm=cfg.pixel_norm, seed=2)
    w = w_train[M._BatchOrder(5, 2, 2).indices(0)].unsqueeze(1).repeat(1, G.num_ws, 1)
    with torch.no_grad():
        w_hat = w + 0.1 * m(w)
        x_hat = G.synthesis(w_hat, noise_mode="const")
        emb = (clip.encode_image(M.reference_clip_pool(x_hat), normalize=False) if reference else
               clip.encode_image(x_hat, normalize=True, resample="bicubic"))
    assert r.history[0]["clip"] == pytest.approx(float((1 - emb @ text[0]).mean()), abs=1e-5)
    assert r.history[0]["l2"] == pytest.approx(float(F.mse_loss(w_hat, w)), rel=1e-5)


@pytest.mark.slow
def test_resume_after_cancel_equals_an_uninterrupted_run(G, clip, text, tmp_path):
    full = M.train_latent_mapper(G, clip, text, config=FAST, seed=4)
    path = tmp_path / "run.ckpt.safetensors"

    def cancel_at_5(p):
        if p.step == 5:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        M.train_latent_mapper(G, clip, text, config=FAST, seed=4, checkpoint_path=path, checkpoint_every=3,
                              callback=cancel_at_5)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:  # the cancel wrote the step it had completed (the periodic one was 3)
        assert f.metadata()["format"] == M.CHECKPOINT_FORMAT and f.metadata()["step"] == "5"
        assert any(k.startswith("lookahead.") for k in f.keys()) and any(k.endswith("exp_avg_sq") for k in f.keys())
    assert not list(tmp_path.glob("*.tmp"))
    seen = []
    resumed = M.train_latent_mapper(G, clip, text, config=FAST, seed=4, checkpoint_path=path,
                                    callback=lambda p: seen.append(p.step))
    assert resumed.start_step == 5 and seen == [6, 7, 8] and "resumed at step 5" in resumed.report()
    a, b = full.mapper.state_dict(), resumed.mapper.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history == full.history
    # A finished checkpoint returns at once; asking for fewer steps than it has, or other settings, is refused.
    again = M.train_latent_mapper(G, clip, text, config=FAST, seed=4, checkpoint_path=path)
    assert again.start_step == 8 and all(torch.equal(a[k], again.mapper.state_dict()[k]) for k in a)
    with pytest.raises(ValueError, match="more than num_steps"):
        M.train_latent_mapper(G, clip, text, config=dataclasses.replace(FAST, num_steps=4), seed=4,
                              checkpoint_path=path)
    with pytest.raises(ValueError, match=r"differs in: config\.lr, latents, seed"):
        M.train_latent_mapper(G, clip, text, config=dataclasses.replace(FAST, lr=0.1), seed=5,
                              checkpoint_path=path)
    fresh = M.train_latent_mapper(G, clip, text, config=dataclasses.replace(FAST, num_steps=1), seed=5,
                                  checkpoint_path=path, resume=False)
    assert fresh.start_step == 0 and len(fresh.history) == 1


def test_runs_with_everything_made_under_inference_mode(clip, tmp_path):
    with torch.inference_mode():
        G = tiny_generator("stylegan2", img_resolution=64)
        text = clip.encode_text(["a smiling face"])
        lat = torch.randn(4, G.num_ws, G.w_dim) * 0.1 + G.w_avg
        r = M.train_latent_mapper(G, clip, text, latents=lat, config=dataclasses.replace(FAST, num_steps=2),
                                  checkpoint_path=tmp_path / "c.safetensors")
        out = M.apply_latent_mapper(r.mapper, lat)
        path = M.save_mapper(r.mapper, tmp_path / "m.safetensors", generator_ref=G, text="a smiling face")
        again = M.apply_latent_mapper(M.load_mapper(path, G), lat)
    assert len(r.history) == 2 and torch.isfinite(out).all() and torch.equal(out, again)


# ------------------------------------------------------------------------------------------------
# Mapper files


def test_save_load_round_trip_and_wrong_generator(G, tmp_path):
    m = M.LatentMapper(G.w_dim, G.num_ws, fine=False, pixel_norm="layers", seed=7)
    cfg = dataclasses.replace(M.DEFAULTS, fine=False, pixel_norm="layers")
    path = M.save_mapper(m, tmp_path / "sub" / "red.safetensors", generator_ref=core.generator_ref(G),
                         text="a bright red face", config=cfg)
    loaded = M.load_mapper(path, G)
    a, b = m.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ws = random_ws(G)
    assert torch.equal(M.apply_latent_mapper(loaded, ws), M.apply_latent_mapper(m, ws))
    assert loaded.groups == ("coarse", "medium") and loaded.pixel_norm == "layers"
    assert loaded.info.text == "a bright red face" and loaded.info.config == cfg
    assert loaded.info.generator == core.generator_ref(G)
    small = tiny_generator("stylegan2")  # 32 px: num_ws 8
    with pytest.raises(core.CheckpointError, match=r"num_ws 10 x w_dim 16.*num_ws 8 x w_dim 16"):
        M.load_mapper(path, small)
    with pytest.raises(ValueError, match="trained with"):
        M.save_mapper(m, tmp_path / "x.safetensors", generator_ref=small)
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "something"})
    with pytest.raises(core.CheckpointError, match="not a StyleGAN Studio latent mapper"):
        M.load_mapper(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        M.load_mapper(tmp_path / "missing.safetensors")


def _reference_forward(state: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """StyleCLIP's Mapper, written out from its source (models/stylegan2/model.py PixelNorm over dim 1, then four
    EqualLinear(lr_mul=0.01, 'fused_lrelu'): linear with weight·lr/√in, then leaky_relu(x + b·lr, 0.2)·√2)."""
    x = x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)
    for i in range(1, 5):
        w, b = state[f"{prefix}.mapping.{i}.weight"], state[f"{prefix}.mapping.{i}.bias"]
        x = F.linear(x, w * (0.01 / math.sqrt(w.shape[1])))
        x = F.leaky_relu(x + (b * 0.01).view(1, 1, -1), 0.2) * math.sqrt(2)
    return x


def _reference_checkpoint(path, *, w_dim=16, size=64, groups=("course", "medium", "fine"), extra_opts=None):
    gen = torch.Generator().manual_seed(3)
    state = {}
    for g in groups:
        for i in range(1, 5):
            state[f"mapper.{g}_mapping.mapping.{i}.weight"] = torch.randn(w_dim, w_dim, generator=gen) / 0.01
            state[f"mapper.{g}_mapping.mapping.{i}.bias"] = torch.randn(w_dim, generator=gen)
    state["decoder.style.1.weight"] = torch.randn(w_dim, w_dim, generator=gen)  # part of its generator
    opts = {"description": "mohawk hairstyle", "mapper_type": "LevelsMapper", "stylegan_size": size,
            "no_coarse_mapper": "course" not in groups, "no_medium_mapper": "medium" not in groups,
            "no_fine_mapper": "fine" not in groups, "work_in_stylespace": False, "device": "cuda:0",
            "checkpoint_path": None, "learning_rate": 0.5, **(extra_opts or {})}
    torch.save({"state_dict": state, "opts": opts}, path)
    return state


@pytest.mark.parametrize("groups", [("course", "medium", "fine"), ("course", "medium")])
def test_reference_mapper_file_edits_as_the_reference(G, tmp_path, groups):
    state = _reference_checkpoint(tmp_path / "mohawk.pt", groups=groups)
    mapper = M.load_mapper(tmp_path / "mohawk.pt", G)
    assert mapper.pixel_norm == "layers" and mapper.info.text == "mohawk hairstyle"
    assert mapper.groups == tuple({"course": "coarse", "medium": "medium", "fine": "fine"}[g] for g in groups)
    ws = random_ws(G, n=2, seed=5)
    # the reference's inference.py: w_hat = w + 0.1 * mapper(w), LevelsMapper slicing 0:4, 4:8, 8:
    parts = [ws[:, a:b] for a, b in ((0, 4), (4, 8), (8, G.num_ws))]
    delta = torch.cat([_reference_forward(state, f"mapper.{g}_mapping", p) if g in groups else torch.zeros_like(p)
                       for g, p in zip(("course", "medium", "fine"), parts)], dim=1)
    torch.testing.assert_close(M.apply_latent_mapper(mapper, ws), ws + 0.1 * delta, rtol=1e-5, atol=1e-5)


def test_reference_mapper_errors(G, tmp_path):
    _reference_checkpoint(tmp_path / "a.pt", size=1024)
    with pytest.raises(core.CheckpointError, match=r"num_ws 18 x w_dim 16.*num_ws 10"):
        M.load_mapper(tmp_path / "a.pt", G)  # trained for 1024 px, used with a 64 px generator
    _reference_checkpoint(tmp_path / "s.pt", extra_opts={"work_in_stylespace": True})
    with pytest.raises(core.CheckpointError, match="only LevelsMapper in W"):
        M.load_mapper(tmp_path / "s.pt")
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}}, tmp_path / "gen.pt")
    with pytest.raises(core.CheckpointError, match="not a StyleCLIP mapper checkpoint"):
        M.load_mapper(tmp_path / "gen.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a zip at all")
    with pytest.raises(core.CheckpointError, match="truncated or corrupt"):
        M.load_mapper(tmp_path / "bad.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {}, "opts": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(core.UnsafeCheckpointError, match="refused by the safe loader"):
        M.load_mapper(tmp_path / "evil.pt")


def test_checkpoint_signature_ignores_settings_that_do_not_act(G, clip, text, tmp_path):
    latents = random_ws(G, n=4, seed=2)
    cfg = dataclasses.replace(FAST, num_steps=2)
    ckpt = tmp_path / "run.safetensors"
    M.train_latent_mapper(G, clip, text, config=cfg, latents=latents, checkpoint_path=ckpt)
    # Given latents: the sampling settings do not matter, so the run resumes (and has nothing left to do).
    other = dataclasses.replace(cfg, num_train_latents=99, truncation_psi=0.5)
    r = M.train_latent_mapper(G, clip, text, config=other, latents=latents, checkpoint_path=ckpt)
    assert r.start_step == 2 and len(r.history) == 2
    with pytest.raises(ValueError, match=r"differs in: config\.l2_lambda"):
        M.train_latent_mapper(G, clip, text, config=dataclasses.replace(cfg, l2_lambda=0.1), latents=latents,
                              checkpoint_path=ckpt)
    with pytest.raises(ValueError, match="already trained 2 steps, more than num_steps 1"):
        M.train_latent_mapper(G, clip, text, config=dataclasses.replace(cfg, num_steps=1), latents=latents,
                              checkpoint_path=ckpt)
    with pytest.raises(ValueError, match="one embedding"):
        M.train_latent_mapper(G, clip, torch.cat([text, text]), config=cfg, latents=latents)


def test_malformed_reference_mapper_files_are_checkpoint_errors(tmp_path):
    for name, data in (("list_opts.pt", {"state_dict": {"mapper.course_mapping.mapping.1.weight": torch.zeros(4, 4)},
                                          "opts": [1, 2]}),
                       ("not_tensor.pt", {"state_dict": {f"mapper.course_mapping.mapping.{i}.{k}": 1.0
                                                         for i in range(1, 5) for k in ("weight", "bias")},
                                          "opts": {"stylegan_size": 64}}),
                       ("size_none.pt", {"state_dict": {"mapper.course_mapping.mapping.1.weight": torch.zeros(4, 4)},
                                         "opts": {"stylegan_size": None}})):
        torch.save(data, tmp_path / name)
        with pytest.raises(core.CheckpointError, match="StyleCLIP mapper"):
            M.load_mapper(tmp_path / name)


@pytest.mark.slow
def test_resume_is_exact_with_adam_random_noise_and_the_identity_term(G, clip, text, tmp_path):
    """The other code paths of a resumed run: Adam's state, per-step noise from (seed, step), the ArcFace term,
    and a cancel that lands on a step that was just checkpointed."""
    from core.losses.arcface import IDLoss, random_arcface

    id_loss = IDLoss(random_arcface(seed=0))
    cfg = dataclasses.replace(FAST, num_steps=6, optimizer="adam", noise_mode="random", id_lambda=0.1)
    full = M.train_latent_mapper(G, clip, text, config=cfg, seed=2, id_loss=id_loss)
    path = tmp_path / "adam.safetensors"

    def cancel_at_4(p):
        if p.step == 4:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        M.train_latent_mapper(G, clip, text, config=cfg, seed=2, id_loss=id_loss, checkpoint_path=path,
                              checkpoint_every=2, callback=cancel_at_4)
    resumed = M.train_latent_mapper(G, clip, text, config=cfg, seed=2, id_loss=id_loss, checkpoint_path=path)
    assert resumed.start_step == 4 and resumed.history == full.history and "id" in full.history[0]
    a, b = full.mapper.state_dict(), resumed.mapper.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
