"""Benchmark Neural Style: seconds per iteration against the PyTorch tutorial's loop, and peak memory.

Issue 18's targets, measured in ONE run on the same (seeded random) VGG-19 weights and images:

  * seconds per iteration (one loss evaluation + gradient: an L-BFGS closure call) of
    `core.edits.neural_style.style_transfer(method='tutorial')` against the tutorial's own loop
    (advanced_source/neural_style_tutorial.py's model of inserted loss modules, LBFGS, clamp in the closure;
    rewritten here from its description) at 256 and 512 px — goal >= 1.5x faster; also the paper's
    `gatys2016` recipe (VGG-19 to relu5_1, average pooling), which has no tutorial counterpart;
  * peak memory of a `gatys2016` run at 1024 px (CPU: the process's RSS high-water mark in a fresh subprocess,
    VmHWM - RSS before the call; CUDA: max_memory_allocated);
  * `--gpu-target`: 500 L-BFGS iterations at 512 px (goal <= 10 s on an H100).

Each side runs `--iters` evaluations after one warm-up evaluation; the median seconds per evaluation is reported.

    python bench/bench_neural_style.py                      # 256 and 512 px, memory at 1024, CPU
    python bench/bench_neural_style.py --sizes 256 --iters 5 --no-memory
    python bench/bench_neural_style.py --device cuda --gpu-target
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.edits import neural_style as NS  # noqa: E402
from core.losses import vgg19 as V  # noqa: E402


def tutorial_model(vgg: V.VGG19, content, style, device):
    """The tutorial's get_style_model_and_losses on torchvision's layout with `vgg`'s weights."""
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(-1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(-1, 1, 1)

    class Normalization(nn.Module):
        def forward(self, img):
            return (img - mean) / std

    def gram(x):
        a, b, c, d = x.size()
        f = x.view(a * b, c * d)
        return torch.mm(f, f.t()).div(a * b * c * d)

    class ContentLoss(nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = target.detach()

        def forward(self, x):
            self.loss = F.mse_loss(x, self.target)
            return x

    class StyleLoss(nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = gram(target).detach()

        def forward(self, x):
            self.loss = F.mse_loss(gram(x), self.target)
            return x

    state = V.vgg19_state(vgg, "torchvision")
    convs = iter([(state[f"features.{i}.weight"], state[f"features.{i}.bias"]) for i in V.TORCHVISION_INDEX])
    model = nn.Sequential(Normalization()).to(device)
    cl, sl = [], []
    i = 0
    for v in [64, 64, "M", 128, 128, "M", 256]:   # up to conv_5 (conv3_1): the tutorial trims after its last loss
        if v == "M":
            model.add_module(f"pool_{i}", nn.MaxPool2d(2, 2))
            continue
        i += 1
        w, b = next(convs)
        conv = nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1).to(device)
        conv.weight.data.copy_(w)
        conv.bias.data.copy_(b)
        model.add_module(f"conv_{i}", conv)
        if i == 4:
            c = ContentLoss(model(content))
            model.add_module(f"content_loss_{i}", c)
            cl.append(c)
        s = StyleLoss(model(style))
        model.add_module(f"style_loss_{i}", s)
        sl.append(s)
        if i < 5:
            model.add_module(f"relu_{i}", nn.ReLU(inplace=False))
    model.eval().requires_grad_(False)
    return model, cl, sl


def time_tutorial(vgg, content, style, iters, device) -> list[float]:
    model, cl, sl = tutorial_model(vgg, content, style, device)
    img = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([img])
    times = []
    last = [time.perf_counter()]

    def closure():
        with torch.no_grad():
            img.clamp_(0, 1)
        opt.zero_grad()
        model(img)
        loss = sum(s.loss for s in sl) * 1e6 + sum(c.loss for c in cl)
        loss.backward()
        _sync(device)
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        return loss

    while len(times) < iters + 1:
        opt.step(closure)
    return times[1:iters + 1]


def time_ours(vgg, content, style, iters, method, device, channels_last=True) -> list[float]:
    times = []
    last = [None]

    def cb(p):
        _sync(device)
        now = time.perf_counter()
        if last[0] is not None:
            times.append(now - last[0])
        last[0] = now

    NS.style_transfer(content, style, vgg=vgg, method=method, size=max(content.shape[2:]), steps=iters + 1,
                      callback=cb, channels_last=channels_last)
    return times


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def memory_child(size: int, iters: int, device: str) -> dict:
    dev = torch.device(device)
    vgg = V.random_vgg19(0).to(dev)
    g = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, size, size, generator=g).to(dev)
    style = torch.rand(1, 3, size, size, generator=g).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    NS.style_transfer(content, style, vgg=vgg, method="gatys2016", size=size, steps=iters)
    seconds = time.perf_counter() - t0
    if dev.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - before) / 2 ** 20
    else:
        peak = (_status_kb("VmHWM") - before) / 1024
    return {"size": size, "iters": iters, "peak_mib": round(peak), "seconds": round(seconds, 1)}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--memory-size", type=int, default=1024)
    ap.add_argument("--memory-iters", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every side (load changes hit all)")
    ap.add_argument("--contiguous", action="store_true", help="also time ours without channels-last")
    ap.add_argument("--gpu-target", action="store_true")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(memory_child(args.child, args.memory_iters, args.device)))
        return
    device = torch.device(args.device)
    torch.manual_seed(0)
    vgg = V.random_vgg19(0).to(device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    for size in [int(s) for s in args.sizes.split(",") if s]:
        g = torch.Generator().manual_seed(size)
        content = torch.rand(1, 3, size, size, generator=g).to(device)
        style = torch.rand(1, 3, size, size, generator=g).to(device)
        rows = {}
        # interleaved, so that a change in the machine's load hits every side alike
        sides = [("tutorial loop", lambda: time_tutorial(vgg, content, style, args.iters, device)),
                 ("ours tutorial", lambda: time_ours(vgg, content, style, args.iters, "tutorial", device))]
        if args.contiguous:
            sides.append(("ours tutorial (contiguous)", lambda: time_ours(vgg, content, style, args.iters,
                                                                          "tutorial", device, False)))
        sides.append(("ours gatys2016", lambda: time_ours(vgg, content, style, args.iters, "gatys2016", device)))
        for _ in range(args.rounds):
            for name, fn in sides:
                rows.setdefault(name, []).extend(fn())
        ref = statistics.median(rows["tutorial loop"])
        for name, times in rows.items():
            med = statistics.median(times)
            print(f"{size:5d} px  {name:28s} {med:8.3f} s/iteration  (tutorial loop / this: {ref / med:.2f}x)",
                  flush=True)
    if args.gpu_target:
        g = torch.Generator().manual_seed(1)
        content = torch.rand(1, 3, 512, 512, generator=g).to(device)
        style = torch.rand(1, 3, 512, 512, generator=g).to(device)
        NS.style_transfer(content, style, vgg=vgg, method="gatys2016", size=512, steps=3)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        NS.style_transfer(content, style, vgg=vgg, method="gatys2016", size=512, steps=500)
        _sync(device)
        print(f"gpu target: 500 L-BFGS iterations (gatys2016) at 512 px: {time.perf_counter() - t0:.1f} s "
              f"(goal <= 10 s on an H100)")
    if not args.no_memory:
        out = subprocess.run([sys.executable, __file__, "--child", str(args.memory_size), "--device", args.device,
                              "--memory-iters", str(args.memory_iters)], capture_output=True, text=True,
                             env={**os.environ})
        if out.returncode:
            print(out.stderr[-2000:])
        else:
            m = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"peak memory, gatys2016 at {m['size']} px ({m['iters']} L-BFGS iterations): {m['peak_mib']} MiB "
                  f"({m['seconds']} s)")


if __name__ == "__main__":
    main()
