"""Training weight shifts, the layer scan and the k sweep on tiny generators and a tiny random open_clip model."""

from __future__ import annotations

import math

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

import core  # noqa: E402
from core.edits import presets as PR  # noqa: E402
from core.edits.weight_shift import (DEFAULTS, apply_weight_shifts, conv_layers, make_shift,  # noqa: E402
                                     render_k_sweep, scan_layers, train_weight_shift)
from core.edits.weight_shift import train as T  # noqa: E402
from core.losses.clip import text_direction  # noqa: E402
from core.optimize import FINISH  # noqa: E402
from conftest import SMALL_CLIP_CFG, tiny_clip, tiny_generator  # noqa: E402

TINY = "SGS-WeightShift-Tiny"
TINY_CFG = SMALL_CLIP_CFG
TEXT, NEUTRAL = "a face with a big red nose", "a face"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip(tmp_path_factory, TINY, TINY_CFG)


@pytest.fixture(scope="module")
def G():
    return tiny_generator("stylegan2")


@pytest.fixture(scope="module")
def G3():
    return tiny_generator("stylegan3")


def latent(G, seeds=(3,)):
    return core.sample_latents(G, list(seeds), space="w+", truncation_psi=0.7)


def snapshot(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def assert_unchanged(G, before, ws=None, image=None):
    after = G.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert not any(p.requires_grad for p in G.parameters())
    assert all(isinstance(p, torch.nn.Parameter) for _, p in G.named_parameters())
    assert len(list(G.parameters())) == len([k for k in before if k in dict(G.named_parameters())])
    if ws is not None:
        with torch.no_grad():
            assert torch.equal(G.synthesis(ws), image)


def directional_score(clip, G, lat, shift, k, text=TEXT, neutral=NEUTRAL):
    """cos(E_I(G_{θ+kx}(w)) − E_I(G_θ(w)), E_T(text) − E_T(neutral)), mean over the images."""
    ws = core.latent_to_ws(G, lat)
    with torch.no_grad():
        e0 = clip.encode_image(G.synthesis(ws))
        e1 = clip.encode_image(apply_weight_shifts(G, [(shift, k)]).synthesis(ws))
    d = text_direction(*clip.encode_text([text, neutral]).split(1))
    return float((torch.nn.functional.normalize(e1 - e0, dim=-1) * d).sum(-1).mean())


# ------------------------------------------------------------------------------------------------
# Training


@pytest.mark.parametrize("loss", ["global", "directional"])
@pytest.mark.parametrize("mode", ["latent", "batch"])
def test_training_lowers_the_clip_term(G, clip, loss, mode):
    neutral = NEUTRAL if loss == "directional" else None
    lat = latent(G) if mode == "latent" else None
    r = train_weight_shift(G, clip, TEXT, neutral_text=neutral, layer="b8.conv1", latents=lat, steps=15, loss=loss)
    assert len(r.history) == 15 and all(math.isfinite(h["loss"]) for h in r.history)
    assert set(r.history[0]) == {"clip", "l2", "loss", "k"}
    assert r.history[0]["l2"] == 0.0 and r.history[-1]["l2"] > 0
    n = 1 if mode == "latent" else DEFAULTS.batch
    assert r.image_before.shape == r.image_after.shape == (n, 3, 32, 32)
    assert r.clip_before.shape == r.clip_after.shape == (n,)
    # The evaluation latents (the latent; in batch mode the first step's batch) moved toward the text.
    assert float(r.clip_after.mean()) < float(r.clip_before.mean()) - 0.02
    if loss == "directional":
        assert torch.equal(r.clip_before, torch.ones(n))
        # Step 1 (x = 0) descends the linearised loss: exactly 1 there, not 1 − cos of CLIP's rounding noise.
        assert r.history[0]["clip"] == pytest.approx(1.0, abs=1e-5)
    if mode == "latent":   # one fixed image: the CLIP term itself falls
        first, last = r.history[0]["clip"], sum(h["clip"] for h in r.history[-5:]) / 5
        assert last < first - 0.02
    assert float((r.image_after - r.image_before).abs().mean()) > 1e-3   # a visible change at the default lr
    m = r.shift.metadata
    assert m["mode"] == mode and m["loss"] == loss and m["steps"] == 15 and m["batch"] == n
    assert list(r.shift.tensors) == ["synthesis.b8.conv1.weight"] and r.shift.layers == ["b8.conv1"]
    assert r.shift.tensors["synthesis.b8.conv1.weight"].dtype == torch.float32
    assert "CLIP term" in r.report() and "b8.conv1" in r.report()


def test_metadata_and_default_loss(G, clip):
    r = train_weight_shift(G, clip, TEXT, neutral_text=NEUTRAL, layer="synthesis.b16.conv0.weight",
                           latents=latent(G), steps=2, lambda_l2=0.1, lr=1e-3, k_train=1.5)
    m = r.shift.metadata
    assert m["loss"] == "directional"    # the default with a neutral text
    want = {"prompt": TEXT, "neutral_prompt": NEUTRAL, "clip_model": TINY, "lambda_clip": 10.0, "lambda_l2": 0.1,
            "lr": 1e-3, "steps": 2, "batch": 1, "k_train": 1.5, "norm": "raw", "source": "sgs", "layer": "b16.conv0",
            "two_sided": False, "mode": "latent"}
    assert {k: m[k] for k in want} == want
    assert r.shift.recommended_k == (-3.0, 3.0)
    assert r.shift.base_digest == core.latents.weights_digest(G)
    assert train_weight_shift(G, clip, TEXT, layer="b8.conv0", latents=latent(G), steps=1).shift.metadata["loss"] \
        == "global"   # the default without one


def test_generator_unchanged_after_training_finish_and_cancel(G, clip):
    before = snapshot(G)
    ws = core.latent_to_ws(G, latent(G))
    with torch.no_grad():
        image = G.synthesis(ws)
    train_weight_shift(G, clip, TEXT, neutral_text=NEUTRAL, layer="b16.conv1", steps=3)
    assert_unchanged(G, before, ws, image)

    seen = []

    def finish_at_3(p):
        seen.append(p)
        return FINISH if p.step == 3 else None

    r = train_weight_shift(G, clip, TEXT, neutral_text=NEUTRAL, layer="b16.conv1", latents=latent(G), steps=10,
                           callback=finish_at_3)
    assert_unchanged(G, before, ws, image)
    assert [p.step for p in seen] == [1, 2, 3] and all(p.total == 10 and p.phase == "shift" for p in seen)
    assert len(r.history) == 3 and r.shift.metadata["steps"] == 3 and r.shift.metadata["steps_planned"] == 10
    # The shift so far: what the callback saw after step 3.
    key = "shift/synthesis.b16.conv1.weight"
    assert set(seen[-1].params) == {key}
    assert torch.equal(r.shift.tensors["synthesis.b16.conv1.weight"], seen[-1].params[key])
    assert seen[-1].image.shape == (1, 3, 32, 32) and not seen[-1].image.requires_grad
    assert seen[0].losses.keys() == {"clip", "l2", "loss"}

    def cancel(p):
        if p.step == 2:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        train_weight_shift(G, clip, TEXT, layer="b16.conv1", steps=5, callback=cancel)
    assert_unchanged(G, before, ws, image)


def test_runs_with_everything_made_under_inference_mode(clip):
    with torch.inference_mode():
        G = tiny_generator("stylegan2")
        lat = latent(G)
        r = train_weight_shift(G, clip, TEXT, neutral_text=NEUTRAL, layer="b8.conv1", latents=lat, steps=3)
    assert len(r.history) == 3 and torch.isfinite(r.image_after).all()
    assert not r.shift.tensors["synthesis.b8.conv1.weight"].is_inference()
    assert all(p.is_inference() for p in G.parameters())   # its model untouched


def test_two_sided_alternates_and_negative_k_is_the_opposite_edit(G, clip):
    lat = latent(G)
    r = train_weight_shift(G, clip, TEXT, neutral_text=NEUTRAL, layer="b8.conv1", latents=lat, steps=20,
                           two_sided=True)
    assert [h["k"] for h in r.history[:4]] == [1.0, -1.0, 1.0, -1.0]
    assert r.shift.metadata["two_sided"] is True
    plus, minus = directional_score(clip, G, lat, r.shift, 1.0), directional_score(clip, G, lat, r.shift, -1.0)
    assert plus > 0.3 and minus < -0.3, (plus, minus)
    # One-sided training does not promise that: only the two-sided run trains the negative side.
    one = train_weight_shift(G, clip, TEXT, neutral_text=NEUTRAL, layer="b8.conv1", latents=lat, steps=4)
    assert [h["k"] for h in one.history[:4]] == [1.0] * 4


def test_two_sided_global_trains_toward_the_neutral_text_at_negative_k(G, clip, monkeypatch):
    obj, _ = T._setup(G, clip, TEXT, neutral_text=NEUTRAL, latents=latent(G), loss="global", **_SETUP)
    t_text, t_neutral = clip.encode_text([TEXT, NEUTRAL]).split(1)
    torch.testing.assert_close(obj.target[+1], t_text)
    torch.testing.assert_close(obj.target[-1], t_neutral)
    torch.testing.assert_close(obj.direction[-1], -obj.direction[+1])


_SETUP = dict(steps=1, lr=1e-3, lambda_clip=10.0, lambda_l2=0.05, k_train=1.0, batch=2, truncation_psi=0.7, seed=0,
              two_sided=False, identity=None, lambda_id=0.0, lpips=None, lambda_lpips=0.0, clip_normalize=True,
              noise_mode="const", templates=None)


@pytest.mark.parametrize("arch,layer", [("stylegan2", "b16.conv0"), ("stylegan2", "b4.conv1"),
                                        ("stylegan3", 3), ("stylegan3", 0)])
@pytest.mark.parametrize("mode", ["latent", "batch"])
def test_staged_prefix_gives_the_plain_forward_loss_and_gradient(G, G3, clip, arch, layer, mode):
    gen = G if arch == "stylegan2" else G3
    name = layer if isinstance(layer, str) else conv_layers(gen)[layer].name
    obj, _ = T._setup(gen, clip, TEXT, neutral_text=NEUTRAL, latents=latent(gen) if mode == "latent" else None,
                      loss="directional", **_SETUP)
    obj.use_layer(T.find_layer(gen, name))
    b = obj.batch(0)
    x0 = torch.randn(obj.layer.shape, generator=torch.Generator().manual_seed(1)) * 0.05
    out = {}
    for staged in (True, False):
        x = x0.clone().requires_grad_(True)
        with torch.enable_grad():
            loss, terms, images = obj.loss(x, 1.0, b, staged=staged)
            loss.backward()
        out[staged] = (loss.detach(), images.detach(), x.grad)
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[True][2], out[False][2], rtol=1e-4, atol=1e-6)
    assert float(out[True][2].abs().sum()) > 0
    prefix = obj.prefix(b)
    if obj.prefix_stop is None:
        assert prefix is None    # the layer is in the first stage: nothing to cache
    else:
        assert prefix.stage == obj.prefix_stop and not prefix.x.requires_grad
        if mode == "latent":
            assert obj.prefix(b) is prefix    # cached for the whole run


def test_random_noise_is_the_same_for_the_staged_and_the_plain_path_and_for_the_reference(clip):
    G = tiny_generator("stylegan2")
    with torch.no_grad():   # the tiny generator's noise strengths start at 0 (as NVIDIA's do)
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    obj, _ = T._setup(G, clip, TEXT, neutral_text=NEUTRAL, latents=None, loss="directional",
                      **dict(_SETUP, noise_mode="random"))
    obj.use_layer(T.find_layer(G, "b16.conv1"))
    b = obj.batch(0)
    x = torch.zeros(obj.layer.shape)
    with torch.no_grad():
        obj.shifted(x, 1.0)
        staged = obj.render(obj.view.synthesis, b, obj.prefix(b))
        plain = obj.render(obj.view.synthesis, b, None, staged=False)
        base, _ = obj.base(b, obj.prefix(b))
        const = obj.work.synthesis(b.ws, noise_mode="const")
    torch.testing.assert_close(staged, plain)
    torch.testing.assert_close(staged, base)          # x = 0: the shifted render sees the reference's noise
    assert not torch.allclose(staged, const, atol=1e-3)   # and it is random noise, not the stored maps
    other = obj.batch(1)
    with torch.no_grad():
        assert not torch.allclose(obj.render(obj.view.synthesis, other, obj.prefix(other)),
                                  obj.render(obj.view.synthesis, b._replace(seed=other.seed), obj.prefix(other)))


def test_stylegan3_training(G3, clip):
    before = snapshot(G3)
    layer = conv_layers(G3)[2].name
    r = train_weight_shift(G3, clip, TEXT, neutral_text=NEUTRAL, layer=layer, latents=latent(G3), steps=10)
    assert r.history[-1]["clip"] < r.history[0]["clip"] - 0.02
    assert float(r.clip_after[0]) < 1.0 and r.shift.layers == [layer]
    assert_unchanged(G3, before)


def test_identity_and_lpips_terms(G, clip):
    from core.losses.perceptual import LPIPS

    calls = []

    def identity(images, reference):
        calls.append((images.shape, reference.shape, reference.requires_grad))
        return (images - reference).square().mean()

    lpips = LPIPS("vgg")   # random weights: the interface and the gradient path, not the numbers
    with torch.no_grad():
        for lin in lpips.lins:
            lin.weight.abs_()  # LPIPS's linear weights are non-negative
    r = train_weight_shift(G, clip, TEXT, neutral_text=NEUTRAL, layer="b8.conv1", latents=latent(G), steps=4,
                           identity=identity, lambda_id=0.5, lpips=lpips, lambda_lpips=0.5)
    assert all({"id", "lpips"} <= set(h) for h in r.history)
    assert r.history[0]["id"] == 0.0 and r.history[-1]["id"] > 0 and r.history[-1]["lpips"] > 0
    h = r.history[-1]
    want = 10 * h["clip"] + 0.05 * h["l2"] + 0.5 * h["id"] + 0.5 * h["lpips"]
    assert h["loss"] == pytest.approx(want, rel=1e-5)
    assert calls[0] == ((1, 3, 32, 32), (1, 3, 32, 32), False)
    assert r.shift.metadata["lambda_id"] == 0.5 and r.shift.metadata["lambda_lpips"] == 0.5
    # Without a weight they are not computed.
    plain = train_weight_shift(G, clip, TEXT, layer="b8.conv1", latents=latent(G), steps=1, identity=identity)
    assert "id" not in plain.history[0] and len(calls) == 4


def test_templates_average_the_prompts(G, clip):
    templates = ["a photo of {}.", "a drawing of {}."]
    obj, _ = T._setup(G, clip, TEXT, neutral_text=NEUTRAL, latents=latent(G), loss="directional",
                      **dict(_SETUP, templates=templates))
    torch.testing.assert_close(obj.t_text, clip.encode_text([TEXT], templates=templates))
    assert not torch.allclose(obj.t_text, clip.encode_text([TEXT]))


def test_batch_mode_draws_fresh_latents_from_the_seed(G, clip):
    obj, _ = T._setup(G, clip, TEXT, neutral_text=None, latents=None, loss="global", **dict(_SETUP, batch=3))
    a, b = obj.batch(0).ws, obj.batch(1).ws
    assert a.shape == (3, G.num_ws, G.w_dim) and not torch.equal(a, b)
    assert torch.equal(a, obj.batch(0).ws)    # (seed, step) decides
    other, _ = T._setup(G, clip, TEXT, neutral_text=None, latents=None, loss="global", **dict(_SETUP, seed=1))
    assert not torch.equal(other.batch(0).ws[:2], a[:2])


def test_batch_mode_pool_cycles_its_latents_and_renders_each_reference_once(G, clip, monkeypatch):
    obj, _ = T._setup(G, clip, TEXT, neutral_text=None, latents=None, loss="global", **dict(_SETUP, batch=2, pool=4))
    drawn = [obj.batch(step).index for step in range(4)]
    assert sorted(drawn[0] + drawn[1]) == sorted(drawn[2] + drawn[3]) == [0, 1, 2, 3]   # each pass: every latent once
    assert drawn[:2] != drawn[2:] and obj.batch(1).index == drawn[1]                   # a new order, reproducible
    torch.testing.assert_close(obj.batch(3).ws, obj.pool_ws[list(drawn[3])])
    # The unshifted reference (directional loss) of a pool latent is rendered and embedded once, not per step.
    calls = []
    encode = type(clip).encode_image
    monkeypatch.setattr(type(clip), "encode_image", lambda self, images, **kw: (calls.append(len(images)),
                                                                                  encode(self, images, **kw))[1])
    counts = {}
    for pool in (4, 0):
        calls.clear()
        r = train_weight_shift(G, clip, TEXT, neutral_text=NEUTRAL, layer="b8.conv1", steps=6, batch=2, pool=pool)
        counts[pool] = sum(calls)
        assert r.shift.metadata["pool"] == pool and r.shift.metadata["mode"] == "batch"
    # 6 steps x 2 shifted images each, the references (4 pooled or 6 x 2 fresh), and the evaluation (2 + 2).
    assert counts == {4: 12 + 4 + 4, 0: 12 + 12 + 4}
    with pytest.raises(ValueError, match="pool must be 0"):
        train_weight_shift(G, clip, TEXT, layer="b8.conv1", steps=1, batch=3, pool=2)


def test_errors(G, clip):
    lat = latent(G)
    with pytest.raises(ValueError, match="no convolution layer 'b9.conv0'.*b4.conv1"):
        train_weight_shift(G, clip, TEXT, layer="b9.conv0", latents=lat, steps=1)
    with pytest.raises(ValueError, match="no convolution layer"):
        train_weight_shift(G, clip, TEXT, layer="b16.torgb", latents=lat, steps=1)
    with pytest.raises(ValueError, match="directional CLIP loss needs neutral_text"):
        train_weight_shift(G, clip, TEXT, layer="b8.conv1", loss="directional", steps=1)
    with pytest.raises(ValueError, match="two-sided run .* neutral_text"):
        train_weight_shift(G, clip, TEXT, layer="b8.conv1", two_sided=True, steps=1)
    for steps in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            train_weight_shift(G, clip, TEXT, layer="b8.conv1", steps=steps)
    for lr in (float("nan"), float("inf"), 0.0, -1e-3):
        with pytest.raises(ValueError, match="lr must be"):
            train_weight_shift(G, clip, TEXT, layer="b8.conv1", lr=lr, steps=1)
    with pytest.raises(ValueError, match="loss must be one of"):
        train_weight_shift(G, clip, TEXT, layer="b8.conv1", loss="nada", steps=1)
    with pytest.raises(ValueError, match="lambda_l2 must be >= 0"):
        train_weight_shift(G, clip, TEXT, layer="b8.conv1", lambda_l2=-1, steps=1)
    with pytest.raises(ValueError, match="no identity loss"):
        train_weight_shift(G, clip, TEXT, layer="b8.conv1", lambda_id=0.1, steps=1)
    with pytest.raises(ValueError, match="no LPIPS network"):
        train_weight_shift(G, clip, TEXT, layer="b8.conv1", lambda_lpips=0.1, steps=1)
    with pytest.raises(ValueError, match="text must be a non-empty"):
        train_weight_shift(G, clip, "  ", layer="b8.conv1", steps=1)
    with pytest.raises(ValueError, match="k_train must be"):
        train_weight_shift(G, clip, TEXT, layer="b8.conv1", k_train=0, steps=1)
    with pytest.raises(ValueError, match="batch must be an integer"):
        train_weight_shift(G, clip, TEXT, layer="b8.conv1", batch=0, steps=1)
    shift = make_shift(G, {"synthesis.b8.conv1.weight": torch.zeros(G.synthesis.b8.conv1.weight.shape)})
    with pytest.raises(ValueError, match="unshifted generator"):
        train_weight_shift(apply_weight_shifts(G, [(shift, 1.0)]), clip, TEXT, layer="b8.conv1", steps=1)
    with pytest.raises(core.LatentError):
        train_weight_shift(G, clip, TEXT, layer="b8.conv1", latents=latent(tiny_generator("stylegan3")), steps=1)


def test_divergence_is_reported(G, clip):
    with pytest.raises(FloatingPointError, match="weight shift training diverged at step 1"):
        train_weight_shift(G, clip, TEXT, layer="b8.conv1", latents=latent(G), steps=2, lambda_clip=1e308,
                           lambda_l2=1e308)


# ------------------------------------------------------------------------------------------------
# Layer scan


def test_scan_ranks_layers_and_draws_a_contact_sheet(G, clip):
    layers = ["b8.conv0", "b16.conv1", "b32.conv0"]
    seen = []
    before_state = snapshot(G)
    r = scan_layers(G, clip, TEXT, neutral_text=NEUTRAL, layers=layers, steps=4, latents=latent(G),
                    callback=lambda p: seen.append((p.step, p.total, p.phase, list(p.params))))
    assert_unchanged(G, before_state)
    assert [row.layer for row in r.rows] == layers
    assert sorted(r.ranking) == sorted(layers)
    gains = {row.layer: row.gain for row in r.rows}
    assert [gains[n] for n in r.ranking] == sorted(gains.values(), reverse=True)
    for row in r.rows:
        assert row.gain == pytest.approx(row.loss_before - row.loss_after)
        assert row.loss_before == 1.0 and row.image.shape == (1, 3, 32, 32)
    assert [s[0] for s in seen] == list(range(1, 13))
    assert {s[1] for s in seen} == {12} and {s[2] for s in seen} == {"scan"}
    assert seen[0][3] == ["shift/synthesis.b8.conv0.weight"] and seen[-1][3] == ["shift/synthesis.b32.conv0.weight"]
    # The same layer, steps and latents give the same shift as train_weight_shift (the scan is that short run).
    alone = train_weight_shift(G, clip, TEXT, neutral_text=NEUTRAL, layer="b16.conv1", steps=4, latents=latent(G))
    torch.testing.assert_close(r.rows[1].image, alone.image_after)
    # Sheet: one row of 128 px tiles (the 32 px images upscaled): before + 3 layers, labels drawn on top.
    assert r.sheet.shape == (1, 3, 128, 4 * 128)
    assert r.sheet.min() >= -1 and r.sheet.max() <= 1
    strip = r.sheet[0, :, :14, :]
    assert (strip == -1).float().mean() > 0.5 and (strip > 0.5).any()     # dark strip with light text
    body = r.sheet[0, :, 40:, :128]
    want = torch.nn.functional.interpolate(r.image_before.float(), size=(128, 128), mode="nearest")[0, :, 40:]
    assert torch.allclose(body, ((want.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1, atol=1e-6)
    text = r.report()
    assert r.ranking[0] in text.splitlines()[1] and "gain" in text


def test_scan_all_layers_batch_mode_and_finish(G3, clip):
    n = len(conv_layers(G3))
    seen = []

    def finish_in_second_layer(p):
        seen.append(p.step)
        return FINISH if p.step == 3 else None

    r = scan_layers(G3, clip, TEXT, steps=2, batch=2, callback=finish_in_second_layer)
    assert seen == [1, 2, 3, 4]          # the second layer's short run completes, then the scan ends
    assert len(r.rows) == 2 and r.settings["layers"] == [t.name for t in conv_layers(G3)] and n > 2
    assert r.sheet.shape == (1, 3, 2 * 128, 3 * 128)   # two evaluation images, before + 2 layers
    with pytest.raises(ValueError, match="no convolution layer"):
        scan_layers(G3, clip, TEXT, layers=["nope"], steps=1)


# ------------------------------------------------------------------------------------------------
# k sweep


def _random_shift(G, layer, seed, scale=0.3):
    p = dict(G.named_parameters())[f"synthesis.{layer}.weight"]
    x = torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * scale
    return make_shift(G, {f"synthesis.{layer}.weight": x}, prompt=f"random {seed}")


def test_k_sweep_shapes_order_and_exact_base_frame(G):
    lat = latent(G, (1, 2))
    ws = core.latent_to_ws(G, lat)
    a, b = _random_shift(G, "b8.conv1", 0), _random_shift(G, "b16.conv0", 1)
    ks = [-2.0, 0.0, 1.5]
    frames = render_k_sweep(G, lat, [(a, 1.0), (b, 0.5)], ks)
    assert frames.shape == (6, 3, 32, 32) and frames.dtype == torch.float32
    with torch.no_grad():
        base = G.synthesis(ws)
        assert torch.equal(frames[2:4], base)                   # k = 0: the base, bit for bit
        torch.testing.assert_close(frames[0:2], apply_weight_shifts(G, [(a, -2.0), (b, -1.0)]).synthesis(ws))
        torch.testing.assert_close(frames[4:6], apply_weight_shifts(G, [(a, 1.5), (b, 0.75)]).synthesis(ws))
        varied = render_k_sweep(G, lat, [(a, 1.0), (b, 0.5)], [0.0, 2.0], vary=1)
        torch.testing.assert_close(varied[0:2], apply_weight_shifts(G, [(a, 1.0)]).synthesis(ws))
        torch.testing.assert_close(varied[2:4], apply_weight_shifts(G, [(a, 1.0), (b, 2.0)]).synthesis(ws))
    assert not torch.equal(frames[0:2], base)


def test_k_sweep_errors(G):
    lat = latent(G)
    a = _random_shift(G, "b8.conv1", 0)
    with pytest.raises(ValueError, match="at least one"):
        render_k_sweep(G, lat, [], [1.0])
    with pytest.raises(ValueError, match="at least one k"):
        render_k_sweep(G, lat, [(a, 1.0)], [])
    with pytest.raises(ValueError, match="finite"):
        render_k_sweep(G, lat, [(a, 1.0)], [float("nan")])
    with pytest.raises(ValueError, match="vary must be"):
        render_k_sweep(G, lat, [(a, 1.0)], [1.0], vary=1)
    with pytest.raises(ValueError, match="within"):
        render_k_sweep(G, lat, [(a, 3.0)], [4.0])
    with pytest.raises(core.CheckpointError):
        render_k_sweep(tiny_generator("stylegan2", seed=1), latent(G), [(a, 1.0)], [1.0])


# ------------------------------------------------------------------------------------------------
# Presets


def test_presets():
    assert "weight_shift" in PR.KINDS and "weight_shift_scan" in PR.KINDS
    ref = PR.get_preset("weight_shift", "", "reference")
    assert ref.values == {"steps": DEFAULTS.steps} and ref.steps == 200
    quick, balanced = (PR.get_preset("weight_shift", "", p) for p in ("quick", "balanced"))
    assert quick.steps < balanced.steps < ref.steps
    assert PR.resolve("weight_shift", "", "quick", steps=0) == quick.values
    assert PR.resolve("weight_shift", "", "quick", steps=7) == {"steps": 7}
    scan = [PR.get_preset("weight_shift_scan", "", p) for p in PR.PRESETS]
    assert [p.values["steps"] for p in scan] == [5, 10, 20] and scan[1].values["steps"] == DEFAULTS.scan_steps
    assert all(p.steps == 0 and p.units_per_step == p.values["steps"] for p in scan)   # × the layers
    assert "per layer" in PR.tooltip("weight_shift_scan") and "200 steps" in PR.tooltip("weight_shift")
