#!/usr/bin/env python3
"""The peer benchmark: one LoRA training step of HF transformers + PEFT on PyTorch, timed.

This file owns the measurement of "the tool people use today" (issue 5): a Llama-3-8B or
Llama-3.2-1B shaped model built from a config in code (no network, random init straight on the
GPU in bf16), sdpa attention, PEFT LoRA r=32 alpha=64 dropout 0 on q,k,v,o or all seven
projections, adapters in fp32 (PEFT's default) or cast to bf16, torch AdamW (fused where
available) on the LoRA parameters only, random token batches where only the last
--output-tokens positions carry loss. Each step is split by CUDA events into forward (including
the loss), backward and optimizer (step + zero_grad); after --warmup steps, --steps steps are
timed and the medians reported. One JSON line goes to stdout, a readable table to stderr.

  python3 benchmarks/peer/peer_bench.py --model 8b --targets qkvo --adapter-dtype bf16
  python3 benchmarks/peer/peer_bench.py --matrix --out peer.jsonl      # the standard matrix
  python3 benchmarks/peer/peer_bench.py --matrix --extra long-8k-ckpt --extra long-16k-ckpt \
      --out long.jsonl                                                    # 8B, batch 1, 8k/16k tokens

--gradient-checkpointing turns on transformers' gradient_checkpointing_enable() (non-reentrant
checkpoints per decoder layer: PEFT's frozen embeddings need no input grads then): the layers'
activations are recomputed in the backward, the memory-saving setting long sequences need.

--matrix runs each configuration in a fresh subprocess (memory peaks and allocator state never
mix) and writes one JSON line per configuration to --out (written to a temp file, renamed).
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGETS = {"qkvo": SEVEN[:4], "all": SEVEN}

# Shapes of the public checkpoints (config.json of meta-llama/Meta-Llama-3-8B and Llama-3.2-1B).
SHAPES = {
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
               rope_theta=500000.0, rope_scaling=None, max_position_embeddings=8192,
               rms_norm_eps=1e-5, tie_word_embeddings=False),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
               rope_theta=500000.0,
               rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
               max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True),
}

# The standard matrix (issue 5): the reference's Math10K timing shape, 8 x 512, last 128 tokens.
MATRIX = [
    ["--model", "8b", "--targets", "qkvo", "--adapter-dtype", "fp32"],
    ["--model", "8b", "--targets", "qkvo", "--adapter-dtype", "bf16"],
    ["--model", "8b", "--targets", "all", "--adapter-dtype", "bf16"],
    ["--model", "1b", "--targets", "all", "--adapter-dtype", "fp32"],
    ["--model", "1b", "--targets", "all", "--adapter-dtype", "bf16"],
]
MATRIX_EXTRA = {
    "8b-all-fp32": ["--model", "8b", "--targets", "all", "--adapter-dtype", "fp32"],
    # the strongest peer: ~2 min of compilation on top of the run
    "8b-qkvo-bf16-compile": ["--model", "8b", "--targets", "qkvo", "--adapter-dtype", "bf16",
                             "--compile"],
    # long sequences, one row, activation checkpointing on (the loss on the last 128 tokens, as
    # StepBenchmark's --seq runs); their --batch/--seq override the matrix's
    "long-8k-ckpt": ["--model", "8b", "--targets", "qkvo", "--adapter-dtype", "bf16",
                     "--gradient-checkpointing", "--batch", "1", "--seq", "8192"],
    "long-16k-ckpt": ["--model", "8b", "--targets", "qkvo", "--adapter-dtype", "bf16",
                      "--gradient-checkpointing", "--batch", "1", "--seq", "16384"],
    "long-8k": ["--model", "8b", "--targets", "qkvo", "--adapter-dtype", "bf16",
                "--batch", "1", "--seq", "8192"],
}


def log(msg=""):
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(SHAPES), default="8b")
    ap.add_argument("--targets", choices=sorted(TARGETS), default="qkvo")
    ap.add_argument("--adapter-dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--alpha", type=float, default=64.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--output-tokens", type=int, default=128,
                    help="only the last N positions of each row carry loss (labels -100 elsewhere)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="wrap the PEFT model in torch.compile")
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="model.gradient_checkpointing_enable() (non-reentrant), recompute in the backward")
    ap.add_argument("--peak-tflops", type=float, default=790.0,
                    help="bf16 dense GEMM peak used for MFU (measured on the H200: ~790)")
    ap.add_argument("--matrix", action="store_true",
                    help="run the standard configurations, each in a fresh subprocess")
    ap.add_argument("--extra", action="append", default=[], choices=sorted(MATRIX_EXTRA),
                    help="with --matrix: also run these configurations (repeatable)")
    ap.add_argument("--out", default="peer_bench.jsonl", help="with --matrix: JSON-lines file")
    ap.add_argument("--run-timeout", type=int, default=420,
                    help="with --matrix: seconds allowed per configuration")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.seq < 2:
        ap.error(f"--batch {args.batch} / --seq {args.seq}: need batch >= 1 and seq >= 2")
    if not 1 <= args.output_tokens <= args.seq - 1:
        ap.error(f"--output-tokens {args.output_tokens} must be in 1..{args.seq - 1}")
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    return args


# ----------------------------------------------------------------------------------------------
# model

def build_config(model_key, seq=0):
    from transformers import LlamaConfig
    import inspect
    shape = dict(SHAPES[model_key])
    # RoPE positions up to the run's length (16k rows on the 8B shape, whose checkpoint says 8192)
    shape["max_position_embeddings"] = max(shape["max_position_embeddings"], seq)
    theta, scaling = shape.pop("rope_theta"), shape.pop("rope_scaling")
    # transformers 5 takes rope settings as `rope_parameters`, 4.x as rope_theta/rope_scaling
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:
        rp = dict(scaling or {"rope_type": "default"}, rope_theta=theta)
        shape["rope_parameters"] = rp
    else:
        shape["rope_theta"], shape["rope_scaling"] = theta, scaling
    cfg = LlamaConfig(head_dim=shape["hidden_size"] // shape["num_attention_heads"],
                      attention_bias=False, mlp_bias=False, use_cache=False,
                      attn_implementation="sdpa", **shape)
    return cfg


def build_model(args, torch):
    """Random init directly on the GPU in bf16 (the 8B build takes seconds, not minutes)."""
    from transformers import LlamaForCausalLM
    cfg = build_config(args.model, args.seq)
    model = None
    with torch.device("cuda"):
        for key in ("dtype", "torch_dtype"):  # renamed in transformers 5
            try:
                model = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                                      **{key: torch.bfloat16})
                break
            except TypeError:
                continue
        if model is None:
            prev = torch.get_default_dtype()
            torch.set_default_dtype(torch.bfloat16)
            try:
                model = LlamaForCausalLM(cfg)
            finally:
                torch.set_default_dtype(prev)
    model.to(device="cuda", dtype=torch.bfloat16)
    model.config.use_cache = False
    # random, never zero or uninitialised: zeros make GEMMs run faster than real weights do
    w = model.model.layers[0].mlp.down_proj.weight.detach()
    std = float(w.float().std())
    if not 1e-4 < std < 1.0 or not bool(torch.isfinite(w).all()):
        raise SystemExit(f"peer_bench: base weights look uninitialised (std {std})")
    model.init_std_check = std
    attn = getattr(model.config, "_attn_implementation", None)
    if attn != "sdpa":
        raise SystemExit(f"peer_bench: model attention is {attn!r}, expected 'sdpa'")
    return model


def add_lora(model, args, torch):
    from peft import LoraConfig, get_peft_model
    lcfg = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0,
                      target_modules=TARGETS[args.targets], bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, lcfg)
    gen = torch.Generator(device="cuda").manual_seed(args.seed + 1)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if not p.requires_grad:
                continue
            if "lora_" not in name:
                raise SystemExit(f"peer_bench: unexpected trainable parameter {name}")
            if "lora_B" in name:
                # PEFT zeroes B; random values keep every GEMM on non-zero data (zeros run faster)
                p.copy_(torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) * 1e-3)
            if args.adapter_dtype == "bf16":
                p.data = p.data.to(torch.bfloat16)
    if args.gradient_checkpointing:
        # non-reentrant checkpoints need no requires_grad on the (frozen) embedding output
        pm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not getattr(pm.base_model.model, "is_gradient_checkpointing", True):
            raise SystemExit("peer_bench: gradient checkpointing did not turn on")
    pm.train()
    return pm


def make_optimizer(params, args, torch):
    try:
        return torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, fused=True), "fused"
    except (TypeError, RuntimeError):
        return torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, foreach=True), "foreach"


def flops_per_step(cfg, args, lora_params):
    """Model FLOPs of one training step (multiply-add = 2 FLOPs), as used for MFU:
    frozen linears forward + input-gradient backward (4·P·tokens; no weight gradient), LoRA
    forward + both backward GEMMs (6·P_lora·tokens), lm_head forward + input-gradient (4·H·V·tokens),
    causal attention scores and values forward (2·2·T²·H/2 per row and layer) and backward (×2)."""
    h, i, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    frozen = L * (h * h + 2 * h * kv + h * h + 3 * h * i)
    tokens = args.batch * args.seq
    attn_fwd = L * args.batch * 2 * 2 * args.seq * args.seq * h / 2
    return (4 * frozen * tokens + 6 * lora_params * tokens
            + 4 * h * cfg.vocab_size * tokens + 3 * attn_fwd)


# ----------------------------------------------------------------------------------------------
# one configuration

def run_one(args):
    import torch
    import transformers
    import peft
    if not torch.cuda.is_available():
        raise SystemExit("peer_bench: no CUDA device visible to torch")
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True  # what a user's training script gets by default
    dev = torch.device("cuda")

    t0 = time.perf_counter()
    model = build_model(args, torch)
    pm = add_lora(model, args, torch)
    params = [p for p in pm.parameters() if p.requires_grad]
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in params})
    n_lora = sum(p.numel() for p in params)
    opt, opt_kind = make_optimizer(params, args, torch)
    step_model = torch.compile(pm) if args.compile else pm
    torch.cuda.synchronize()
    init_s = time.perf_counter() - t0

    vocab = model.config.vocab_size
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    input_ids = torch.randint(0, vocab, (args.batch, args.seq), generator=gen, device=dev)
    labels = input_ids.clone()
    labels[:, : args.seq - args.output_tokens] = -100

    torch.cuda.reset_peak_memory_stats()
    n = args.warmup + args.steps
    ev = [[torch.cuda.Event(enable_timing=True) for _ in range(4)] for _ in range(n)]
    fwd, bwd, optm, total, wall, losses = [], [], [], [], [], []
    t_warm = time.perf_counter()
    for s in range(n):
        e = ev[s]
        w0 = time.perf_counter()
        e[0].record()
        loss = step_model(input_ids=input_ids, labels=labels).loss
        e[1].record()
        loss.backward()
        e[2].record()
        opt.step()
        opt.zero_grad(set_to_none=True)
        e[3].record()
        e[3].synchronize()  # a real loop reads the loss every step; it also bounds queueing
        wall.append((time.perf_counter() - w0) * 1e3)
        losses.append(float(loss.detach()))
        if s == args.warmup - 1:
            t_warm = time.perf_counter() - t_warm
        if s >= args.warmup:
            fwd.append(e[0].elapsed_time(e[1]))
            bwd.append(e[1].elapsed_time(e[2]))
            optm.append(e[2].elapsed_time(e[3]))
            total.append(e[0].elapsed_time(e[3]))
    if args.warmup == 0:
        t_warm = 0.0
    peak = torch.cuda.max_memory_allocated()
    reserved = torch.cuda.max_memory_reserved()
    if not all(map(lambda x: x == x and abs(x) != float("inf"), losses)):
        raise SystemExit(f"peer_bench: non-finite loss seen: {losses}")

    med = statistics.median(total)
    tokens = args.batch * args.seq
    flops = flops_per_step(model.config, args, n_lora)
    srt = sorted(total)
    result = {
        "name": f"peer-{args.model}-{args.targets}-{args.adapter_dtype}"
                + ("-compile" if args.compile else "") + ("-ckpt" if args.gradient_checkpointing else "")
                + (f"-{args.batch}x{args.seq}" if (args.batch, args.seq) != (8, 512) else ""),
        "gradient_checkpointing": args.gradient_checkpointing,
        "model": args.model, "targets": args.targets, "adapter_dtype": args.adapter_dtype,
        "adapter_param_dtypes": dtypes, "compile": args.compile,
        "rank": args.rank, "alpha": args.alpha, "batch": args.batch, "seq": args.seq,
        "output_tokens": args.output_tokens, "warmup": args.warmup, "steps": args.steps,
        "lora_params": n_lora, "base_weight_std": round(model.init_std_check, 5), "optimizer": f"torch.optim.AdamW ({opt_kind})",
        "ms_step_median": round(med, 3),
        "ms_forward_median": round(statistics.median(fwd), 3),
        "ms_backward_median": round(statistics.median(bwd), 3),
        "ms_optimizer_median": round(statistics.median(optm), 3),
        "ms_step_min": round(srt[0], 3), "ms_step_max": round(srt[-1], 3),
        "ms_step_p10": round(srt[len(srt) // 10], 3),
        "ms_step_p90": round(srt[min(len(srt) - 1, (len(srt) * 9) // 10)], 3),
        "ms_wall_median": round(statistics.median(wall[args.warmup:]), 3),
        "tokens_per_s": round(tokens / (med / 1e3), 1),
        "output_tokens_per_s": round(args.batch * args.output_tokens / (med / 1e3), 1),
        "peak_mem_bytes": peak, "peak_mem_gib": round(peak / 2 ** 30, 2),
        "peak_reserved_gib": round(reserved / 2 ** 30, 2),
        "model_tflop_per_step": round(flops / 1e12, 3),
        "mfu": round(flops / (med / 1e3) / (args.peak_tflops * 1e12), 4),
        "peak_tflops_assumed": args.peak_tflops,
        "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
        "init_s": round(init_s, 1), "warmup_s": round(t_warm, 1),
        "device": torch.cuda.get_device_name(0),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "cuda": torch.version.cuda},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    print_table([result])
    print(json.dumps(result), flush=True)
    return result


def print_table(results):
    hdr = (f"{'config':<28} {'step ms':>9} {'fwd':>8} {'bwd':>8} {'opt':>7} {'tok/s':>9} "
           f"{'peak GiB':>9} {'MFU':>6}")
    log(hdr)
    log("-" * len(hdr))
    for r in results:
        if "error" in r:
            log(f"{r['name']:<28} ERROR: {r['error']}")
            continue
        log(f"{r['name']:<28} {r['ms_step_median']:>9.1f} {r['ms_forward_median']:>8.1f} "
            f"{r['ms_backward_median']:>8.1f} {r['ms_optimizer_median']:>7.1f} "
            f"{r['tokens_per_s']:>9.0f} {r['peak_mem_gib']:>9.2f} {r['mfu']:>6.3f}")


# ----------------------------------------------------------------------------------------------
# matrix

def passthrough(args):
    """Flags of the parent that apply to every child run."""
    out = ["--batch", str(args.batch), "--seq", str(args.seq),
           "--output-tokens", str(args.output_tokens), "--warmup", str(args.warmup),
           "--steps", str(args.steps), "--rank", str(args.rank), "--alpha", str(args.alpha),
           "--lr", str(args.lr), "--seed", str(args.seed), "--peak-tflops", str(args.peak_tflops)]
    return out


def run_matrix(args):
    configs = list(MATRIX) + [MATRIX_EXTRA[k] for k in args.extra]
    out_path = os.path.abspath(args.out)
    tmp_path = out_path + ".partial"
    results = []
    t_all = time.perf_counter()
    with open(tmp_path, "w", encoding="utf-8") as f:
        for cfg in configs:
            # the configuration's own flags last: a long-sequence row's --batch/--seq win
            cmd = [sys.executable, os.path.abspath(__file__)] + passthrough(args) + cfg
            name = "peer-" + "-".join(cfg[i + 1] for i in range(0, 6, 2)) + (
                "-compile" if "--compile" in cfg else "") + (
                "-ckpt" if "--gradient-checkpointing" in cfg else "") + (
                "-" + cfg[cfg.index("--seq") + 1] if "--seq" in cfg else "")
            log(f"\n=== {name}: {' '.join(cmd[1:])}")
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True,
                                      timeout=args.run_timeout)
                lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
                if proc.returncode == 0 and lines:
                    res = json.loads(lines[-1])
                else:
                    res = {"name": name, "error": f"exit status {proc.returncode}",
                           "stdout_tail": proc.stdout[-2000:]}
            except subprocess.TimeoutExpired:
                res = {"name": name, "error": f"timed out after {args.run_timeout} s"}
            res["run_s"] = round(time.perf_counter() - t0, 1)
            results.append(res)
            f.write(json.dumps(res) + "\n")
            f.flush()  # a killed matrix still leaves the finished runs in the .partial file
    os.replace(tmp_path, out_path)
    log(f"\n=== peer matrix, {len(results)} configurations, "
        f"{time.perf_counter() - t_all:.0f} s, written to {out_path}")
    print_table(results)
    return 0 if all("error" not in r for r in results) else 1


def main():
    args = parse_args()
    if args.matrix:
        sys.exit(run_matrix(args))
    run_one(args)


if __name__ == "__main__":
    main()
