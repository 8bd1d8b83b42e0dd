"""FWA against MHSA on the LOLViT paper's tensor (Fig. 4): [128, 96, 32, 32], Transformer
structure repeated 1, 2 and 4 times, CPU, float32, inference.

Each variant is a stack of ``repeat`` pre-norm Transformer layers of width 96 with 4 heads and
an MLP of width 192, applied to the map serialised into 1,024 tokens:

* ``fwa``: LOLViT's Fast Window Attention with DReLu and the key-sequence cache (only the first
  layer computes FAWA(Token)), Fold 1, window 1 (32 keys);
* ``fwa_nocache``: the same without the cache (every layer computes its key sequence);
* ``fwa_softmax``: FWA with SoftMax instead of DReLu (cache on);
* ``mhsa``: multi-head self-attention over all 1,024 tokens (QKV projection, SoftMax).

Usage::

    python benchmarks/bench_fwa.py [--batch 128] [--repeats 1,2,4] [--rounds 5] [--threads 2]

Prints a markdown table: median (min-max) milliseconds per forward pass of the whole batch, and
MHSA's time over FWA's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

from lsnet.models.lolvit import FWALayer


class MHSALayer(nn.Module):
    """Pre-norm Transformer layer with standard multi-head self-attention."""

    def __init__(self, dim: int, mlp_dim: int, num_heads: int = 4):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.SiLU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor, grid_w: int = 0, cache=None):
        """Return the layer output (and ``None`` in place of a cache, like ``FWALayer``)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * self.head_dim ** -0.5).softmax(-1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x)), None


class Stack(nn.Module):
    """``repeat`` layers on the serialised map, passing the key-sequence cache when ``cache``."""

    def __init__(self, layers, cache: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.cache = cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)`` through the layers."""
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        cache = None
        for layer in self.layers:
            t, kv = layer(t, w, cache)
            cache = kv if self.cache else None
        return t.transpose(1, 2).reshape(b, c, h, w)


def build(kind: str, repeat: int, dim: int = 96, mlp_dim: int = 192) -> nn.Module:
    """One benchmarked variant (see the module docstring)."""
    if kind == "mhsa":
        return Stack([MHSALayer(dim, mlp_dim) for _ in range(repeat)], cache=False)
    cache = kind != "fwa_nocache"
    attn_fn = "softmax" if kind == "fwa_softmax" else "drelu"
    return Stack([FWALayer(dim, mlp_dim, 4, 1, 1, attn_fn, with_token=(i == 0 or not cache))
                  for i in range(repeat)], cache=cache)


def main() -> None:
    """Time every variant, interleaved round by round, and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--channels", type=int, default=96)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", default="1,2,4")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    kinds = ("fwa", "fwa_nocache", "fwa_softmax", "mhsa")
    repeats = [int(r) for r in args.repeats.split(",")]
    models = {(k, r): build(k, r, args.channels, 2 * args.channels).eval() for k in kinds for r in repeats}
    times = {key: [] for key in models}
    with torch.inference_mode():
        for m in models.values():  # warm-up
            m(x)
        for _ in range(args.rounds):
            for key, m in models.items():
                t0 = time.perf_counter()
                m(x)
                times[key].append((time.perf_counter() - t0) * 1e3)
    print(f"input [{args.batch}, {args.channels}, {args.size}, {args.size}], float32, {args.threads} threads, "
          f"{args.rounds} rounds; ms per forward pass of the batch, median (min-max)\n")
    print("| repeat | " + " | ".join(kinds) + " | MHSA / FWA |")
    print("|---:|" + "---:|" * (len(kinds) + 1))
    for r in repeats:
        med = {k: statistics.median(times[(k, r)]) for k in kinds}
        cells = [f"{med[k]:.1f} ({min(times[(k, r)]):.1f}-{max(times[(k, r)]):.1f})" for k in kinds]
        print(f"| {r} | " + " | ".join(cells) + f" | {med['mhsa'] / med['fwa']:.2f}x |")


if __name__ == "__main__":
    main()
