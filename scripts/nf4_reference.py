#!/usr/bin/env python3
"""NF4 (4-bit NormalFloat, QLoRA) reference values for the engine's tests, from the paper's definition.

The code: 16 values built from quantiles of N(0, 1) so that each bin of a normally distributed
weight block is equally likely, asymmetric so that 0 is represented exactly — 8 positive values
from Q((i)) over 9 evenly spaced probabilities in [0.5, offset], 7 negative ones over 8 in
[0.5, offset], and 0, normalised into [-1, 1] (Dettmers et al., 2023, §3 and appendix E; the
offset 0.9677083 is the one the authors' bitsandbytes uses). Quantization is blockwise:
blocks of 64 consecutive elements (row-major), each scaled by its absmax, each element mapped to
the nearest code value (the lower index on a tie); dequantization is code[i] · absmax.
Double quantization (the absmax constants quantized again): the absmax values minus their mean,
in blocks of 256, each scaled by its own absmax to signed 8-bit integers (round half to even),
dequantized as q · scale / 127 + mean. (The paper stores them as 8-bit floats; this is the
8-bit linear variant, what the engine implements.)

Writes a JSON fixture (stdout or --out) with the code table, seeded inputs and the expected
indices, absmax and dequantized values. numpy + the standard library only.
"""

import argparse
import json
from statistics import NormalDist

import numpy as np

BLOCK = 64
BLOCK2 = 256
OFFSET = 0.9677083


def nf4_code():
    q = NormalDist().inv_cdf
    pos = [q(p) for p in np.linspace(OFFSET, 0.5, 9)[:-1]]
    neg = [-q(p) for p in np.linspace(OFFSET, 0.5, 8)[:-1]]
    v = np.array(sorted(pos + [0.0] + neg), dtype=np.float64)
    return (v / np.abs(v).max()).astype(np.float32)


def quantize(x, code):
    x = np.asarray(x, dtype=np.float32).ravel()
    n = x.size
    nb = (n + BLOCK - 1) // BLOCK
    absmax = np.zeros(nb, dtype=np.float32)
    idx = np.zeros(n, dtype=np.int64)
    for b in range(nb):
        blk = x[b * BLOCK:(b + 1) * BLOCK]
        a = np.float32(np.abs(blk).max())
        absmax[b] = a
        scaled = blk / a if a > 0 else np.zeros_like(blk)
        # nearest code value; argmin takes the first (lower) index on a tie
        idx[b * BLOCK:(b + 1) * BLOCK] = np.argmin(np.abs(scaled[:, None].astype(np.float32) - code[None, :]), axis=1)
    return idx, absmax


def dequantize(idx, absmax, code):
    out = np.empty(idx.size, dtype=np.float32)
    for i in range(idx.size):
        out[i] = np.float32(code[idx[i]]) * absmax[i // BLOCK]
    return out


def double_quantize(absmax):
    mean = np.float32(absmax.astype(np.float64).mean())   # summed in double, rounded once
    c = (absmax - mean).astype(np.float32)
    nb = (c.size + BLOCK2 - 1) // BLOCK2
    scales = np.zeros(nb, dtype=np.float32)
    q = np.zeros(c.size, dtype=np.int64)
    for b in range(nb):
        blk = c[b * BLOCK2:(b + 1) * BLOCK2]
        s = np.float32(np.abs(blk).max())
        scales[b] = s
        if s > 0:
            q[b * BLOCK2:(b + 1) * BLOCK2] = np.clip(np.rint(blk / s * np.float32(127)), -127, 127)
    deq = np.array([np.float32(q[i]) * scales[i // BLOCK2] / np.float32(127) + mean for i in range(c.size)], dtype=np.float32)
    return q, scales, mean, deq


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the fixture here (default: stdout)")
    args = ap.parse_args()
    code = nf4_code()
    rng = np.random.default_rng(16)
    # a (5, 100) weight: blocks cross row boundaries and the last block is partial; one block of zeros; outliers
    w = (rng.standard_normal((5, 100)) * 0.02).astype(np.float32)
    w[2, 28:92] = 0.0
    w[4, 3] = 0.5
    w[0, 7] = -0.3
    idx, absmax = quantize(w, code)
    deq = dequantize(idx, absmax, code)
    # double quantization over many blocks (two 256-blocks, the second partial)
    big = (rng.standard_normal(300 * BLOCK) * np.exp(rng.standard_normal(300 * BLOCK) * 0.3)).astype(np.float32) * 0.02
    bidx, babs = quantize(big, code)
    q2, scales2, mean2, babs_dq = double_quantize(babs)
    fixture = {
        "block": BLOCK, "block2": BLOCK2, "offset": OFFSET,
        "code": [float(v) for v in code],
        "weight_shape": list(w.shape), "weight": [float(v) for v in w.ravel()],
        "indices": [int(v) for v in idx], "absmax": [float(v) for v in absmax],
        "dequantized": [float(v) for v in deq],
        "dq_absmax": [float(v) for v in babs], "dq_codes": [int(v) for v in q2],
        "dq_scales": [float(v) for v in scales2], "dq_mean": float(mean2),
        "dq_absmax_dequantized": [float(v) for v in babs_dq],
    }
    text = json.dumps(fixture)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
