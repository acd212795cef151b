"""Benchmark Weight-Shift Edit training against CLIP Latent Optimize: seconds per step and peak memory.

Issue 15's targets, measured in ONE run on the same generator, CLIP model, resolution and batch:

  * seconds per optimisation step of `core.edits.weight_shift.train_weight_shift` <= 1.1x a step of
    `core.edits.clip_optimize.clip_optimize` (CLIP Latent Optimize, W+);
  * peak memory of a training run no higher than that of a CLIP Latent Optimize run.

Both are timed in the two modes of a weight shift:

  * single: one image's latent (the paper's mode) vs CLIP Latent Optimize of that one latent;
  * batch:  a fresh batch of `--batch` z at psi 0.7 each step (a shift that generalises) vs CLIP Latent Optimize
    of a latent batch of the same size.

Both sides use the directional CLIP loss (StyleGAN-NADA's, text vs neutral text), as a weight shift does by
default; `--loss global` times both with the plain CLIP distance instead. Each side runs `--steps` steps; the
first is not counted (warm-up); the median of the others is reported, with the ratio shift / latent.

Peak memory. CPU: every measurement runs in a fresh subprocess that builds the same generator and CLIP, then
resets the kernel's RSS high-water mark (`/proc/self/clear_refs` <- 5), runs the function for `--mem-steps`
steps and reads `VmHWM` from /proc/self/status; the figure is VmHWM - RSS just before the call. Why this and not
another tool: tracemalloc sees only Python's allocator (torch's tensors are allocated by c10, so it reports
almost nothing); torch.profiler's memory profile covers tensors from the CPU allocator but not oneDNN/BLAS
scratch buffers or Python objects, and it slows every op down; RSS covers everything the process really touches.
A fresh process per measurement matters because glibc keeps freed memory mapped: in a process that already ran
the other method, the second one would reuse those pages and its RSS would hardly grow. The whole call is
measured (including its one-time setup, e.g. its own text encoding), as a user pays it. CUDA:
`torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus the memory allocated before the call
(same process; the caching allocator's stats are exact).

`--gpu-target`: the H100 target of the issue (<= 30 s for a 1024 px shift of 200 steps, batch 2; the paper
reports ~90 s): builds a full-size StyleGAN2 config-f generator (random weights; `--target-config f1024`) and a
ViT-B/32-sized random CLIP, trains a batch-mode shift of `--target-steps` (200) steps at batch 2 and reports the
seconds. On a CPU the target cannot be checked; for a run that finishes in minutes use a smaller config and fewer
steps (the total is then extrapolated linearly from the measured median step, and said so).

    python bench/bench_weight_shift.py                                    # f256, single + batch 2, CPU
    python bench/bench_weight_shift.py --configs ada256 --steps 4 --layers b16.conv1,b64.conv1
    python bench/bench_weight_shift.py --gpu-target --device cuda         # the H100 target (f1024, 200 steps)
    python bench/bench_weight_shift.py --gpu-target --target-config f256 --target-steps 10   # CPU, extrapolated

Timings do not depend on the weights, so random ones are used. The numbers are only comparable within one run
(on a shared CPU other processes change absolute times; the ratio is the result).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Optional
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for p in (str(REPO), str(REPO / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import core  # noqa: E402
from core.edits import clip_optimize as SC  # noqa: E402
from core.models.clip import random_clip  # noqa: E402

import bench_generator as BG  # noqa: E402

TEXT = "a face with a big nose"
NEUTRAL = "a face"
STEP_RATIO_TARGET = 1.1          # issue 15: a shift step <= 1.1x a CLIP Latent Optimize step
GPU_TARGET_S = 30.0              # issue 15: <= 30 s for a 1024 px shift of 200 steps on an H100
METHODS = ("shift", "latent")


def train_fn():
    """`train_weight_shift`, or a clear error when this checkout does not have it yet."""
    try:
        from core.edits.weight_shift import train_weight_shift
    except ImportError as e:  # pragma: no cover - only before the training code is merged
        raise SystemExit(f"core.edits.weight_shift.train_weight_shift is not in this checkout ({e}); "
                         f"merge the branch that adds core/edits/weight_shift/train.py") from e
    return train_weight_shift


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------
# Setup shared by the timing run and the memory subprocesses


def build(config: str, device: torch.device):
    G = core.build_generator(BG.CONFIGS[config](), seed=0)
    BG.randomise_zero_init(G, 0)
    core.compute_w_avg(G, num_samples=2000, seed=0)
    G = G.to(device).requires_grad_(False)   # as loaded generators are
    G.info.name = f"random-{config}"
    return G


def make_run(G, clip, method: str, mode: str, *, batch: int, steps: int, layer: str, loss: str, callback=None,
             pool: Optional[int] = None):
    """A zero-argument function running `steps` steps of `method` ('shift' | 'latent') in `mode`
    ('single' | 'batch')."""
    n = 1 if mode == "single" else batch
    neutral = NEUTRAL if loss == "directional" else None
    if method == "shift":
        train = train_fn()
        latents = core.sample_latents(G, [0], space="w+", truncation_psi=0.7) if mode == "single" else None
        extra = {} if pool is None else {"pool": pool}
        return lambda: train(G, clip, TEXT, layer=layer, neutral_text=neutral, latents=latents, steps=steps,
                             batch=n, truncation_psi=0.7, seed=0, loss=loss, callback=callback, **extra)
    latent = core.sample_latents(G, list(range(n)), space="w+", truncation_psi=0.7)
    text = clip.encode_text([TEXT])
    neutral_emb = clip.encode_text([NEUTRAL]) if neutral else None
    config = dataclasses.replace(SC.DEFAULTS, num_steps=steps, space="w+")
    return lambda: SC.clip_optimize(G, latent, text, clip, config=config, neutral_embedding=neutral_emb,
                                    callback=callback)


def step_times(G, clip, method, mode, device, **kw) -> list[float]:
    """Seconds of each step after the first."""
    marks = []

    def tick(_p):
        sync(device)
        marks.append(time.perf_counter())

    run = make_run(G, clip, method, mode, callback=tick, **kw)
    sync(device)
    start = time.perf_counter()
    run()
    marks = [start] + marks
    return [b - a for a, b in zip(marks, marks[1:])][1:]


# ------------------------------------------------------------------------------------------------
# Peak memory


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    if m is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(m.group(1))


def cpu_peak_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _proc_status_kb("VmHWM")
        return True
    except OSError:
        return False


def child(spec: dict) -> dict:
    """Runs in its own process: the peak memory of one call (bytes above what was resident before it)."""
    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    G = build(spec["config"], device)
    clip = random_clip("ViT-B-32", seed=0, device=device)
    clip.encode_text([TEXT, NEUTRAL])
    run = make_run(G, clip, spec["method"], spec["mode"], batch=spec["batch"], steps=spec["steps"],
                   layer=spec["layer"], loss=spec["loss"])
    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        sync(device)
        return {"peak_bytes": torch.cuda.max_memory_allocated(device) - before, "how": "cuda max_memory_allocated"}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                          # VmHWM := current RSS
    before = _proc_status_kb("VmRSS")
    run()
    return {"peak_bytes": (_proc_status_kb("VmHWM") - before) * 1024, "how": "RSS high-water (VmHWM) delta"}


def peak_memory(spec: dict) -> dict:
    """`child(spec)` in a fresh interpreter (see the module docstring for why)."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"memory measurement {spec} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def amortised(runs: list[list[float]], first_pass: int, run_steps: int) -> tuple[float, str]:
    """Seconds per step of a `run_steps`-step batch-mode run whose first `first_pass` steps also render the pool's
    references, from timed runs (`step_times`: step 2 onward). Without a timed step after the first pass, the
    first-pass median is all there is (an upper bound)."""
    filling = [t for r in runs for t in r[:max(first_pass - 1, 0)]]
    steady = [t for r in runs for t in r[max(first_pass - 1, 0):]]
    if not steady:
        m = statistics.median(filling)
        return m, (f"no step after the pool's first pass was timed (use --steps > {first_pass + 1}); "
                   f"{m:.3f} s/step while filling it (an upper bound)")
    s = statistics.median(steady)
    f = statistics.median(filling) if filling else s
    k = min(first_pass, run_steps)
    per = (k * f + (run_steps - k) * s) / run_steps
    return per, (f"{f:.3f} s/step while the pool is filled (first {first_pass} steps), {s:.3f} after: "
                 f"{per:.3f} s/step over a {run_steps}-step run")


def compare(args, device) -> list[dict]:
    clip = random_clip("ViT-B-32", seed=0, device=device)
    results = []
    for config in args.configs.split(","):
        G = build(config, device)
        layers = args.layers.split(",")
        print(f"\n== {config}: {G.arch} {G.img_resolution} px, {args.loss} CLIP loss, {args.steps} steps per run "
              f"(first not timed)")
        for mode in args.modes.split(","):
            n = 1 if mode == "single" else args.batch
            for layer in layers:
                kw = dict(batch=args.batch, steps=args.steps, layer=layer, loss=args.loss)
                times = {}
                runs: dict[str, list] = {}
                # Alternate the two methods (latent, shift, latent, shift ...) so a change of machine load hits both.
                for _ in range(args.repeats):
                    for method in ("latent", "shift"):
                        t = step_times(G, clip, method, mode, device, pool=args.pool, **kw)
                        times.setdefault(method, []).extend(t)
                        runs.setdefault(method, []).append(t)
                med = {m: statistics.median(t) for m, t in times.items()}
                if mode == "batch" and args.pool:
                    # A pool latent's reference is rendered the first time it is drawn: steps 1..ceil(pool/batch)
                    # cost more than the rest. Per step, a run of --run-steps costs the mix of both.
                    med["shift"], note = amortised(runs["shift"], -(-args.pool // n), args.run_steps)
                    print(f"   {'':6s} {'':7s} {'':10s} shift, pool {args.pool}: {note}")
                ratio = med["shift"] / med["latent"]
                row = {"config": config, "resolution": G.img_resolution, "mode": mode, "batch": n, "layer": layer,
                       "loss": args.loss, "shift_s_per_step": med["shift"], "latent_s_per_step": med["latent"],
                       "step_ratio": ratio, "step_pass": ratio <= STEP_RATIO_TARGET,
                       "step_seconds": times}
                print(f"   {mode:6s} batch {n} {layer:10s} shift {med['shift']:7.3f} s/step, latent (CLIP Latent "
                      f"Optimize) {med['latent']:7.3f} s/step: ratio {ratio:.2f}x (target <= {STEP_RATIO_TARGET}x) "
                      f"{verdict(ratio <= STEP_RATIO_TARGET)}  [medians of {len(times['shift'])} / "
                      f"{len(times['latent'])} steps]")
                if args.memory:
                    mem = {}
                    for method in METHODS:
                        spec = {"config": config, "device": str(device), "method": method, "mode": mode,
                                "batch": args.batch, "steps": args.mem_steps, "layer": layer, "loss": args.loss,
                                "threads": torch.get_num_threads()}
                        mem[method] = peak_memory(spec)
                    a, b = mem["shift"]["peak_bytes"], mem["latent"]["peak_bytes"]
                    row.update(shift_peak_mib=a / 2**20, latent_peak_mib=b / 2**20, memory_pass=a <= b,
                               memory_how=mem["shift"]["how"])
                    print(f"   {'':6s} {'':7s} {'':10s} peak memory ({mem['shift']['how']}, {args.mem_steps} steps, "
                          f"own process each): shift {a / 2**20:8.1f} MiB, latent {b / 2**20:8.1f} MiB: "
                          f"{a / max(b, 1):.2f}x (target <= 1.0x) {verdict(a <= b)}")
                results.append(row)
    return results


def gpu_target(args, device) -> dict:
    G = build(args.target_config, device)
    clip = random_clip("ViT-B-32", seed=0, device=device)
    train = train_fn()
    marks = []

    def tick(_p):
        sync(device)
        marks.append(time.perf_counter())

    print(f"\n== GPU target: {args.target_config} ({G.img_resolution} px) batch-mode shift on "
          f"{args.layers.split(',')[0]}, "
          f"batch {args.target_batch}, {args.target_steps} steps, CLIP ViT-B-32 (random), on {device}")
    sync(device)
    t0 = time.perf_counter()
    train(G, clip, TEXT, layer=args.layers.split(",")[0], neutral_text=NEUTRAL, latents=None,
          steps=args.target_steps, batch=args.target_batch, truncation_psi=0.7, seed=0, callback=tick)
    sync(device)
    total = time.perf_counter() - t0
    per_step = statistics.median([b - a for a, b in zip(marks, marks[1:])]) if len(marks) > 1 else total
    full = 200
    estimate = total if args.target_steps == full else total + (full - args.target_steps) * per_step
    row = {"config": args.target_config, "resolution": G.img_resolution, "batch": args.target_batch,
           "steps": args.target_steps, "seconds": total, "median_step_s": per_step,
           "seconds_for_200_steps": estimate, "extrapolated": args.target_steps != full, "device": str(device),
           "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    how = "measured" if args.target_steps == full else f"extrapolated from {args.target_steps} steps"
    print(f"   {total:.1f} s for {args.target_steps} steps (median {per_step:.3f} s/step); 200 steps: "
          f"{estimate:.1f} s ({how})")
    if device.type == "cuda" and G.img_resolution == 1024 and args.target_batch == 2:
        ok = estimate <= GPU_TARGET_S
        row["target_pass"] = ok
        print(f"   target <= {GPU_TARGET_S:g} s for a 1024 px shift of 200 steps, batch 2 on "
              f"{row['device_name']}: {verdict(ok)} ({how}; the issue's target is for an H100)")
    else:
        row["target_pass"] = None
        print(f"   the <= {GPU_TARGET_S:g} s target is for 1024 px, batch 2, on an H100: NOT MEASURED by this run "
              f"({device}, {G.img_resolution} px, batch {args.target_batch})")
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="f256", help=f"comma-separated, from {sorted(BG.CONFIGS)}")
    ap.add_argument("--modes", default="single,batch", help="'single' (one image's latent) and/or 'batch'")
    ap.add_argument("--batch", type=int, default=2, help="batch mode: images per step (both methods)")
    ap.add_argument("--layers", default="b16.conv1", help="conv layer(s) the shift trains on (comma-separated)")
    ap.add_argument("--loss", default="directional", choices=("directional", "global"))
    ap.add_argument("--steps", type=int, default=4, help="steps per run (the first is not timed)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per method, alternating the methods")
    ap.add_argument("--pool", type=int, default=None, help="batch mode: the shift's latent pool (default: "
                    "train_weight_shift's, DEFAULTS.pool; 0 = fresh z every step)")
    ap.add_argument("--run-steps", type=int, default=200, help="batch mode with a pool: the run length the "
                    "per-step cost is averaged over (the reference preset's 200)")
    ap.add_argument("--mem-steps", type=int, default=2, help="steps of each peak-memory run")
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory runs")
    ap.add_argument("--gpu-target", action="store_true", help="time the H100 target run instead (see above)")
    ap.add_argument("--target-config", default="f1024")
    ap.add_argument("--target-steps", type=int, default=200)
    ap.add_argument("--target-batch", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.pool is None and not args.child:
        from core.edits.weight_shift import DEFAULTS as WS_DEFAULTS
        args.pool = WS_DEFAULTS.pool
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    device = torch.device(args.device)
    if args.memory and device.type == "cpu" and not cpu_peak_supported():
        print("note: /proc/self/clear_refs is not writable here, so the CPU peak memory cannot be measured; "
              "running without --memory")
        args.memory = False
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; CLIP ViT-B-32 (random weights); "
          f"text {TEXT!r}, neutral {NEUTRAL!r}")
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device)}
    if args.gpu_target:
        out["gpu_target"] = gpu_target(args, device)
    else:
        out["compare"] = compare(args, device)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
