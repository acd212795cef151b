"""Make tests/fixtures/encoders.safetensors: outputs of the reference pSp, e4e and ReStyle code on seeded weights.

Run once, outside the test suite, with checkouts of the reference repositories (nothing of theirs is copied into
this repository; their modules are imported from the given folders):

    python scripts/make_encoder_fixtures.py --psp PATH/pixel2style2pixel --e4e PATH/encoder4editing \
        --restyle PATH/restyle-encoder

The weights are drawn by our `random_encoder(config, seed)` (the test draws them again) and loaded into the
reference modules with `load_state_dict(strict=True)`, which also proves the state-dict names are theirs. The
networks are shrunk to test size by patching the references' hard-coded widths (IR-SE50's unit counts and tap
indices are kept); the images are 64 px. ReStyle's decoder is the tiny rosinality generator of
tests/fixtures/rosinality.safetensors as our loader reads it (its parity with rosinality's code is tested
separately), rendered with constant noise as the references' `randomize_noise=False`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from argparse import Namespace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT / "tests"))

PACK = ROOT.name
core = importlib.import_module(f"{PACK}.core")
E = importlib.import_module(f"{PACK}.core.models.encoders.networks")

# Test sizes: must match tests/test_encoders.py.
STAGES = ((16, 3), (32, 4), (32, 14), (16, 3))   # IR-SE50's unit counts (taps 6, 20, 23), tiny widths
STEM = 8
SIZE = 64
N_ITERS = 3
SEEDS = {"psp": 1, "e4e": 2, "restyle_psp": 3, "restyle_e4e": 4}


def _ops_stub() -> types.ModuleType:
    """`models.stylegan2.op` without its CUDA extension (only EqualLinear without activation is used)."""
    op = types.ModuleType("models.stylegan2.op")

    def fused_leaky_relu(x, bias, negative_slope=0.2, scale=2 ** 0.5):
        return F.leaky_relu(x + bias.reshape(1, -1, *[1] * (x.ndim - 2)), negative_slope) * scale

    class FusedLeakyReLU(nn.Module):
        def __init__(self, channel, negative_slope=0.2, scale=2 ** 0.5):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(channel))

        def forward(self, x):
            return fused_leaky_relu(x, self.bias)

    op.fused_leaky_relu, op.FusedLeakyReLU = fused_leaky_relu, FusedLeakyReLU
    op.upfirdn2d = lambda *a, **k: (_ for _ in ()).throw(NotImplementedError("not used"))
    return op


def use_repo(path: Path) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("models", "configs", "utils", "criteria"):
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not p.startswith("/tmp/enc_ref")] if False else sys.path
    sys.path.insert(0, str(path))
    sys.modules["models.stylegan2.op"] = _ops_stub()
    sys.modules.setdefault("matplotlib", types.SimpleNamespace(use=lambda *_: None))


def shrink(module_name: str, gsb_module: str) -> None:
    """Patch the widths the reference hard-codes (512, 64) to the test sizes."""
    enc = importlib.import_module(module_name)
    helpers = importlib.import_module("models.encoders.helpers")
    gsb = importlib.import_module(gsb_module)
    w = STAGES[-1][0]

    def small_blocks(num_layers):
        c_in, blocks = STEM, []
        for c_out, units in STAGES:
            blocks.append(helpers.get_block(in_channel=c_in, depth=c_out, num_units=units))
            c_in = c_out
        return blocks

    enc.get_blocks = small_blocks
    enc._small_style_block = lambda spatial: gsb.GradualStyleBlock(w, w, spatial)


def finish(ref: nn.Module, ours: nn.Module, input_nc: int, fpn: bool) -> nn.Module:
    make = sys.modules[type(ref).__module__]._small_style_block
    ref.styles = nn.ModuleList([make(s.spatial) for s in ref.styles])  # built at 512 wide, rebuilt small
    ref.input_layer = nn.Sequential(nn.Conv2d(input_nc, STEM, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(STEM),
                                    nn.PReLU(STEM))
    if fpn:
        ref.latlayer1 = nn.Conv2d(STAGES[2][0], STAGES[-1][0], kernel_size=1, stride=1, padding=0)
        ref.latlayer2 = nn.Conv2d(STAGES[1][0], STAGES[-1][0], kernel_size=1, stride=1, padding=0)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ref.eval()


def config(kind: str, num_ws: int) -> "E.EncoderConfig":
    return E.EncoderConfig(arch="fpn" if kind in ("psp", "e4e") else "backbone",
                           progressive=kind in ("e4e", "restyle_e4e"), num_ws=num_ws,
                           input_channels=6 if kind.startswith("restyle") else 3, stages=STAGES, stem_channels=STEM)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--psp", type=Path, required=True)
    ap.add_argument("--e4e", type=Path, required=True)
    ap.add_argument("--restyle", type=Path, required=True)
    args = ap.parse_args()

    import forge
    from safetensors.torch import save_file

    fx = forge.load_fixture("rosinality")
    tmp = Path("/tmp/encoder_fixture_decoder.pt")
    forge.write_rosinality_pt(fx, tmp, layout="psp")
    G = core.load_generator(tmp)
    num_ws, w_dim = G.num_ws, G.w_dim
    assert w_dim == STAGES[-1][0], (w_dim, STAGES)
    latent_avg = fx.net["latent_avg"].reshape(1, -1).repeat(num_ws, 1)

    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(2, 3, SIZE, SIZE, generator=gen) * 2 - 1)
    out = {"images": images, "latent_avg": latent_avg}
    torch.set_grad_enabled(False)

    # pSp (pixel2style2pixel): GradualStyleEncoder, codes + latent_avg (start_from_latent_avg).
    use_repo(args.psp)
    shrink("models.encoders.psp_encoders", "models.encoders.psp_encoders")
    enc = importlib.import_module("models.encoders.psp_encoders")
    ours = E.random_encoder(config("psp", num_ws), SEEDS["psp"])
    opts = Namespace(input_nc=3, n_styles=num_ws)
    ref = finish(enc.GradualStyleEncoder(50, "ir_se", opts), ours, 3, True)
    out["psp/ws"] = ref(images) + latent_avg.repeat(images.shape[0], 1, 1)

    # e4e (encoder4editing): Encoder4Editing at ProgressiveStage.Inference, codes + latent_avg.
    use_repo(args.e4e)
    shrink("models.encoders.psp_encoders", "models.encoders.psp_encoders")
    enc = importlib.import_module("models.encoders.psp_encoders")
    ours = E.random_encoder(config("e4e", num_ws), SEEDS["e4e"])
    opts = Namespace(stylegan_size=G.img_resolution)
    ref = finish(enc.Encoder4Editing(50, "ir_se", opts), ours, 3, True)
    out["e4e/ws"] = ref(images) + latent_avg.repeat(images.shape[0], 1, 1)

    # ReStyle: its e4e / pSp forward (residual on the previous latent) and run_on_batch / get_average_image.
    use_repo(args.restyle)
    shrink("models.encoders.restyle_psp_encoders", "models.encoders.map2style")
    shrink("models.encoders.restyle_e4e_encoders", "models.encoders.map2style")
    iu = importlib.import_module("utils.inference_utils")

    class Decoder(nn.Module):  # rosinality's Generator call as the references make it
        def forward(self, styles, input_is_latent=True, randomize_noise=False, return_latents=False):
            assert input_is_latent and not randomize_noise
            codes = styles[0]
            img = G.synthesis(codes, noise_mode="const")
            return img, (codes if return_latents else None)

    for kind, module, cls, wrapper in (("restyle_psp", "restyle_psp_encoders", "BackboneEncoder", "psp"),
                                       ("restyle_e4e", "restyle_e4e_encoders", "ProgressiveBackboneEncoder", "e4e")):
        enc = importlib.import_module(f"models.encoders.{module}")
        ours = E.random_encoder(config(kind, num_ws), SEEDS[kind])
        opts = Namespace(input_nc=6, n_iters_per_batch=N_ITERS, resize_outputs=False, dataset_type="ffhq_encode",
                         output_size=G.img_resolution)
        ref_enc = finish(getattr(enc, cls)(50, "ir_se", num_ws, opts), ours, 6, False)
        net_cls = getattr(importlib.import_module(f"models.{wrapper}"), "pSp" if wrapper == "psp" else "e4e")
        net = net_cls.__new__(net_cls)
        nn.Module.__init__(net)
        net.opts, net.encoder, net.decoder = opts, ref_enc, Decoder()
        net.face_pool = nn.AdaptiveAvgPool2d((SIZE, SIZE))
        net.latent_avg = latent_avg
        avg_image = net(net.latent_avg.unsqueeze(0), input_code=True, randomize_noise=False, return_latents=False,
                        average_code=True)[0].float()
        batch, lat = iu.run_on_batch(images, net, opts, avg_image)
        out[f"{kind}/avg_image"] = avg_image
        out[f"{kind}/ws"] = torch.stack([torch.stack([torch.from_numpy(lat[i][t]) for i in range(len(images))])
                                         for t in range(N_ITERS)])          # [iters, N, num_ws, w_dim]
        out[f"{kind}/images"] = torch.stack([torch.stack([batch[i][t] for i in range(len(images))])
                                             for t in range(N_ITERS)])      # [iters, N, 3, R, R]

    dest = ROOT / "tests" / "fixtures" / "encoders.safetensors"
    save_file({k: v.contiguous().float() for k, v in out.items()}, str(dest),
              metadata={"info": f"pSp {args.psp.name}, e4e {args.e4e.name}, ReStyle {args.restyle.name}; stages "
                                f"{STAGES}, stem {STEM}, {SIZE} px, seeds {SEEDS}, {N_ITERS} ReStyle iterations"})
    print(dest, dest.stat().st_size)


if __name__ == "__main__":
    main()
