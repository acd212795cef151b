"""3×3, stride-1 convolutions with fixed weights by Winograd's minimal filtering F(4×4, 3×3) (Lavin & Gray, "Fast
Algorithms for Convolutional Neural Networks", CVPR 2016), in plain PyTorch on channels-last maps, written into
given tensors (Neural Style's buffered VGG-19 on the CPU uses it for its layers with many channels).

Per 4×4 output tile and output channel: y = Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A, d_c the 6×6 input tile of channel c,
g_c the 3×3 kernel. Summed over the input channels, the element-wise product is, for each of the 36 tile positions,
one matrix product [tiles × C_in] · [C_in × C_out] (`torch.bmm`): 36 multiply-adds per 16 outputs where the direct
convolution needs 144, i.e. 4× less arithmetic in the part that grows with C_in · C_out. The transforms are products
with the small constant matrices Bᵀ (6 × 6, on the gathered 6×6 tiles, one axis at a time) and Aᵀ (4 × 6), whose
cost grows with C_in + C_out only, so the method pays for layers with many channels: measured on a 2-core AVX2
EPYC against oneDNN's direct convolution, 64 → 128 channels at 128² 1.4×, 128 → 128 at 128² 1.6×, 256 → 256 at 64²
2.1×, 512 → 512 at 32² 2.5×, 64 → 64 at 256² about even (see `worthwhile`).

Exactness: F(4×4, 3×3) rounds differently from a direct convolution; in float32 the two differ by ~1e-5 of the
output's largest magnitude (the transform constants reach 25; measured 6e-6 – 1.3e-5 on random maps and weights).
The kernel transform G g Gᵀ is computed in float64.

`WinogradConv(weight, bias, padding)(x, out, accumulate=False)`: out = conv2d(x, weight, bias, padding) (or out +=
it), any padding 0–2 (zeros), any map size (the last tiles are cropped), batches one image at a time. Scratch
buffers come from a `Workspace` that several convolutions may share (one runs at a time); the output is made in
bands of tile rows of about `Workspace.chunk_bytes` of scratch each (4 MB: they stay in the caches between the
steps; measured faster than 1, 8 or 32 MB bands), so the scratch memory does not grow with the map's height.
"""

from __future__ import annotations

from typing import Optional

import torch

# F(4×4, 3×3): input transform Bᵀ (6×6), kernel transform G (6×3), output transform Aᵀ (4×6)
_BT = [[4, 0, -5, 0, 1, 0],
       [0, -4, -4, 1, 1, 0],
       [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0],
       [0, 2, -1, -2, 1, 0],
       [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0],
      [-1 / 6, -1 / 6, -1 / 6],
      [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6],
      [1 / 24, -1 / 12, 1 / 6],
      [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0],
       [0, 1, -1, 2, -2, 0],
       [0, 1, 1, 4, 4, 0],
       [0, 1, -1, 8, -8, 1]]

MIN_CHANNELS = 64
MIN_WIDEST = 128
"""`worthwhile`: both channel counts at least MIN_CHANNELS and one at least MIN_WIDEST. Measured against oneDNN's
direct convolution on a 2-core AVX2 EPYC (ms, 4 MB bands): 64 → 128 at 128² 9.0–9.4 vs 13.1–13.3, 128 → 64 10.1–10.7
vs 13.3, 128 → 128 at 128² 16.2–17.2 vs 25.8–26.1, 256 → 256 at 64² 12.2 vs 25.7–29.1, 512 → 512 at 32² 10.8–10.9
vs 26.9–27.5, 128 → 128 at 256² 65.6 vs 103; 64 → 64 at 256² only 23.8–25.1 vs 25.8–26.0 (left to oneDNN)."""
MIN_BAND_TILES = 256
"""The fewest tiles in a band (the rows of its 36 matrix products), unless the map has fewer."""
MIN_PIXELS = 32 * 32
"""`worthwhile`: output maps of at least this many pixels (below it the transforms' fixed costs dominate, and the
direct convolution is fast anyway)."""


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """[C_out, C_in, 3, 3] → U [36, C_in, C_out] = G g Gᵀ per (input, output) channel, computed in float64."""
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"Winograd F(4x4, 3x3) takes 3x3 kernels [C_out, C_in, 3, 3], got {list(weight.shape)}")
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    u = torch.einsum("ia,ocab,jb->ijco", g, weight.detach().double(), g)
    return u.reshape(36, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def worthwhile(c_in: int, c_out: int, out_h: int, out_w: int) -> bool:
    """Whether F(4×4, 3×3) is expected to beat oneDNN's direct convolution on an AVX2 CPU (see MIN_CHANNELS,
    MIN_WIDEST, MIN_PIXELS)."""
    return min(c_in, c_out) >= MIN_CHANNELS and max(c_in, c_out) >= MIN_WIDEST and out_h * out_w >= MIN_PIXELS


def default_enabled() -> bool:
    """Whether to use F(4×4, 3×3) where `worthwhile` by default: on CPUs whose widest vector unit ATen uses is AVX2,
    where it was measured. With AVX-512, oneDNN's direct convolution has twice the throughput per core, and nobody
    measured there: the direct convolution is kept (pass winograd=True to try)."""
    try:
        return torch.backends.cpu.get_cpu_capability() == "AVX2"
    except (AttributeError, RuntimeError):
        return False


class Workspace:
    """Flat scratch buffers shared by the convolutions of one network (one runs at a time), each grown to the largest
    request and kept."""

    def __init__(self, chunk_bytes: int = 4 * 2 ** 20):
        self.chunk_bytes = int(chunk_bytes)
        self._flat: dict[str, torch.Tensor] = {}

    def flat(self, role: str, numel: int, like: torch.Tensor) -> torch.Tensor:
        t = self._flat.get(role)
        if t is None or t.numel() < numel or t.dtype != like.dtype or t.device != like.device:
            t = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._flat[role] = t
        return t[:numel]

    def clear(self) -> None:
        self._flat.clear()


class WinogradConv:
    """out = conv2d(x, weight, bias, padding) (stride 1, 3×3 kernel, zero padding 0–2) by F(4×4, 3×3), for maps
    `[N, C_in, H, W]` written into `out` `[N, C_out, H + 2·padding − 2, W + 2·padding − 2]` (channels-last float
    tensors: read and written as [H, W, C] matrices without a copy; other layouts work, slower). The output is made
    in bands of tile rows, each from its own zero-padded copy of the input rows it needs, so each scratch buffer
    holds about the workspace's `chunk_bytes` (at least MIN_BAND_TILES tiles, and one row of tiles), not the map."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, padding: int = 1,
                 workspace: Optional[Workspace] = None):
        if padding not in (0, 1, 2):
            raise ValueError(f"padding must be 0, 1 or 2 for a 3x3 kernel, got {padding}")
        self.u = transform_weight(weight)
        self.c_out, self.c_in = int(weight.shape[0]), int(weight.shape[1])
        self.bias = None if bias is None else bias.detach().to(weight.dtype).contiguous()
        self.padding = padding
        self.bt = torch.tensor(_BT, dtype=weight.dtype, device=weight.device)
        self.at = torch.tensor(_AT, dtype=weight.dtype, device=weight.device)
        self.ws = workspace if workspace is not None else Workspace()

    def __call__(self, x: torch.Tensor, out: torch.Tensor, accumulate: bool = False) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.padding
        ho, wo = h + 2 * p - 2, w + 2 * p - 2
        if c != self.c_in or tuple(out.shape) != (n, self.c_out, ho, wo):
            raise ValueError(f"WinogradConv({self.c_in} -> {self.c_out}, padding {p}): input {list(x.shape)} "
                             f"needs an output [{n}, {self.c_out}, {ho}, {wo}], got {list(out.shape)}")
        if ho < 1 or wo < 1:
            raise ValueError(f"an input of {h}x{w} with padding {p} has no 3x3 output")
        th, tw = -(-ho // 4), -(-wo // 4)
        # bands of tile rows: scratch buffers of about `chunk_bytes` (they stay in the caches between the steps),
        # yet at least MIN_BAND_TILES tiles (the products' efficiency), all bands about the same size
        rows = max(-(-MIN_BAND_TILES // tw), self.ws.chunk_bytes // (36 * tw * max(c, self.c_out) * x.element_size()))
        bands = -(-th // rows)
        rows = -(-th // bands)
        for i in range(n):
            src, dst = x[i].permute(1, 2, 0), out[i].permute(1, 2, 0)   # [h, w, C_in], [ho, wo, C_out]
            tiled = dst.view(th, 4, tw, 4, self.c_out) \
                if ho % 4 == 0 and wo % 4 == 0 and dst.is_contiguous() else None
            for r0 in range(0, th, rows):
                self._band(src, dst, tiled, r0, min(th, r0 + rows), tw, accumulate)
        return out

    def _band(self, src: torch.Tensor, dst: torch.Tensor, tiled: Optional[torch.Tensor], r0: int, r1: int, tw: int,
              accumulate: bool) -> None:
        """Output tile rows r0 … r1 − 1: gather the 6×6 tiles, transform, multiply, transform back, write."""
        c, co, p, rows = self.c_in, self.c_out, self.padding, r1 - r0
        h, w = src.shape[:2]
        # the band's zero-padded input: padded rows 4·r0 … 4·r1 + 1 are input rows y0 … y1 − 1
        xb = self.ws.flat("x", (4 * rows + 2) * (4 * tw + 2) * c, src).view(4 * rows + 2, 4 * tw + 2, c)
        y0, y1 = 4 * r0 - p, 4 * r1 + 2 - p
        lo, hi = max(y0, 0), min(y1, h)
        xb[:lo - y0].zero_()
        xb[hi - y0:].zero_()
        xb[lo - y0:hi - y0, :p].zero_()
        xb[lo - y0:hi - y0, p + w:].zero_()
        xb[lo - y0:hi - y0, p:p + w].copy_(src[lo:hi])
        s_h, s_w, s_c = xb.stride()
        tiles = xb.as_strided((6, 6, rows, tw, c), (s_h, s_w, 4 * s_h, 4 * s_w, s_c), xb.storage_offset())
        count = rows * tw
        d = self.ws.flat("d", 36 * count * c, xb)
        d.view(6, 6, rows, tw, c).copy_(tiles)
        # Bᵀ d B, one axis of the tile at a time (two products with the 6 × 6 Bᵀ: 12 multiply-adds per value where
        # Bᵀ ⊗ Bᵀ takes 36; measured 10–25 % faster)
        n_in = count * c
        half = self.ws.flat("t", 6 * 6 * max(n_in, count * co), xb)
        torch.mm(self.bt, d.view(6, 6 * n_in), out=half[:36 * n_in].view(6, 6 * n_in))
        v = self.ws.flat("v", 36 * n_in, xb)
        torch.matmul(self.bt, half[:36 * n_in].view(6, 6, n_in), out=v.view(6, 6, n_in))
        m = self.ws.flat("m", 36 * count * co, xb)
        torch.bmm(v.view(36, count, c), self.u, out=m.view(36, count, co))
        # Aᵀ m A likewise
        n_out = count * co
        torch.mm(self.at, m.view(6, 6 * n_out), out=half[:24 * n_out].view(4, 6 * n_out))
        y = self.ws.flat("y", 16 * n_out, xb)
        torch.matmul(self.at, half[:24 * n_out].view(4, 6, n_out), out=y.view(4, 4, n_out))
        band = y.view(4, 4, rows, tw, co).permute(2, 0, 3, 1, 4)   # [rows, 4, tw, 4, C_out]
        if tiled is None:   # the tiles overhang the output (or it is not channels-last): through a band buffer
            full = self.ws.flat("band", 16 * rows * tw * co, src).view(rows, 4, tw, 4, co)
            torch.add(band, self.bias, out=full) if self.bias is not None else full.copy_(band)
            ho, wo = dst.shape[:2]
            region = full.view(4 * rows, 4 * tw, co)[:min(4 * r1, ho) - 4 * r0, :wo]
            target = dst[4 * r0:min(4 * r1, ho)]
            target.add_(region) if accumulate else target.copy_(region)
            return
        target = tiled[r0:r1]
        if accumulate:
            target.add_(band)
            if self.bias is not None:
                target.add_(self.bias)
        elif self.bias is not None:
            torch.add(band, self.bias, out=target)
        else:
            target.copy_(band)


__all__ = ["WinogradConv", "Workspace", "default_enabled", "transform_weight", "worthwhile", "MIN_CHANNELS",
           "MIN_WIDEST", "MIN_PIXELS"]
