#!/usr/bin/env python3
"""The peer of full-parameter training: one step of HF transformers on PyTorch, every weight trained.

Mixed precision as PyTorch users run it: an fp32 model (fp32 master weights and fp32 AdamW state)
under torch.autocast(bfloat16) — the matmuls in bf16 —, torch.optim.AdamW(fused=True), sdpa
attention, random token batches where every position carries loss (pretraining). The model is
built from a config in code (no network), random init on the GPU. After --warmup steps, --steps
steps are timed (CUDA events, one sync per step) and the median reported with peak memory, tokens/s
and MFU (6·N·tokens + attention FLOPs against --peak-tflops). --compile wraps the model in
torch.compile. One JSON line per run to stdout (and appended to --out), a readable line to stderr.

  python3 benchmarks/peer/full_peer_bench.py --model 1b --batch 8 --seq 512
  python3 benchmarks/peer/full_peer_bench.py --model small-8m --batch 4 --seq 4096 [--compile]
"""

import argparse
import json
import statistics
import sys

# Llama-3.2-1B (config.json of the public checkpoint) and the engine's pretraining presets
# (RandomWeights.preset: tied head; vocabulary as given).
SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
               rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
               max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True),
}


def preset_shape(name, vocab, max_pos):
    # mirrors engine RandomWeights.preset (hidden, intermediate, layers, heads, kv heads)
    table = {"tiny-1m": (128, 512, 4, 4, 4), "small-8m": (256, 1024, 8, 4, 4), "base-30m": (512, 1792, 8, 8, 8)}
    if name not in table:
        raise SystemExit(f"unknown model {name}")
    h, i, l, a, kv = table[name]
    return dict(hidden_size=h, intermediate_size=i, num_hidden_layers=l, num_attention_heads=a, num_key_value_heads=kv,
                vocab_size=vocab, rope_theta=10000.0, rope_scaling=None, max_position_embeddings=max_pos,
                rms_norm_eps=1e-5, tie_word_embeddings=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="1b")
    ap.add_argument("--vocab", type=int, default=512, help="vocabulary of a preset model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=790.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = SHAPES.get(args.model) or preset_shape(args.model, args.vocab, max(args.seq, 2048))
    cfg = LlamaConfig(**shape, attn_implementation="sdpa", use_cache=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).float()
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, fused=True)
    fwd = torch.compile(model) if args.compile else model
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    ms = statistics.median(times)
    tokens = args.batch * args.seq
    L, H = cfg.num_hidden_layers, cfg.hidden_size
    flops = 6 * n_params * tokens + 6 * 2 * L * args.batch * args.seq * args.seq * H  # causal attention ~ half of 12·L·T²·H
    row = dict(peer="transformers-full", model=args.model, params=n_params, batch=args.batch, seq=args.seq,
               compile=args.compile, ms=ms, tokens_per_s=tokens / (ms / 1000), mfu=flops / (ms / 1000) / (args.peak_tflops * 1e12),
               peak_gib=torch.cuda.max_memory_allocated() / 2**30, precision="fp32 master + bf16 autocast, fused AdamW",
               gpu=torch.cuda.get_device_name(0), torch=torch.__version__)
    print(json.dumps(row))
    print(f"{args.model:>9} B{args.batch}×{args.seq} compile={args.compile}: {ms:.1f} ms/step, "
          f"{row['tokens_per_s']:.0f} tok/s, MFU {100 * row['mfu']:.1f}%, peak {row['peak_gib']:.2f} GiB", file=sys.stderr)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
