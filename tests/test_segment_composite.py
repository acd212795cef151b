"""Segment Composite (Barbershop) core: masked LPIPS, F mixing, the clamp optimiser, mask-only and parser runs, the
embedding cache (memory, disk, cancel), progress, determinism and the errors. Tiny 64 px StyleGAN2, random LPIPS /
VGG / BiSeNet stand-ins, a few steps per stage, losses at 32 px: the behaviour, not the quality."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

import core
from core.edits.segment_composite import DEFAULTS, EmbeddingCache, composite_config, pipeline, segment_composite
from core.edits.segment_composite.masks import dilate, erode, fill_labels
from core.errors import LatentError
from core.latents import Latent, fs_from_wplus, generator_ref, synthesize_fs
from core.losses.perceptual import random_lpips, random_vgg16_features
from core.models.face_parsing import random_face_parser
from core.optimize import FINISH

from conftest import tiny_generator

R = 64
FAST = replace(composite_config("quick"), w_steps=0, fs_steps=2, align_steps1=2, align_steps2=2, blend_steps=3,
               target_fill_steps=1, seg_size=32, lpips_size=32, prior_samples=256)


@pytest.fixture(scope="module")
def G():
    return tiny_generator("stylegan2", img_resolution=R)


@pytest.fixture(scope="module")
def lp():
    return random_lpips("vgg", seed=0)


@pytest.fixture(scope="module")
def vgg():
    return random_vgg16_features(1, layers=pipeline.STYLE_LAYERS)


@pytest.fixture(scope="module")
def parser():
    return random_face_parser("bisenet19", seed=0, input_size=32)


@pytest.fixture(scope="module")
def fs(G):
    """Three fs latents (seeds 1, 2, 3) and their images."""
    with torch.no_grad():
        ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(1)), None)
    lat = fs_from_wplus(G, Latent(ws, "w+", generator_ref(G)))
    out = []
    for i in range(3):
        one = Latent(lat.tensor[i:i + 1], "fs", lat.generator, features=lat.features[i:i + 1])
        with torch.no_grad():
            img = synthesize_fs(G, one.tensor, one.features, None, noise_mode="const")
        out.append((one, img))
    return out


def _left(frac: float) -> torch.Tensor:
    m = torch.zeros(1, R, R)
    m[:, :, :int(R * frac)] = 1
    return m


# ------------------------------------------------------------------------------------------------
# Masked LPIPS


def test_masked_lpips_full_mask_equals_plain_and_ignores_outside(lp):
    g = torch.Generator().manual_seed(0)
    S = 32
    x, y = torch.rand(2, 3, S, S, generator=g) * 2 - 1, torch.rand(2, 3, S, S, generator=g) * 2 - 1
    full = torch.ones(1, 1, S, S)
    plain = lp(x, y)
    assert torch.allclose(lp(x, y, mask=full), plain, rtol=1e-5, atol=1e-6)
    part = lp(x, y, blocks=(1, 2, 3))
    assert torch.allclose(lp(x, y, mask=full, blocks=(1, 2, 3)), part, rtol=1e-5, atol=1e-6)
    assert (part < plain).all()                                        # blocks 4 and 5 left out
    left = torch.zeros(1, 1, S, S)
    left[..., :4] = 1
    y2 = y.clone()
    y2[..., 28:] = -y2[..., 28:]                                       # beyond block 3's receptive field
    d, d2 = lp(x, y, mask=left, blocks=(1, 2, 3)), lp(x, y2, mask=left, blocks=(1, 2, 3))
    assert torch.allclose(d, d2, atol=1e-6)
    assert not torch.allclose(part, lp(x, y2, blocks=(1, 2, 3)))
    assert (lp(x, y, mask=torch.zeros(1, 1, S, S)) == 0).all()         # empty: 0, not NaN
    with pytest.raises(ValueError, match="LPIPS mask must be"):
        lp(x, y, mask=torch.ones(1, 1, 16, 16))
    with pytest.raises(ValueError, match="blocks must be"):
        lp(x, y, blocks=(0, 6))


# ------------------------------------------------------------------------------------------------
# Masks and F mixing


def test_dilate_erode_and_the_label_fill():
    m = torch.zeros(1, 1, 9, 9)
    m[..., 4, 4] = 1
    d = dilate(m, 2)
    assert int(d.sum()) == 13 and d[0, 0, 4, 2] == 1 and d[0, 0, 3, 3] == 1 and d[0, 0, 2, 2] == 0   # a diamond
    assert torch.equal(erode(d, 2), m)
    assert torch.equal(erode(torch.ones(1, 1, 5, 5), 3), torch.ones(1, 1, 5, 5))      # the border does not erode
    labels = torch.tensor([[0, 0, 5, 5, 5]] * 3)
    unknown = torch.zeros(3, 5, dtype=torch.bool)
    unknown[:, 1:3] = True
    filled = fill_labels(labels, unknown, [0, 5])
    assert filled[:, 1].tolist() == [0, 0, 0] and filled[:, 2].tolist() == [5, 5, 5]


def test_f_mixing_takes_each_source_in_its_region():
    f1, f2, fa1, fo = (torch.full((1, 2, 32, 32), float(v)) for v in (1, 2, 3, 4))
    ms = 64
    cols = torch.arange(ms)
    left = (cols < ms // 2)[None, :].expand(ms, ms)
    top = (cols < ms // 2)[:, None].expand(ms, ms)
    h_target = left                       # the region goes to the left half
    r2 = left & top                       # the reference has it top left
    r1 = ~left & top                      # the base had it top right
    fm = pipeline._mix_aligned(f1, f2, fa1, fo, r1, h_target, r2, None, ms, 0)
    assert fm[0, :, 4, 4].tolist() == pytest.approx([2, 2], abs=1e-4)      # reference's own F
    assert fm[0, :, 28, 4].tolist() == pytest.approx([4, 4], abs=1e-4)     # aligned reference
    assert fm[0, :, 4, 28].tolist() == pytest.approx([3, 3], abs=1e-4)     # aligned base (where its region was)
    assert fm[0, :, 28, 28].tolist() == pytest.approx([1, 1], abs=1e-4)    # the base
    soft = pipeline._mix_masks(f1, f2, left.float()[None, None], None, 0)
    assert soft[0, 0, :, 2].tolist() == pytest.approx([2] * 32, abs=1e-4)
    assert soft[0, 0, :, 29].tolist() == pytest.approx([1] * 32, abs=1e-4)
    keep = torch.zeros(1, 1, ms, ms)
    keep[..., :, :16] = 1
    kept = pipeline._mix_masks(f1, f2, left.float()[None, None], keep, 0)
    assert kept[0, 0, :, 2].tolist() == pytest.approx([1] * 32, abs=1e-4)   # keep_region wins


# ------------------------------------------------------------------------------------------------
# Mask-only runs


def test_region_everything_approaches_the_reference(G, lp, fs):
    (b, ib), (r, ir), _ = fs
    cfg = replace(FAST, blend_steps=6, lr=0.05)
    res = segment_composite(G, b, r, torch.ones(1, R, R), config=cfg, lpips=lp, cache=EmbeddingCache())
    assert res.mode == "mask-only" and res.image.shape == (1, 3, R, R) and res.mask.shape == (1, R, R)
    before = (ib - ir).square().mean()
    after = (res.image - ir).square().mean()
    assert after < 0.35 * before, (float(after), float(before))
    assert lp(res.image, ir) < 0.5 * lp(ib, ir)
    assert res.latent.space == "fs" and torch.allclose(res.latent.features, r.features, atol=1e-4)


def test_outside_the_region_stays_close_to_the_base(G, lp, fs):
    (b, ib), (r, ir), _ = fs
    region = _left(0.3)
    res = segment_composite(G, b, r, region, config=FAST, lpips=lp, cache=EmbeddingCache())
    outside = 1 - dilate(region[None], 8)
    far = lp(res.image, ib, mask=outside, blocks=(1, 2, 3))
    ref = lp(ir, ib, mask=outside, blocks=(1, 2, 3))
    assert far < 0.2 * ref, (float(far), float(ref))
    inside = erode(region[None], 4)
    assert lp(res.image, ir, mask=inside, blocks=(1, 2, 3)) < lp(ib, ir, mask=inside, blocks=(1, 2, 3))


def test_the_clamp_keeps_u_in_0_1(G, lp, fs):
    (b, _), (r, _), _ = fs
    seen = []
    cfg = replace(FAST, blend_steps=6, lr=0.5)
    segment_composite(G, b, r, _left(0.5), config=cfg, lpips=lp, cache=EmbeddingCache(),
                      callback=lambda p: seen.append(p.params["u"]) if p.phase == "blend" else None)
    u = torch.stack(seen)
    assert len(seen) == 6 and u.min() >= 0 and u.max() <= 1
    assert (u == 0).any() and (u == 1).any()       # both bounds reached and held


# ------------------------------------------------------------------------------------------------
# The parser path


def test_parser_run_stages_progress_and_determinism(G, lp, vgg, parser, fs):
    (b, _), (r, _), (a, _) = fs
    steps = []
    kw = dict(appearance=a, parser=parser, config=FAST, lpips=lp, vgg=vgg)
    res = segment_composite(G, b, r, "hair", cache=EmbeddingCache(), callback=steps.append, **kw)
    assert res.mode == "parser"
    phases = list(dict.fromkeys(p.phase for p in steps))
    assert phases == ["target", "align base", "align reference", "target (appearance)", "align base (appearance)",
                      "align appearance", "blend"]
    assert [p.step for p in steps] == list(range(1, len(steps) + 1)) and {p.total for p in steps} == {len(steps)}
    assert len(steps) == 2 * (2 * 1 + 2 + 2) + 3
    assert {"target", "target (appearance)", "aligned", "aligned (appearance)", "reconstruction base"} <= \
        set(res.intermediates)
    assert all(v.shape == (1, 3, R, R) and v.min() >= -1.001 for v in res.intermediates.values())
    again = segment_composite(G, b, r, "hair", cache=EmbeddingCache(), **kw)
    assert torch.equal(res.image, again.image) and torch.equal(res.latent.tensor, again.latent.tensor)
    assert "align reference" in res.report()


def test_finish_ends_the_stage_and_the_run_goes_on(G, lp, vgg, parser, fs):
    (b, _), (r, _), _ = fs
    seen = []

    def cb(p):
        seen.append((p.step, p.phase))
        return FINISH if p.phase == "align base" else None
    res = segment_composite(G, b, r, "hair", parser=parser, config=FAST, lpips=lp, vgg=vgg, cache=EmbeddingCache(),
                            callback=cb)
    phases = [ph for _, ph in seen]
    assert phases.count("align base") == 1 and phases.count("align reference") == 2 and phases[-1] == "blend"
    first_ref = next(s for s, ph in seen if ph == "align reference")
    assert first_ref == 2 * FAST.target_fill_steps + FAST.align_steps1 + 1    # the count skips the finished steps
    assert res.steps == res.total_steps


# ------------------------------------------------------------------------------------------------
# Embeddings and the cache


def _count_embeddings(monkeypatch):
    calls = []
    real = pipeline.embed_fs

    def counted(*a, **k):
        calls.append(k.get("stage", a[-1]))
        return real(*a, **k)
    monkeypatch.setattr(pipeline, "embed_fs", counted)
    return calls


def test_cache_hit_skips_the_embedding_and_disk_round_trip(G, lp, fs, tmp_path, monkeypatch, caplog):
    (_, ib), (_, ir), _ = fs
    calls = _count_embeddings(monkeypatch)
    cache = EmbeddingCache(tmp_path)
    first = segment_composite(G, ib, ir, _left(0.4), config=FAST, lpips=lp, cache=cache)
    assert calls == ["fs base", "fs reference"] and first.cached == []
    assert len(list(tmp_path.glob("*.safetensors"))) == 5          # W+ and FS of each photo, the prior
    second = segment_composite(G, ib, ir, _left(0.4), config=FAST, lpips=lp, cache=cache)
    assert len(calls) == 2 and second.cached == ["base", "reference"]
    assert second.total_steps == FAST.blend_steps and torch.equal(first.image, second.image)
    fresh = EmbeddingCache(tmp_path)                                 # another session: from the files
    third = segment_composite(G, ib, ir, _left(0.4), config=FAST, lpips=lp, cache=fresh)
    assert len(calls) == 2 and torch.equal(first.image, third.image)
    for f in tmp_path.glob("*.safetensors"):
        f.write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING):
        fourth = segment_composite(G, ib, ir, _left(0.4), config=FAST, lpips=lp, cache=EmbeddingCache(tmp_path))
    assert len(calls) == 4 and "ignoring the cached embedding" in caplog.text
    assert torch.equal(first.image, fourth.image)
    other = replace(FAST, fs_steps=3)                  # other settings: another key
    segment_composite(G, ib, ir, _left(0.4), config=other, lpips=lp, cache=cache)
    assert len(calls) == 6


def test_a_cancelled_run_leaves_generator_and_cache_as_they_were(G, lp, vgg, parser, fs, tmp_path):
    (_, ib), (_, ir), _ = fs
    before = {k: v.clone() for k, v in G.state_dict().items()}
    parser_before = {k: v.clone() for k, v in parser.state_dict().items()}
    cache = EmbeddingCache(tmp_path)

    class Stop(Exception):
        pass

    def cancel_in(phase):
        def cb(p):
            if p.phase == phase:
                raise Stop
        return cb
    with pytest.raises(Stop):
        segment_composite(G, ib, ir, "hair", parser=parser, config=FAST, lpips=lp, vgg=vgg, cache=cache,
                          callback=cancel_in("fs base"))
    assert len(cache) == 1                                            # only the W+ of the base (0 steps: w_avg)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2             # it and the prior
    with pytest.raises(Stop):
        segment_composite(G, ib, ir, "hair", parser=parser, config=FAST, lpips=lp, vgg=vgg, cache=cache,
                          callback=cancel_in("align base"))
    assert len(cache) == 4                                            # both photos' embeddings survive
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in parser.state_dict().items():
        assert torch.equal(v, parser_before[k]), k
    res = segment_composite(G, ib, ir, "hair", parser=parser, config=FAST, lpips=lp, vgg=vgg, cache=cache)
    assert res.cached == ["base", "reference"]


# ------------------------------------------------------------------------------------------------
# Errors


def test_mask_errors(G, lp, parser, fs):
    (b, _), (r, _), _ = fs
    run = lambda region, **kw: segment_composite(G, b, r, region, config=FAST, lpips=lp,  # noqa: E731
                                                 cache=EmbeddingCache(), **kw)
    with pytest.raises(ValueError, match="region .* is empty"):
        run(torch.zeros(1, R, R))
    with pytest.raises(ValueError, match="is empty .*largest value is 0.4"):
        run(torch.full((1, R, R), 0.4))
    with pytest.raises(ValueError, match="is 64x32, but the composite works on square"):
        run(torch.ones(1, 32, 64))
    with pytest.raises(ValueError, match="a batch of 2 masks"):
        run(torch.ones(2, R, R))
    with pytest.raises(ValueError, match="divided by 255"):
        run(_left(0.5) * 255)
    with pytest.raises(ValueError, match="NaN"):
        run(torch.full((1, R, R), float("nan")))
    with pytest.raises(ValueError, match="keep_region covers the whole image: nothing could change"):
        run(_left(0.5), keep_region=torch.ones(1, R, R))
    with pytest.raises(ValueError, match="covers the whole image: with a parser"):
        run(torch.ones(1, R, R), parser=parser)
    with pytest.raises(ValueError, match="needs a face parser"):
        run("hair")
    with pytest.raises(ValueError, match="unknown face class 'mane'"):
        run("mane", parser=parser)
    with pytest.raises(ValueError, match="mode must be one of realistic, fidelity"):
        run(_left(0.5), mode="pretty")
    soft = _left(0.5) * 0.7 + 0.1                                     # soft masks are fine
    res = run(soft)
    assert 0.05 < float(res.mask.min()) and float(res.mask.max()) < 0.85   # kept soft
    small = run(torch.nn.functional.interpolate(_left(0.5)[None], size=(32, 32))[0])   # another size: resized
    assert small.mask.shape == (1, R, R)


def test_generator_and_latent_errors(G, lp, fs):
    (b, ib), (r, _), _ = fs
    m = _left(0.5)
    with pytest.raises(LatentError, match="StyleGAN3"):
        segment_composite(tiny_generator("stylegan3"), ib, ib, m, config=FAST, lpips=lp)
    with pytest.raises(LatentError, match="renders at 32 px"):
        segment_composite(tiny_generator("stylegan2"), ib, ib, m, config=FAST, lpips=lp)
    other = tiny_generator("stylegan2", seed=5, img_resolution=R)
    with pytest.raises(LatentError, match="made with .*embed the photo with this generator"):
        segment_composite(other, b, ib, m, config=FAST, lpips=lp, cache=EmbeddingCache())
    with pytest.raises(LatentError, match="is a w\\+ latent"):
        segment_composite(G, Latent(b.tensor, "w+", b.generator), r, m, config=FAST, lpips=lp)
    with pytest.raises(ValueError, match="a batch of 2 images"):
        segment_composite(G, ib.repeat(2, 1, 1, 1), r, m, config=FAST, lpips=lp)


def test_presets_and_config():
    assert composite_config("reference") == DEFAULTS
    assert composite_config("fast") == composite_config("quick")
    quick = composite_config("quick", blend_steps=0, smooth=3)
    assert quick.blend_steps == 100 and quick.smooth == 3 and quick.w_steps == 250
    with pytest.raises(ValueError, match="preset must be one of"):
        composite_config("slow")
    with pytest.raises(ValueError, match="unknown Segment Composite settings"):
        composite_config("quick", steps=3)
    with pytest.raises(ValueError, match="blend_steps must be a whole number"):
        composite_config("quick", blend_steps=-1)
    assert core.segment_composite is segment_composite


def test_the_same_photo_twice_is_embedded_once_within_a_run(G, lp, vgg, parser, fs, monkeypatch):
    """base == reference, reference == appearance, appearance == base: one embedding per distinct photo in a run,
    even with a cache that keeps nothing (the de-duplication is within the run, not through the cache)."""
    (_, ib), (_, ir), _ = fs
    calls = _count_embeddings(monkeypatch)
    steps = []
    res = segment_composite(G, ib, ib.clone(), _left(0.4), appearance=ir, config=FAST, lpips=lp,
                            cache=EmbeddingCache(max_items=0), callback=steps.append)
    assert calls == ["fs base", "fs appearance"]
    assert "reference: the same photo as the base, embedded once" in res.report()
    assert [p.phase for p in steps].count("fs reference") == 0 and res.steps == res.total_steps
    calls.clear()
    res = segment_composite(G, ir, ib, "hair", appearance=ir.clone(), parser=parser, config=FAST, lpips=lp, vgg=vgg,
                            cache=EmbeddingCache(max_items=0))
    assert calls == ["fs base", "fs reference"] and res.steps == res.total_steps   # appearance == base
    calls.clear()
    segment_composite(G, ib, ir, _left(0.4), appearance=ib, config=FAST, lpips=lp, cache=EmbeddingCache(max_items=0))
    assert calls == ["fs base", "fs reference"]


def test_the_parser_runs_at_the_generator_resolution_when_smaller(G, lp, vgg, fs, monkeypatch):
    """seg_size 512 on a 64 px generator: the parser sees 64 px images (not 512 px upsampled ones), the caller's
    parser keeps its input size."""
    (b, _), (r, _), _ = fs
    p512 = random_face_parser("bisenet19", seed=0)            # input_size 512
    sizes = []
    real = type(p512.net).forward

    def spy(self, x, *a, **k):
        sizes.append(tuple(x.shape[-2:]))
        return real(self, x, *a, **k)
    monkeypatch.setattr(type(p512.net), "forward", spy)
    cfg = replace(FAST, seg_size=512)
    res = segment_composite(G, b, r, "hair", parser=p512, config=cfg, lpips=lp, vgg=vgg, cache=EmbeddingCache())
    assert sizes and set(sizes) == {(R, R)} and p512.input_size == 512
    assert res.intermediates["target"].shape == (1, 3, R, R)
