#!/usr/bin/env bash
# Issue 6 in one device run: data-parallel SparseLoRA on 1, 2 and (when nvidia-smi lists >= 4 GPUs)
# 4 GPUs of one host, one process, one Stepper per GPU, gradients summed by the GradientAggregator
# round through the in-process device exchange (peer copies + adds in worker order on GPU 0, the sum
# copied back to every GPU; no NCCL). Staged by benchmarks/gpu/stage-scaling.sh into .devrun/scaling
# (which holds a copy of this script): run `bash .devrun/scaling/scaling-check.sh` from the checkout
# root with .devrun/jre25.tar.xz beside it.
#
# Each run: `sparselora train` on a job file — model random:llama3-8b (bf16, drawn on each GPU),
# data {synthetic: {batch: 8, seq: 512, output_tokens: 128}} per GPU (the Math10K timing shape),
# LoRA r=32 alpha=64 on q,k,v,o, sparsity llama3-8b-math10k, STEPS (25) steps, device cuda:0,…,N-1.
# Table (stdout, $OUT/scaling-table.md, $OUT/scaling.json): per GPU count the median ms/step and
# tokens/s over the sparse steps after the first WARMUP (5) steps, scaling efficiency
# tokens/s(N) / (N · tokens/s(1)), median agg_ms and mean agg_overlap from metrics.jsonl, and the
# largest |difference| between any worker's final LoRA weights and worker 0's (replicas.json).
# PASS/FAIL per goal: efficiency >= 0.90 at 2 and 4 GPUs; replicas identical (max |diff| = 0).
# The exit status is the number of FAILs.
#
# DEVICE=cpu is the dry run (everything but the GPUs): tiny random model (tiny-config.json),
# tiny-sparsity.yaml, batch 2 × 64 with 16 output tokens, 8 steps, 1/2/4 CPU workers (COUNTS).
# Knobs: DEVICE (cuda), OUT ($PWD/out), JAVA (default: the JRE unpacked from .devrun/jre25.tar.xz),
# CLASSPATH_OVERRIDE (a classpath instead of lib.tar.xz), XMX (32g), STEPS, WARMUP, COUNTS ("1 2 4"
# or "1 2" by the GPUs listed), MODEL, SPARSITY, BATCH, SEQ, OUT_TOKENS, TIMEOUT (s per run, 300),
# GPU_LIST (ordinals the workers take in order, default 0,1,2,3; GPU_LIST=0,0,0,0 COUNTS="1 2" runs the
# code path with every worker on GPU 0 of a one-GPU machine — its efficiency means nothing).
set -uo pipefail
# NVLink multicast stays off (the device README): this run uses no NCCL and never calls
# cuMulticastCreate, but anything it starts inherits these.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
device=${DEVICE:-cuda}
out=${OUT:-$PWD/out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/scaling-check.XXXXXX)

if [[ $device == cpu ]]; then
  model=${MODEL:-random:$here/tiny-config.json}; sparsity=${SPARSITY:-$here/tiny-sparsity.yaml}
  batch=${BATCH:-2}; seq=${SEQ:-64}; outtok=${OUT_TOKENS:-16}; steps=${STEPS:-8}; warm=${WARMUP:-2}
  counts=${COUNTS:-1 2 4}; gpus=0
else
  model=${MODEL:-random:llama3-8b}; sparsity=${SPARSITY:-$here/llama3-8b-math10k.yaml}
  batch=${BATCH:-8}; seq=${SEQ:-512}; outtok=${OUT_TOKENS:-128}; steps=${STEPS:-25}; warm=${WARMUP:-5}
  gpus=$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU ')
  nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv 2>&1 | sed 's/^/  /'
  nvidia-smi topo -m 2>/dev/null | sed 's/^/  topo | /'
  if [[ -n ${COUNTS:-} && -n ${GPU_LIST:-} ]]; then counts=$COUNTS
  elif [[ -n ${COUNTS:-} ]]; then counts=$COUNTS
  elif (( gpus >= 4 )); then counts="1 2 4"
  elif (( gpus >= 2 )); then counts="1 2"
  else echo "FAIL setup: nvidia-smi lists $gpus GPU(s); the scaling run needs at least 2"; exit 1; fi
fi

if [[ -n ${JAVA:-} ]]; then java=$JAVA
else
  jre_tar=${JRE_TAR:-$here/../jre25.tar.xz}
  mkdir -p "$work/jre" && tar -C "$work/jre" -xJf "$jre_tar" || { echo "FAIL setup: cannot unpack $jre_tar"; exit 1; }
  java=$work/jre/jre25/bin/java
fi
if [[ -n ${CLASSPATH_OVERRIDE:-} ]]; then cp=$CLASSPATH_OVERRIDE
else
  tar -C "$work" -xJf "$here/lib.tar.xz" || { echo "FAIL setup: cannot unpack $here/lib.tar.xz"; exit 1; }
  cp=$(ls "$work"/lib/*.jar | tr '\n' ':')
fi
export SPARSELORA_CACHE=$work/cache HOME=$work/home
mkdir -p "$SPARSELORA_CACHE" "$HOME"
jflags=(--add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow
        "-Xmx${XMX:-32g}" -Dai.djl.offline=true)
"$java" -version 2>&1 | head -1
echo "device $device ($gpus GPUs listed); worker counts: $counts; model $model; $batch x $seq ($outtok output tokens) per worker; $steps steps; output $out"

for n in $counts; do
  if [[ $device == cpu ]]; then dev=cpu
  else dev=cuda:$(echo "${GPU_LIST:-$(seq -s, 0 63)}" | cut -d, -f1-"$n"); fi
  {
    echo "name: scaling-w$n"
    echo "model: $model"
    echo "data: {synthetic: {batch: $batch, seq: $seq, output_tokens: $outtok}}"
    echo "lora: {r: 32, alpha: 64, targets: [q, k, v, o]}"
    echo "sparsity: $sparsity"
    echo "optimizer: {lr: 2.0e-4}"
    echo "steps: $steps"
    echo "workers: $n"
    echo "device: $dev"
    echo "checkpoint_every: 0"
    echo "seed: 42"
    echo "output_dir: $out/w$n"
  } >"$work/w$n.yaml"
  rm -rf "${out:?}/w$n"
  t0=$SECONDS
  timeout "${TIMEOUT:-300}" "$java" "${jflags[@]}" -cp "$cp" org.sparselora.actors.cli.Main train --config "$work/w$n.yaml" \
    >"$out/w$n.out" 2>"$out/w$n.log"
  rc=$?
  echo "  [w$n] exit $rc in $((SECONDS - t0)) s: $n worker(s) on $dev"
  echo "$rc" >"$out/w$n.rc"
  if [[ $rc != 0 ]]; then echo "  --- last lines of $out/w$n.log:"; grep -v '^WARNING' "$out/w$n.log" | tail -n 15 | sed 's/^/  | /'; fi
done

python3 - "$out" "$warm" "$device" "$model" "$sparsity" "$batch" "$seq" "$outtok" "$steps" $counts <<'PY'
import json, os, statistics, sys
out, warm, device, model, sparsity = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], os.path.basename(sys.argv[5])
batch, seq, outtok, steps = map(int, sys.argv[6:10])
counts = [int(c) for c in sys.argv[10:]]
results, lines = [], []
def say(s=""):
    print(s); lines.append(s)
for n in counts:
    d = f"{out}/w{n}"
    rc = int(open(f"{out}/w{n}.rc").read())
    r = {"gpus": n, "exit": rc}
    try:
        m = [json.loads(l) for l in open(d + "/metrics.jsonl")]
    except OSError:
        m = []
    r["steps_done"] = len(m)
    timed = [x for x in m if x["step"] > warm and x["sparse"]] or [x for x in m if x["step"] > warm]
    if rc == 0 and len(m) == steps and timed:
        ms = statistics.median(x["ms"] for x in timed)
        r.update(ms_step=ms, tokens_per_step=timed[0]["tokens"], tokens_per_s=timed[0]["tokens"] / (ms / 1e3),
                 agg_ms=statistics.median(x.get("agg_ms", 0) for x in timed),
                 agg_overlap=statistics.mean(x.get("agg_overlap", 0) for x in timed),
                 loss_first=m[0]["loss"], loss_last=m[-1]["loss"], timed_steps=len(timed),
                 sparse_steps=sum(1 for x in m if x["sparse"]))
        if n > 1:
            try:
                rep = json.load(open(d + "/replicas.json"))
                r.update(replica_max_abs_diff=rep["max_abs_diff"], replica_max_abs_diff_moments=rep["max_abs_diff_moments"],
                         replica_step=rep["step"])
            except OSError as e:
                r["replica_error"] = str(e)
    results.append(r)
base = next((r for r in results if r["gpus"] == 1 and "tokens_per_s" in r), None)
for r in results:
    if base and "tokens_per_s" in r:
        r["efficiency"] = r["tokens_per_s"] / (r["gpus"] * base["tokens_per_s"])
unit = "CPU workers" if device == "cpu" else "GPUs"
say(f"## Issue 6 scaling: {model}, {batch} x {seq} per worker ({outtok} output tokens), LoRA r=32 q,k,v,o, {sparsity}, {steps} steps, device {device}")
say()
say(f"| {unit} | ms/step | tokens/s | efficiency | agg ms | agg overlap | replicas: max abs diff vs worker 0 | loss step 1 → last |")
say("|---:|---:|---:|---:|---:|---:|---|---|")
for r in results:
    if "ms_step" not in r:
        say(f"| {r['gpus']} | run failed (exit {r['exit']}, {r['steps_done']} of {steps} steps) | | | | | | |"); continue
    rep = "—" if r["gpus"] == 1 else (f"{r['replica_max_abs_diff']:.3g} (AdamW moments {r['replica_max_abs_diff_moments']:.3g}) after step {r['replica_step']}"
                                      if "replica_max_abs_diff" in r else "missing: " + r.get("replica_error", "?"))
    say(f"| {r['gpus']} | {r['ms_step']:.1f} | {r['tokens_per_s']:,.0f} | {r.get('efficiency', float('nan')):.3f} | {r['agg_ms']:.2f} | "
        f"{r['agg_overlap']:.2f} | {rep} | {r['loss_first']:.4f} → {r['loss_last']:.4f} |")
say()
say(f"ms/step, tokens/s: median over the {results[0].get('timed_steps', '?')} sparse steps after step {warm} (tokens = every token of the global batch, "
    "per-worker batch fixed: weak scaling); efficiency = tokens/s(N) / (N · tokens/s(1)); agg ms: last worker's backward end → every worker "
    "holding the sum (median); agg overlap: share of aggregation time overlapping another worker's backward (0 by design: the device exchange "
    "starts when every worker's gradients are in).")
say()
verdicts = []
for r in results:
    n = r["gpus"]
    if r["exit"] != 0 or "ms_step" not in r:
        verdicts.append(("FAIL", f"{n}-worker run: exit {r['exit']}, {r['steps_done']} of {steps} steps")); continue
    if n > 1:
        e = r.get("efficiency")
        verdicts.append(("PASS" if e is not None and e >= 0.90 else "FAIL",
                         f"scaling efficiency at {n} {unit} {e:.3f} (goal >= 0.90)" if e is not None else f"no 1-worker baseline for {n}"))
        diff = r.get("replica_max_abs_diff")
        verdicts.append(("PASS" if diff == 0 else "FAIL",
                         f"LoRA weights equal across the {n} workers after {r.get('replica_step', '?')} steps: max |diff| {diff}"))
fails = 0
for v, t in verdicts:
    say(f"{v} {t}")
    fails += v == "FAIL"
json.dump({"device": device, "model": model, "sparsity": sparsity, "batch_per_worker": batch, "seq": seq, "output_tokens": outtok,
           "steps": steps, "warmup": warm, "results": results, "verdicts": [{"result": v, "what": t} for v, t in verdicts]},
          open(out + "/scaling.json", "w"), indent=1)
open(out + "/scaling-table.md", "w").write("\n".join(lines) + "\n")
sys.exit(min(fails, 100))
PY
fails=$?
echo "== scaling-check on $device: $fails failed (table: $out/scaling-table.md, $out/scaling.json)"
rm -rf "$work"
exit $fails
