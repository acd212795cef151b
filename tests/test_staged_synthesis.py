"""Staged synthesis: `synthesis.run` stops at a stage and continues from its features, exactly as `forward`."""

from __future__ import annotations

import pytest
import torch

import core
from conftest import on_device, tiny_generator
from core.networks.staging import SynthesisState
from core.ops.upfirdn2d import upsample2d

# StyleGAN2 at 64 px, so that 32 px (Barbershop's F space) is a real split point; fp16 blocks at 32 and 64 px.
SG2 = {"img_resolution": 64}
VARIANTS = {
    "sg2-skip": ("stylegan2", dict(SG2, synthesis={"num_fp16_res": 2})),
    "sg2-orig": ("stylegan2", dict(SG2, synthesis={"num_fp16_res": 2, "architecture": "orig"})),
    "sg2-resnet": ("stylegan2", dict(SG2, synthesis={"num_fp16_res": 2, "architecture": "resnet"})),
    "sg2-cond": ("stylegan2", dict(SG2, c_dim=3, synthesis={"num_fp16_res": 2})),
    "sg3-t": ("stylegan3", {}),
    "sg3-r": ("stylegan3", {"synthesis": {"conv_kernel": 1, "use_radial_filters": True}}),
}
_CACHE: dict[str, core.Generator] = {}


def generator(variant: str, device: torch.device, dtype: torch.dtype) -> core.Generator:
    if variant not in _CACHE:
        arch, overrides = VARIANTS[variant]
        _CACHE[variant] = tiny_generator(arch, seed=4, **overrides)
    return on_device(_CACHE[variant], device, dtype)


def mapped_ws(G: core.Generator, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.eye(G.c_dim)[torch.arange(n) % G.c_dim] if G.c_dim else None
    device = G.w_avg.device
    return G.mapping(torch.randn([n, G.z_dim], generator=g).to(device), None if c is None else c.to(device),
                     truncation_psi=0.7)


def assert_same(a: torch.Tensor, b: torch.Tensor, what: str = "") -> None:
    """Bit for bit on the CPU; on CUDA within rounding (a library may pick another kernel for another call)."""
    if a.device.type == "cpu":
        assert torch.equal(a, b), what
    else:
        torch.testing.assert_close(a, b, atol=2e-3 if a.dtype == torch.float16 else 1e-5, rtol=1e-3, msg=what)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_split_point_reproduces_the_full_image(variant, device, dtype):
    G = generator(variant, device, dtype)
    syn = G.synthesis
    ws = mapped_ws(G)
    full = syn(ws)
    whole = syn.run(ws)
    assert isinstance(whole, SynthesisState) and whole.stage == syn.stages[-1]
    assert torch.equal(whole.img.contiguous(), full)
    # Every block of StyleGAN2; StyleGAN3 (slow on CPU): after its input, a middle layer and before the ToRGB.
    splits = syn.stages[:-1] if G.arch == "stylegan2" else [syn.stages[i] for i in (0, len(syn.stages) // 2, -2)]
    for stage in splits:
        s = syn.run(ws, stop=stage)
        assert s.stage == stage and s.x.shape[0] == 2
        if G.arch == "stylegan2":
            assert s.x.shape[2:] == (stage, stage)
            # Only 'skip' networks have an image before their last block.
            assert (s.img is not None) == (syn.architecture == "skip")
            if s.img is not None:
                assert s.img.shape == (2, G.img_channels, stage, stage) and s.img.dtype == torch.float32
        else:
            assert s.img is None
        out = syn.run(ws, start=stage, x=s.x, img=s.img)
        assert out.stage == syn.stages[-1]
        assert_same(out.img.contiguous(), full, f"split after {stage}")


@pytest.mark.parametrize("variant", ["sg2-skip", "sg2-resnet", "sg3-t"])
def test_style_overrides_and_s_only_runs_split_too(variant, device, dtype):
    G = generator(variant, device, dtype)
    syn = G.synthesis
    ws = mapped_ws(G)
    split = 32 if G.arch == "stylegan2" else syn.stages[len(syn.stages) // 2]
    layers = [layer.name for layer in syn.style_layers()]
    styles = syn.w_to_s(ws)
    stage_of = {layer.name: layer.stage for layer in syn.style_layers()}
    # One override before the split (the last layer of the split stage) and one after.
    before = [n for n in layers if syn.stages.index(stage_of[n]) <= syn.stages.index(split)][-1]
    after = layers[-2]
    overrides = {before: styles[before] * 1.5, after: styles[after] - 0.5}
    full = syn(ws, styles=overrides)
    assert not torch.equal(full, syn(ws))
    s = syn.run(ws, styles=overrides, stop=split)
    assert_same(syn.run(ws, styles=overrides, start=split, x=s.x, img=s.img).img.contiguous(), full)
    # From S alone (no ws): each part needs only the layers it runs.
    edited = dict(styles, **overrides)
    late = {n: v for n, v in edited.items() if syn.stages.index(stage_of[n]) > syn.stages.index(split)}
    s = syn.run(None, styles=edited, stop=split)
    out = syn.run(None, styles=late, start=split, x=s.x, img=s.img)
    assert_same(out.img.contiguous(), syn.from_s(edited))
    missing = next(iter(late))
    with pytest.raises(ValueError, match=f"missing layer.*{missing}"):
        syn.run(None, styles={n: v for n, v in late.items() if n != missing}, start=split, x=s.x, img=s.img)


def test_barbershop_drops_exactly_the_low_resolution_skip(device, dtype):
    """drop_skip: the image from 32 px features is the sum of the ToRGB outputs after 32 px (Barbershop's F
    space), i.e. the full image minus the upsampled 32 px skip, which no longer depends on b32.torgb."""
    G = generator("sg2-skip", device, dtype)
    syn = G.synthesis
    ws = mapped_ws(G)
    s = syn.run(ws, stop=32)
    kept = syn.run(ws, start=32, x=s.x, img=s.img).img
    dropped = syn.run(ws, start=32, x=s.x, drop_skip=True).img
    assert not torch.allclose(kept, dropped)
    # b64 computes its image as upsample(skip at 32 px) + its ToRGB output: adding the dropped part back is exact.
    assert_same(upsample2d(s.img, syn.b64.resample_filter).add_(dropped), kept)
    # The 32 px ToRGB (b32.torgb, w index 7 at 1024 px in Barbershop's count) no longer reaches the image.
    torgb = {"b32.torgb": syn.w_to_s(ws)["b32.torgb"] * 3}
    moved = syn.run(ws, styles=torgb, stop=32)
    assert torch.equal(moved.x, s.x) and not torch.equal(moved.img, s.img)
    assert_same(syn.run(ws, start=32, x=moved.x, drop_skip=True).img, dropped)


def test_barbershop_switch_through_two_blocks_and_on_other_architectures():
    G = tiny_generator("stylegan2", seed=5, img_resolution=128)
    syn, ws = G.synthesis, mapped_ws(G)
    s = syn.run(ws, stop=32)
    dropped = syn.run(ws, start=32, x=s.x, drop_skip=True).img
    skip_part = upsample2d(upsample2d(s.img, syn.b64.resample_filter), syn.b128.resample_filter)
    torch.testing.assert_close(dropped + skip_part, syn(ws), atol=1e-5, rtol=1e-5)
    for variant in ("sg2-orig", "sg2-resnet"):  # no skip to drop: the switch changes nothing
        G = generator(variant, torch.device("cpu"), torch.float32)
        ws = mapped_ws(G)
        s = G.synthesis.run(ws, stop=32)
        assert torch.equal(G.synthesis.run(ws, start=32, x=s.x, drop_skip=True).img, G.synthesis(ws))


def test_given_features_are_not_modified_and_receive_gradients():
    G = generator("sg2-resnet", torch.device("cpu"), torch.float32)
    syn, ws = G.synthesis, mapped_ws(G)
    F = syn.run(ws, stop=32).x.detach().clone().requires_grad_(True)
    before = F.detach().clone()
    with torch.enable_grad():
        syn.run(ws, start=32, x=F).img.square().mean().backward()
    assert torch.equal(F.detach(), before)
    assert F.grad is not None and F.grad.abs().sum() > 0
    G = generator("sg2-skip", torch.device("cpu"), torch.float32)
    s = G.synthesis.run(ws, stop=16)
    x, img = s.x.clone(), s.img.clone()
    G.synthesis.run(ws, start=16, x=s.x, img=s.img)
    assert torch.equal(s.x, x) and torch.equal(s.img, img)


def test_wrong_features_name_the_block():
    G = generator("sg2-skip", torch.device("cpu"), torch.float32)
    syn, ws = G.synthesis, mapped_ws(G)
    s = syn.run(ws, stop=32)
    c = s.x.shape[1]
    with pytest.raises(ValueError, match=rf"b64: expected x \[2, {c}, 32, 32\], got \[2, {c // 2}, 32, 32\]"):
        syn.run(ws, start=32, x=s.x[:, :c // 2], img=s.img)
    with pytest.raises(ValueError, match=rf"b64: expected x \[2, {c}, 32, 32\], got \[1, {c}, 32, 32\]"):
        syn.run(ws, start=32, x=s.x[:1], img=s.img)
    with pytest.raises(ValueError, match=r"b64: expected img \[2, 3, 32, 32\], got \[2, 3, 16, 16\]"):
        syn.run(ws, start=32, x=s.x, img=s.img[:, :, :16, :16])
    G3 = generator("sg3-t", torch.device("cpu"), torch.float32)
    ws3 = mapped_ws(G3)
    name = G3.synthesis.stages[3]
    s3 = G3.synthesis.run(ws3, stop=name)
    nxt = G3.synthesis.stages[4]
    with pytest.raises(ValueError, match=rf"{nxt}: expected x \[2, {s3.x.shape[1]}, "):
        G3.synthesis.run(ws3, start=name, x=s3.x[..., 1:, 1:])


def test_bad_stage_arguments_say_what_to_pass():
    G = generator("sg2-skip", torch.device("cpu"), torch.float32)
    syn, ws = G.synthesis, mapped_ws(G)
    s = syn.run(ws, stop=32)
    with pytest.raises(ValueError, match=r"start must be None or one of this network's stages \[4, 8, 16, 32, 64\], "
                                         r"got 24"):
        syn.run(ws, start=24, x=s.x, img=s.img)
    with pytest.raises(ValueError, match="must come after"):
        syn.run(ws, start=32, x=s.x, img=s.img, stop=16)
    with pytest.raises(ValueError, match="pass start="):
        syn.run(ws, x=s.x)
    with pytest.raises(ValueError, match="start=32 needs x"):
        syn.run(ws, start=32, img=s.img)
    with pytest.raises(ValueError, match="drop_skip=True"):  # a skip network continued without its skip
        syn.run(ws, start=32, x=s.x)
    with pytest.raises(ValueError, match="drop_skip=True"):  # dropping it and passing it
        syn.run(ws, start=32, x=s.x, img=s.img, drop_skip=True)
    with pytest.raises(ValueError, match=rf"ws must have shape \[N, {syn.num_ws}, 16\]"):
        syn.run(ws[:, 1:], stop=32)
    orig = generator("sg2-orig", torch.device("cpu"), torch.float32).synthesis
    with pytest.raises(ValueError, match="no RGB skip"):
        orig.run(ws, start=32, x=orig.run(ws, stop=32).x, img=s.img)
    G3 = generator("sg3-t", torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match=r"start must be None or one of this network's stages \['input', 'L0_"):
        G3.synthesis.run(mapped_ws(G3), start="L99", x=s.x)
    with pytest.raises(ValueError, match="start and x go together"):
        G3.synthesis.run(mapped_ws(G3), start="input")


@pytest.mark.slow
def test_stage_of_every_style_layer_is_the_stage_that_reads_it():
    """Changing a style changes nothing in the stages before its own (what prefix caches rely on)."""
    for variant in ("sg2-skip", "sg3-t"):
        G = generator(variant, torch.device("cpu"), torch.float32)
        syn, ws = G.synthesis, mapped_ws(G)
        styles = syn.w_to_s(ws)
        layers = syn.style_layers()
        if G.arch == "stylegan3":  # slow on CPU: the first layer, a middle one and the ToRGB
            layers = [layers[1], layers[len(layers) // 2], layers[-1]]
        for layer in layers:
            i = syn.stages.index(layer.stage)
            if i == 0:
                continue
            edited = dict(styles, **{layer.name: styles[layer.name] + 1})
            prev = syn.stages[i - 1]
            assert torch.equal(syn.run(None, styles=edited, stop=prev).x, syn.run(None, styles=styles, stop=prev).x)
            a, b = syn.run(None, styles=edited, stop=layer.stage), syn.run(None, styles=styles, stop=layer.stage)
            assert not (torch.equal(a.x, b.x) and (a.img is None or torch.equal(a.img, b.img))), layer.name
