"""A loss on VGG-19 features and its gradient w.r.t. the network's input, on CPU, with every feature map and
gradient written into buffers that live across iterations (Neural Style's fast path).

Why: a style-transfer evaluation at 512 px makes ~1 GB of new feature maps and gradients. On the CPU, glibc's
malloc maps every allocation over 32 MB afresh and returns it to the OS when freed, so autograd's evaluation pays
for ~250,000 page faults (each page zeroed by the kernel) every time: about a third of its time on a 2-core CPU.
Here the frozen network's forward and backward are written out by hand (the weights are constants; only the
input needs a gradient), each step writing into a buffer kept for the next evaluation:

- convolution: oneDNN's in-place fused op (`mkldnn::_convolution_pointwise_`, what torch.compile emits on CPU),
  y = conv(x) + y into a zeroed buffer (bias included); or, for the layers with many channels on large maps
  (`core.ops.winograd.worthwhile`: conv2_1 and deeper from 32×32 maps on; on AVX2 CPUs, `winograd=None`),
  Winograd's F(4×4, 3×3) (`core.ops.winograd`), 4× less arithmetic in its products, written into the same
  buffers: 1.3–2.5× faster per layer than oneDNN on a 2-core AVX2 CPU, equal to ~1e-5 of each map's magnitude;
- ReLU: in place when the convolution's output is not a wanted feature, else `clamp_min(out=)` into another
  buffer;
- pooling: the structured `max_pool2d_with_indices.out` / `avg_pool2d.out`;
- backward: ReLU by `threshold_backward(grad_input=)` in place (mask pre > 0); pooling by the structured backward
  ops with `grad_input=`; a convolution's input gradient as the forward convolution of the output gradient with the
  transposed, flipped kernel (dx = conv2d(dy, Wᵀ flipped, padding 1): stride 1, 3×3, zero padding), written the
  same way — straight into the next layer's loss-gradient buffer when that layer is a feature.

The loss itself (Gram matrices, content distances, masks, ...) stays ordinary autograd code on the feature maps
(`loss_fn` receives leaf tensors that are views of the buffers) and adds each feature's gradient into a per-layer
sink buffer: the Gram and content-MSE backwards write there directly (`grad_into`), anything else autograd returns
is added to it. `VGGObjective.apply(h, runner, loss_fn)` is the autograd entry: its forward runs everything and
keeps the input gradient, its backward hands it on, so the preprocessing before `h` and any other loss on the image
stay in the caller's graph.

`BufferedVGG.supported(...)` says when this path applies: CPU float32 with oneDNN, any of the three formats
(AdaIN's reflection padding is written into a padded scratch buffer first, its backward folded back by
`reflection_pad2d_backward`, and its pools use ceil mode). The autograd path (`VGG19.forward`) is the
specification: tests compare the two, values and gradients (equal to float rounding with oneDNN alone; to ~1e-4 of
the loss with the Winograd layers, tests/test_winograd.py).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ..ops.winograd import WinogradConv, Workspace, default_enabled, worthwhile
from .vgg19 import CONV_NAMES, VGG19, _block_end, check_layers

_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise_", None)
_STRIDE, _DIL = [1, 1], [1, 1]
_REFLECT = [1, 1, 1, 1]


def _conv_into(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor],
               padding: int = 1) -> None:
    """out = conv2d(x, w, b, padding=padding), written into `out` (oneDNN's in-place 'add' post-op on a zeroed
    buffer)."""
    out.zero_()
    _POINTWISE.binary(out, x, w, b, [padding, padding], _STRIDE, _DIL, 1, "add", None, None, [], None)


class BufferedVGG:
    """Runs `loss_fn(features, sinks)` on `net`'s feature maps `layers` of inputs of one shape and returns the loss
    and its gradient w.r.t. the (preprocessed) input; buffers are made on the first call and reused while the input
    shape stays the same. Not thread-safe: one runner per optimisation."""

    @staticmethod
    def supported(net: VGG19, x: torch.Tensor, pooling: str) -> bool:
        return (_POINTWISE is not None and torch.backends.mkldnn.is_available() and x.device.type == "cpu"
                and x.dtype == torch.float32 and next(net.parameters()).dtype == torch.float32
                and net.format in ("torchvision", "caffe", "adain") and pooling in ("max", "avg"))

    def __init__(self, net: VGG19, layers: Sequence[str], pooling: str, winograd: Optional[bool] = None):
        wanted = list(dict.fromkeys(check_layers(layers)))
        if not wanted:
            raise ValueError("BufferedVGG needs at least one layer")
        self.wanted = set(wanted)
        self.pooling = pooling
        self.reflect = net.format == "adain"   # AdaIN's VGG: reflection padding and ceil-mode pooling
        # the convolutions up to the deepest layer asked for
        depth = max(CONV_NAMES.index(n.replace("relu", "conv")) if not n.startswith("pool")
                    else CONV_NAMES.index({"1": "conv1_2", "2": "conv2_2", "3": "conv3_4", "4": "conv4_4",
                                           "5": "conv5_4"}[n[4]]) for n in wanted)
        self.names = CONV_NAMES[:depth + 1]
        self.weight = {n: net.convs[n].weight.detach() for n in self.names}
        self.b = {n: net.convs[n].bias.detach().contiguous() for n in self.names}
        self._kernels: dict = {}   # oneDNN's channels-last kernels, made when first used (`_kernel`)
        self._bufs: dict = {}
        self._shape: Optional[tuple] = None
        # convolutions with many channels on large maps by Winograd's F(4x4, 3x3) (core.ops.winograd), where it
        # was measured faster (None: AVX2 CPUs)
        self.winograd = default_enabled() if winograd is None else bool(winograd)
        self._wino: dict = {}
        self._ws = Workspace()

    def _buf(self, key, shape, dtype=torch.float32) -> torch.Tensor:
        t = self._bufs.get(key)
        if t is None or tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            t = torch.empty(shape, dtype=dtype, memory_format=torch.channels_last)
            self._bufs[key] = t
        return t

    def _work(self, shape, avoid: tuple = ()) -> torch.Tensor:
        """A scratch buffer of `shape` that is none of `avoid`: the forward's maps that are only passed on (a ReLU's
        output that is not a feature, a pool's output) and the backward's gradients share them, since their
        lifetimes do not meet; one or two per shape."""
        shape = tuple(shape)
        taken = {t.data_ptr() for t in avoid if t is not None}
        pool = self._bufs.setdefault(("work", shape), [])
        for t in pool:
            if t.data_ptr() not in taken:
                return t
        t = torch.empty(shape, dtype=torch.float32, memory_format=torch.channels_last)
        pool.append(t)
        return t

    def run(self, h: torch.Tensor, loss_fn: Callable[[dict, dict], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """`h` `[N, 3, H, W]` float32 on CPU, already preprocessed (`VGG19.preprocess`). `loss_fn(features,
        sinks)` gets the feature maps (leaf tensors) and, per layer, a zeroed buffer of its shape and layout that
        the loss may add its gradient into directly (`grad_into` of `gram_matrix` / `content_loss`); gradients it
        returns through autograd are added too. Returns (loss, dloss/dh): the loss a detached scalar, the
        gradient a new tensor of h's shape."""
        if tuple(h.shape) != self._shape:
            self._bufs.clear()
            self._ws.clear()
            self._shape = tuple(h.shape)
        h = h.detach().contiguous(memory_format=torch.channels_last)
        feats, steps = self._forward(h)
        leaves = {n: f.detach().requires_grad_(True) for n, f in feats.items()}
        sinks = {n: self._buf(("sink", n), f.shape).zero_() for n, f in feats.items()}
        with torch.enable_grad():
            loss = loss_fn(leaves, sinks)
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        for n, g in zip(leaves, grads):
            if g is not None:
                sinks[n].add_(g)
        return loss.detach(), self._backward(h, steps, sinks)

    def _kernel(self, name: str, backward: bool) -> torch.Tensor:
        """Layer `name`'s kernel for oneDNN, channels-last; for the backward transposed (in <-> out) and flipped in
        space (dx = conv2d(dy, that, padding 1))."""
        k = self._kernels.get((name, backward))
        if k is None:
            w = self.weight[name]
            k = (w.transpose(0, 1).flip(2, 3) if backward else w).contiguous(memory_format=torch.channels_last)
            self._kernels[(name, backward)] = k
        return k

    def _convolve(self, name: str, out: torch.Tensor, x: torch.Tensor, padding: int, backward: bool = False,
                  accumulate: bool = False) -> None:
        """out = conv(x) (+ the bias, in the forward), or out += conv(x): layer `name`'s kernel, or in the backward
        its transposed, flipped kernel (the input gradient); by F(4x4, 3x3) where `winograd.worthwhile`, else
        oneDNN's direct convolution."""
        b = None if backward else self.b[name]
        c_out, c_in = self.weight[name].shape[:2]
        if backward:
            c_out, c_in = c_in, c_out
        if self.winograd and worthwhile(c_in, c_out, out.shape[2], out.shape[3]):
            key = (name, backward, padding)
            conv = self._wino.get(key)
            if conv is None:
                w = self.weight[name]
                conv = self._wino[key] = WinogradConv(w.transpose(0, 1).flip(2, 3) if backward else w, b, padding,
                                                      self._ws)
            conv(x, out, accumulate=accumulate)
            return
        w = self._kernel(name, backward)
        if accumulate:
            _POINTWISE.binary(out, x, w, b, [padding, padding], _STRIDE, _DIL, 1, "add", None, None, [], None)
        else:
            _conv_into(out, x, w, b, padding)

    def _forward(self, h: torch.Tensor):
        feats: dict[str, torch.Tensor] = {}
        # What the backward walks: ('conv', name, input, the input's layer name or None for h), ('relu', name,
        # pre-ReLU map), ('pool', name, a map of the pool input's shape, indices or None). Only the pre-ReLU maps
        # and the max-pool indices are read there (a ReLU's mask is pre > 0; a pool's backward takes its input for
        # the shape only, so it gets the pre-ReLU map of the same shape), so a map that is passed on and is not a
        # feature lives in a scratch buffer (`_work`).
        steps = []
        x, x_name = h, None
        n = h.shape[0]

        def done():
            return len(feats) == len(self.wanted)

        for name in self.names:
            pre = self._buf(("pre", name), (n, self.weight[name].shape[0], x.shape[2], x.shape[3]))
            if self.reflect:
                padded = self._work((n, x.shape[1], x.shape[2] + 2, x.shape[3] + 2), (x,))
                torch.ops.aten.reflection_pad2d.out(x, _REFLECT, out=padded)
                self._convolve(name, pre, padded, 0)
            else:
                self._convolve(name, pre, x, 1)
            steps.append(("conv", name, x, x_name))
            if name in self.wanted:
                feats[name] = pre
                if done():
                    break
            relu = name.replace("conv", "relu")
            if name in self.wanted:   # the pre-ReLU map is a feature: the ReLU writes elsewhere
                post = self._buf(("post", relu), pre.shape) if relu in self.wanted else self._work(pre.shape)
                torch.clamp_min(pre, 0, out=post)
            else:
                post = pre.relu_()
            steps.append(("relu", relu, pre))
            if relu in self.wanted:
                feats[relu] = post
                if done():
                    break
            x, x_name = post, relu
            if _block_end(name):
                pool = f"pool{name[4]}"
                ceil = self.reflect
                shape = (n, post.shape[1], (post.shape[2] + ceil) // 2, (post.shape[3] + ceil) // 2)
                out = self._buf(("pool", pool), shape) if pool in self.wanted else self._work(shape, (post,))
                if self.pooling == "max":
                    idx = self._buf(("idx", pool), shape, torch.int64)
                    torch.ops.aten.max_pool2d_with_indices.out(post, [2, 2], [2, 2], [0, 0], [1, 1], ceil,
                                                               out=out, indices=idx)
                else:
                    idx = None
                    torch.ops.aten.avg_pool2d.out(post, [2, 2], [2, 2], [0, 0], ceil, True, None, out=out)
                steps.append(("pool", pool, pre, idx))
                if pool in self.wanted:
                    feats[pool] = out
                    if done():
                        break
                x, x_name = out, pool
        return feats, steps

    def _backward(self, h: torch.Tensor, steps, sinks: dict) -> torch.Tensor:
        g: Optional[torch.Tensor] = None   # the loss's gradient w.r.t. the current step's output
        fused = set()                      # sinks a convolution's input gradient was written into

        for step in reversed(steps):
            kind, name = step[0], step[1]
            sink = sinks.get(name)
            if sink is not None and name not in fused:   # this layer's own loss gradient
                g = sink if g is None else sink.add_(g)
            if g is None:   # nothing past this point reaches a loss (cannot happen: the last step is a feature)
                continue
            if kind == "pool":
                _, _, like, idx = step
                gi = self._work(like.shape, (g,))
                if idx is not None:
                    torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
                        g, like, [2, 2], [2, 2], [0, 0], [1, 1], self.reflect, idx, grad_input=gi)
                else:
                    torch.ops.aten.avg_pool2d_backward.grad_input(
                        g, like, [2, 2], [2, 2], [0, 0], self.reflect, True, None, grad_input=gi)
                g = gi
            elif kind == "relu":
                torch.ops.aten.threshold_backward.grad_input(g, step[2], 0, grad_input=g)
            else:
                _, _, x, x_name = step
                if self.reflect:   # the padded image's gradient (a full convolution), folded back onto x
                    gp = self._work((h.shape[0], x.shape[1], x.shape[2] + 2, x.shape[3] + 2), (g,))
                    self._convolve(name, gp, g, 2, backward=True)
                    gi = torch.empty_like(h) if x is h else self._work(x.shape, (g, gp, x))
                    torch.ops.aten.reflection_pad2d_backward.grad_input(gp, x, _REFLECT, grad_input=gi)
                    if x_name in sinks:
                        gi = sinks[x_name].add_(gi)
                        fused.add(x_name)
                elif x is h:
                    gi = torch.empty_like(h)
                    self._convolve(name, gi, g, 1, backward=True)
                elif x_name in sinks:   # the input is a feature: its loss gradient + this one, in one pass
                    gi = sinks[x_name]
                    fused.add(x_name)
                    self._convolve(name, gi, g, 1, backward=True, accumulate=True)
                else:
                    gi = self._work(x.shape, (g,))
                    self._convolve(name, gi, g, 1, backward=True)
                g = gi
        return g


class VGGObjective(torch.autograd.Function):
    """loss = loss_fn(features of h) as an autograd node over `h`: the forward computes the loss and its gradient
    (`BufferedVGG.run`), the backward returns that gradient times the incoming one."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, runner: BufferedVGG,
                loss_fn: Callable[[dict, dict], torch.Tensor]) -> torch.Tensor:
        loss, grad = runner.run(h, loss_fn)
        ctx.save_for_backward(grad)
        return loss.to(h.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None


__all__ = ["BufferedVGG", "VGGObjective"]
