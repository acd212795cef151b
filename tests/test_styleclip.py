"""StyleCLIP latent optimisation on a tiny generator and a tiny random open_clip model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

import core  # noqa: E402
from core.edits import clip_optimize as S  # noqa: E402
from core.networks.style_space import s_channel_count  # noqa: E402
from conftest import SMALL_CLIP_CFG, tiny_clip, tiny_generator  # noqa: E402

TINY = "SGS-StyleCLIP-Tiny"
TINY_CFG = SMALL_CLIP_CFG


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip(tmp_path_factory, TINY, TINY_CFG)


@pytest.fixture(scope="module")
def G():
    return tiny_generator("stylegan2")


def start_latent(G, seed=3):
    return core.sample_latents(G, [seed], space="w+", truncation_psi=0.7)


FAST = dataclasses.replace(S.DEFAULTS, num_steps=25)


@pytest.mark.slow
def test_clip_distance_falls_and_generator_is_untouched(G, clip):
    before = {k: v.clone() for k, v in G.state_dict().items()}
    text = clip.encode_text(["a bright red face"])
    seen = []
    r = S.clip_optimize(G, start_latent(G), text, clip, config=FAST, callback=lambda p: seen.append(p.step))
    assert seen == list(range(1, 26)) and len(r.history) == 25
    assert float(r.clip_distance[0]) < float(r.clip_distance_start[0]) - 1e-3
    assert r.latent.space == "w+" and r.styles is None
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in before.items())
    assert "CLIP distance to the text" in r.report()


@pytest.mark.slow
def test_l2_term_keeps_the_latent_near_the_start(G, clip):
    text = clip.encode_text(["a bright red face"])
    lat = start_latent(G)
    free = S.clip_optimize(G, lat, text, clip, config=dataclasses.replace(FAST, l2_lambda=0.0))
    tied = S.clip_optimize(G, lat, text, clip, config=dataclasses.replace(FAST, l2_lambda=5.0))
    moved = lambda r: float((r.latent.tensor - lat.tensor).norm())  # noqa: E731
    assert moved(tied) < 0.5 * moved(free)


def test_s_space_and_directional_loss(G, clip):
    text, neutral = clip.encode_text(["a bright red face", "a face"])
    r = S.clip_optimize(G, start_latent(G), text, clip, config=dataclasses.replace(FAST, space="s", num_steps=10),
                        neutral_embedding=neutral)
    assert r.latent.space == "s" and r.latent.tensor.shape == (1, s_channel_count(G))
    assert r.styles is not None and set(r.styles) == set(G.synthesis.w_to_s(start_latent(G).tensor))
    with torch.no_grad():
        torch.testing.assert_close(r.image, G.synthesis.from_s(r.styles))
        torch.testing.assert_close(r.image, core.synthesize(G, r.latent))  # the s latent renders the edit
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in r.history)
    # An S result can be optimised further in S (not in W+).
    again = S.clip_optimize(G, r.latent, text, clip, config=dataclasses.replace(FAST, space="s", num_steps=2))
    assert again.latent.space == "s"
    with pytest.raises(core.LatentError, match="only be optimised in S"):
        S.clip_optimize(G, r.latent, text, clip, config=dataclasses.replace(FAST, num_steps=2))


def test_directional_loss_starts_with_the_linearised_step(G, clip):
    """At the start the image has not changed: 1 − cos of CLIP's rounding noise would give step 1 a gradient of
    arbitrary direction and a size far above a later step's (Adam would then stall). Step 1 descends the
    linearised loss instead: exactly 1 there, with a gradient of ordinary size, and the edit goes on moving."""
    text, neutral = clip.encode_text(["a bright red face", "a face"])
    lat = start_latent(G)
    grads = []

    def spy(p):
        grads.append(p.params["ws"].clone())

    r = S.clip_optimize(G, lat, text, clip, config=dataclasses.replace(FAST, num_steps=12), neutral_embedding=neutral,
                        callback=spy)
    assert r.history[0]["clip"] == pytest.approx(1.0, abs=1e-6)
    moves = [float((b - a).norm()) for a, b in zip(grads[:-1], grads[1:])]
    assert all(m > 0 for m in moves)   # every step after the first (whose learning rate is 0: the ramp-up) moves
    assert r.history[-1]["clip"] < 1.0 - 1e-3   # the image moved along the text direction


def test_runs_with_everything_made_under_inference_mode(clip):
    with torch.inference_mode():
        G = tiny_generator("stylegan2")
        lat = start_latent(G)
        text = clip.encode_text(["a smiling face"])
        r = S.clip_optimize(G, lat, text, clip, config=dataclasses.replace(FAST, num_steps=3))
    assert len(r.history) == 3 and torch.isfinite(r.image).all()


def test_bad_settings(G, clip):
    text = clip.encode_text(["x"])
    with pytest.raises(ValueError, match="space must be one of"):
        S.clip_optimize(G, start_latent(G), text, clip, config=dataclasses.replace(FAST, space="z"))
    with pytest.raises(ValueError, match="identity loss"):
        S.clip_optimize(G, start_latent(G), text, clip, config=dataclasses.replace(FAST, id_lambda=0.1))
