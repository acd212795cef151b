"""pSp / e4e / ReStyle encoders: outputs equal the reference code's on seeded weights, checkpoint layouts load,
hostile files are refused, the pairing with the generator is checked, and encoder-initialised inversions start
exactly at the encoder's latent."""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import core
from core.edits import encoder_inversion as EI
from core.edits import inversion as I
from core.errors import CheckpointError
from core.models import encoders as ENC
from core.models.encoders.networks import EncoderConfig, random_encoder

import forge

FIXTURE = Path(__file__).parent / "fixtures" / "encoders.safetensors"
# Must match scripts/make_encoder_fixtures.py, which made the fixture with the reference repositories.
STAGES = ((16, 3), (32, 4), (32, 14), (16, 3))
STEM = 8
SIZE = 64
N_ITERS = 3
SEEDS = {"psp": 1, "e4e": 2, "restyle_psp": 3, "restyle_e4e": 4}


def config(kind: str, num_ws: int = 8) -> EncoderConfig:
    return EncoderConfig(arch="fpn" if kind in ("psp", "e4e") else "backbone",
                         progressive=kind in ("e4e", "restyle_e4e"), num_ws=num_ws,
                         input_channels=6 if kind.startswith("restyle") else 3, stages=STAGES, stem_channels=STEM)


@pytest.fixture(scope="module")
def expected():
    return load_file(str(FIXTURE))


@pytest.fixture(scope="module")
def rosinality():
    return forge.load_fixture("rosinality")


@pytest.fixture(scope="module")
def G(tmp_path_factory, rosinality):
    path = forge.write_rosinality_pt(rosinality, tmp_path_factory.mktemp("dec") / "decoder.pt", layout="psp")
    return core.load_generator(path)


def write_encoder(path: Path, kind: str, rosinality, expected, *, decoder: bool = True, **opts) -> Path:
    enc = random_encoder(config(kind), SEEDS[kind])
    ckpt = forge.encoder_checkpoint(kind, enc.state_dict(), expected["latent_avg"],
                                    decoder=rosinality.net if decoder else None, size=32, **opts)
    torch.save(ckpt, path)
    return path


def load(path: Path) -> ENC.Encoder:
    e = ENC.load_encoder(path)
    e.input_resolution = SIZE
    return e


@pytest.mark.parametrize("kind", ["psp", "e4e"])
def test_single_pass_equals_reference(tmp_path, kind, G, rosinality, expected):
    enc = load(write_encoder(tmp_path / f"{kind}.pt", kind, rosinality, expected))
    assert enc.info.kind == kind and not enc.info.iterative
    res = EI.encode_image(enc, G, expected["images"])
    assert res.latent.space == "w+" and res.latent.tensor.shape == (2, 8, 16)
    torch.testing.assert_close(res.latent.tensor, expected[f"{kind}/ws"], rtol=1e-4, atol=1e-5)
    # Changing one weight changes the output: the comparison can fail.
    with torch.no_grad():
        enc.net.styles[7].linear.bias += 1
    assert not torch.allclose(EI.encode_image(enc, G, expected["images"]).latent.tensor, expected[f"{kind}/ws"])


@pytest.mark.parametrize("kind", ["restyle_psp", "restyle_e4e"])
def test_restyle_equals_reference(tmp_path, kind, G, rosinality, expected):
    enc = load(write_encoder(tmp_path / f"{kind}.pt", kind, rosinality, expected))
    assert enc.info.kind == kind and enc.info.iterative
    avg = EI.average_image(enc, G, enc.latent_avg)
    torch.testing.assert_close(avg[0], expected[f"{kind}/avg_image"], rtol=1e-4, atol=1e-5)
    res = EI.encode_image(enc, G, expected["images"], num_iterations=N_ITERS)
    assert res.iterations == N_ITERS and len(res.ws_per_iteration) == N_ITERS
    for t in range(N_ITERS):
        torch.testing.assert_close(res.ws_per_iteration[t], expected[f"{kind}/ws"][t], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(res.image, expected[f"{kind}/images"][-1], rtol=1e-4, atol=1e-4)
    # Iterations refine: after one pass the latent differs from after three.
    assert not torch.allclose(expected[f"{kind}/ws"][0], expected[f"{kind}/ws"][-1])


def test_restyle_average_image_is_cached_per_generator_and_weights(tmp_path, G, rosinality, expected):
    enc = load(write_encoder(tmp_path / "r.pt", "restyle_e4e", rosinality, expected))
    first = EI.encode_image(enc, G, expected["images"], num_iterations=2, render=False)
    avg = enc._average_image[2]
    second = EI.encode_image(enc, G, expected["images"], num_iterations=2, render=False)
    assert enc._average_image[2] is avg  # G(w̄) rendered once for both calls
    torch.testing.assert_close(second.latent.tensor, first.latent.tensor, rtol=0, atol=0)
    G2 = copy.deepcopy(G)
    with torch.no_grad():
        next(G2.synthesis.parameters()).mul_(1.5)  # an edited generator renders another average image
    EI.encode_image(enc, G2, expected["images"], num_iterations=1, render=False)
    assert enc._average_image[2] is not avg
    torch.testing.assert_close(enc._average_image[2], EI.average_image(enc, G2, enc.latent_avg))
    with torch.no_grad():
        next(G2.synthesis.parameters()).mul_(2.0)  # edited in place: the same object is rendered again
    EI.encode_image(enc, G2, expected["images"], num_iterations=1, render=False)
    torch.testing.assert_close(enc._average_image[2], EI.average_image(enc, G2, enc.latent_avg))


def test_packed_convolutions_equal_plain_ones_and_follow_weight_edits():
    from core.models.encoders.networks import PackedConv2d

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, 2, 1)
    packed = PackedConv2d(conv, leaky_slope=0.2)
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), F.leaky_relu(conv(x), 0.2))
        conv.weight.add_(1)  # shared parameter edited in place: the packed copy is remade
        torch.testing.assert_close(packed(x), F.leaky_relu(conv(x), 0.2))
        torch.testing.assert_close(packed(x[:1]), F.leaky_relu(conv(x[:1]), 0.2))  # another batch size
    xg = x.clone().requires_grad_(True)  # autograd takes the plain path
    packed(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert isinstance(copy.deepcopy(packed), PackedConv2d)


def test_arcface_shares_the_backbone():
    from core.losses import arcface as A

    net = A.ArcFaceIRSE50()
    assert isinstance(net.body[0], ENC.IRSEUnit) and len(net.body) == 24
    assert isinstance(ENC.StyleEncoder(config("psp")).body[0], ENC.IRSEUnit)


def test_layouts_without_decoder_or_opts_size(tmp_path, G, rosinality, expected):
    # No decoder: the pairing falls back on opts' size; restyle from pSp's FPN encoder on 6 channels.
    enc = load(write_encoder(tmp_path / "e.pt", "e4e", rosinality, expected, decoder=False))
    assert enc.info.decoder is None and enc.info.stylegan_size == 32
    torch.testing.assert_close(EI.encode_image(enc, G, expected["images"]).latent.tensor, expected["e4e/ws"],
                               rtol=1e-4, atol=1e-5)
    fpn6 = random_encoder(dataclasses.replace(config("psp"), input_channels=6), 5)
    torch.save(forge.encoder_checkpoint("psp", fpn6.state_dict(), expected["latent_avg"], size=32),
               tmp_path / "r.pt")
    assert load(tmp_path / "r.pt").info.kind == "restyle_psp"
    # latent_avg saved once ([w_dim]) is repeated per layer.
    ck = torch.load(tmp_path / "e.pt", weights_only=True)
    ck["latent_avg"] = ck["latent_avg"][0]
    torch.save(ck, tmp_path / "e1.pt")
    assert load(tmp_path / "e1.pt").latent_avg.shape == (8, 16)


def test_pairing_is_checked(tmp_path, G, rosinality, expected):
    enc = load(write_encoder(tmp_path / "e.pt", "e4e", rosinality, expected))
    assert ENC.check_pairing(enc, G) == []
    other = forge.perturbed(dict(rosinality.net), seed=3)
    torch.save(forge.encoder_checkpoint("e4e", random_encoder(config("e4e"), 2).state_dict(), expected["latent_avg"],
                                        decoder=other, size=32),
               tmp_path / "o.pt")
    notes = ENC.check_pairing(load(tmp_path / "o.pt"), G)
    assert len(notes) == 1 and "other mapping weights" in notes[0]
    from conftest import tiny_generator

    big = tiny_generator(img_resolution=64)
    with pytest.raises(ValueError, match=r"trained with a 32 px generator .* but the generator .* 64 px"):
        EI.encode_image(enc, big, expected["images"])


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_hostile_and_foreign_files_are_refused(tmp_path, rosinality, expected):
    good = torch.load(write_encoder(tmp_path / "g.pt", "e4e", rosinality, expected), weights_only=True)
    # opts as an argparse.Namespace (a global weights_only refuses): explained, nothing executed.
    bad = dict(good, opts=argparse.Namespace(**good["opts"]))
    with pytest.raises(CheckpointError, match="Python objects.*nothing from the file was executed"):
        ENC.load_encoder(_save(tmp_path / "ns.pt", bad))
    hyper = dict(good, state_dict={**good["state_dict"], "hypernet.shared.0.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="HyperStyle"):
        ENC.load_encoder(_save(tmp_path / "hyper.pt", hyper))
    with pytest.raises(CheckpointError, match="generator checkpoint, not an encoder"):
        ENC.load_encoder(_save(tmp_path / "gen.pt", {"g_ema": {"style.1.weight": torch.zeros(2, 2)}}))
    no_type = dict(good, opts={k: v for k, v in good["opts"].items() if k != "encoder_type"})
    with pytest.raises(CheckpointError, match="encoder_type"):
        ENC.load_encoder(_save(tmp_path / "nt.pt", no_type))
    resnet = dict(good, opts=dict(good["opts"], encoder_type="ResNetBackboneEncoder"))
    with pytest.raises(CheckpointError, match="ResNet-34"):
        ENC.load_encoder(_save(tmp_path / "rn.pt", resnet))
    sd = dict(good["state_dict"])
    sd["encoder.styles.0.linear.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="styles.0.linear.weight has shape"):
        ENC.load_encoder(_save(tmp_path / "shape.pt", dict(good, state_dict=sd)))
    wrong_size = dict(good, state_dict={k: v for k, v in good["state_dict"].items() if k.startswith("encoder.")},
                      opts=dict(good["opts"], stylegan_size=1024))
    with pytest.raises(CheckpointError, match="8 style layers but its generator is 1024 px"):
        ENC.load_encoder(_save(tmp_path / "size.pt", wrong_size))
    forge.write_torch_zip_bomb(tmp_path / "bomb.pt", 1 << 28)
    with pytest.raises(CheckpointError):
        ENC.load_encoder(tmp_path / "bomb.pt")


@pytest.mark.parametrize("method", ["ii2s", "pti"])
def test_encoder_initialised_inversion_starts_at_the_encoder_latent(tmp_path, method, G, rosinality, expected):
    enc = load(write_encoder(tmp_path / "e.pt", "e4e", rosinality, expected))
    target = expected["images"][:1]
    encoded = EI.encode_image(enc, G, target)
    prior = I.compute_w_prior(G, num_samples=2000) if method == "ii2s" else None
    # num_steps 0: the result is the start, exactly.
    res = I.invert_image(G, target, method=method, encoder=enc, num_steps=0, tune_steps=0, prior=prior,
                         perceptual={"lpips_vgg": _ZeroLPIPS(), "lpips_alex": _ZeroLPIPS()})
    assert res.latent.space == "w+"
    assert torch.equal(res.latent.tensor, encoded.latent.tensor)
    assert torch.equal(res.image, encoded.image)
    # The first reconstruction of a running optimisation is the encoder's (constant noise, no latent noise).
    cfg = dataclasses.replace(I.METHOD_DEFAULTS[method], noise_mode="const", w_noise_factor=0.0,
                              optimize_noise=False, num_steps=2, tune_steps=0, prior_weight=0.0,
                              lr_schedule="constant")
    seen = []
    I.invert_image(G, target, method=method, encoder=enc, config=cfg, prior=prior,
                   perceptual={"lpips_vgg": _ZeroLPIPS(), "lpips_alex": _ZeroLPIPS()},
                   callback=lambda p: seen.append(p.image.detach().cpu().clone()))
    # the same up to float rounding: under grad the synthesis scales activations instead of weights
    # (core.ops.modulated_conv2d's choice for optimised styles)
    torch.testing.assert_close(seen[0], encoded.image, rtol=0, atol=1e-5)
    assert (seen[1] - encoded.image).abs().max() > 1e-3  # and it then moves


def test_encoder_methods(tmp_path, G, rosinality, expected):
    e4e = load(write_encoder(tmp_path / "e.pt", "e4e", rosinality, expected))
    rs = load(write_encoder(tmp_path / "r.pt", "restyle_e4e", rosinality, expected))
    res = I.invert_image(G, expected["images"], method="e4e", encoder=e4e)
    torch.testing.assert_close(res.latent.tensor, expected["e4e/ws"], rtol=1e-4, atol=1e-5)
    assert res.generator is G and res.delta is None and res.psnr.shape == (2,)
    res = I.invert_image(G, expected["images"], method="restyle", encoder=rs, num_iterations=N_ITERS)
    torch.testing.assert_close(res.latent.tensor, expected["restyle_e4e/ws"][-1], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="needs an encoder"):
        I.invert_image(G, expected["images"], method="e4e")
    with pytest.raises(ValueError, match="choose method 'restyle'"):
        I.invert_image(G, expected["images"], method="e4e", encoder=rs)
    with pytest.raises(ValueError, match="needs a ReStyle checkpoint"):
        I.invert_image(G, expected["images"], method="restyle", encoder=e4e)


class _ZeroLPIPS(torch.nn.Module):
    """A stand-in perceptual distance with a gradient (LPIPS weights are not needed to test the start)."""

    def forward(self, x, y):
        return (x - y).square().flatten(1).mean(1) * 0.5


def test_nodes_load_encode_and_invert(pack, tmp_path, rosinality, expected):
    folder = tmp_path / "models" / "encoders"
    folder.mkdir(parents=True)
    write_encoder(folder / "e4e_tiny.pt", "e4e", rosinality, expected)
    enc_mod = __import__(f"{pack.__name__}.nodes.encoders", fromlist=["x"])
    assert enc_mod.encoder_files() == ["e4e_tiny.pt"]
    load_node = pack.NODE_CLASS_MAPPINGS["SGS_LoadEncoder"]()
    assert pack.NODE_CLASS_MAPPINGS["SGS_LoadEncoder"].VALIDATE_INPUTS("nope.pt") is not True
    out = load_node.load("e4e_tiny.pt", "cpu")["result"]
    enc, info = out
    assert "e4e" in info and load_node.load("e4e_tiny.pt", "cpu")["result"][0] is enc  # cached
    # The same file holds the generator (its decoder): Load StyleGAN reads it.
    (tmp_path / "models" / "stylegan" / "e4e_tiny.pt").symlink_to(folder / "e4e_tiny.pt")
    G = pack.NODE_CLASS_MAPPINGS["SGS_LoadStyleGAN"]().load("e4e_tiny.pt", "cpu")["result"][0]
    image = (expected["images"][:1].permute(0, 2, 3, 1) + 1) / 2
    latent, recon, report = pack.NODE_CLASS_MAPPINGS["SGS_EncodeImage"]().encode(G, enc, image)["result"]
    assert latent.space == "w+" and latent.tensor.shape == (1, 8, 16) and recon.shape == (1, 32, 32, 3)
    direct = EI.encode_image(enc, G, (image.permute(0, 3, 1, 2) * 255 - 128) / 127.5).latent.tensor  # convert.py
    torch.testing.assert_close(latent.tensor, direct)
    res = pack.NODE_CLASS_MAPPINGS["SGS_InvertImage"]().invert(G, image, "e4e", 0, 0, encoder=enc)["result"]
    torch.testing.assert_close(res[0].tensor, direct)
