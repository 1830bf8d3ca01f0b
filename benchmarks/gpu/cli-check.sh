#!/usr/bin/env bash
# The CLI and the actor pipeline on the GPU, in one device run (staged by benchmarks/gpu/stage-cli.sh
# into .devrun/cli, which holds a copy of this script: run `bash .devrun/cli/cli-check.sh` from the
# checkout root, with .devrun/jre25.tar.xz beside it). Every step prints one PASS/FAIL line saying
# what it compared; the exit status is the number of FAILs (0 = all passed). Logs go to $OUT.
#   1 demo        `demo --device D`: the embedded main job (dense LoRA, then SparseLoRA) trained on D,
#                 evaluated on the CPU from the adapters on disk: it must learn as on the CPU
#                 (exact match 0.000 -> 1.000 dense / 0.996 sparse there).
#   2 train       stories260K + llama2.c tokenizer on a 400-record GSM8K slice, SparseLoRA with a dense
#                 warm-up, 66 steps: `--stop-after 60` then `--resume` to 66; metrics.jsonl rows once
#                 each, loss.svg, adapter, checkpoint; the same job on the CPU for the loss curve.
#   3 score/generate with the trained adapter on D and on the CPU (bf16 vs fp32 tolerances below).
#   4 workers: 2 on one GPU (device cuda:0,0: two Steppers, two backends on GPU 0) against workers: 1.
# DEVICE=cpu runs the same on the CPU (the dry run that proves everything but the GPU), and adds a
# check that `--device cuda` fails loudly, naming the missing GPU, instead of falling back to the CPU.
# Knobs: DEVICE (cuda), OUT ($PWD/out), JAVA (default: the JRE unpacked from .devrun/jre25.tar.xz),
# XMX (16g), ONLY="1 2 3 4" (a subset of the steps; 3 needs 2's adapter), TIMEOUT_SCALE (1; each
# command's time limit is sized for the GPU machine's 16 cores: scale it up on a small machine).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
device=${DEVICE:-cuda}
out=${OUT:-$PWD/out}
only=" ${ONLY:-1 2 3 4} "
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/cli-check.XXXXXX)
fails=0
declare -a summary

if [[ $device == cpu ]]; then gpu_pair=cpu; tol_score=1e-6; tol_curve=1e-6; tol_pair=1e-3
else gpu_pair="$device,${device#cuda:}"; [[ $device == cuda ]] && gpu_pair=cuda:0,0
  # bf16 weights and activations (fp32 accumulation) against the fp32 CPU engine: the kernel tests
  # measure ~1e-3 relative per op; a whole forward's loss lands within ~1e-2, a 66-step training
  # curve within a few percent (the updates differ by bf16 rounding and compound).
  tol_score=2e-2; tol_curve=5e-2; tol_pair=3e-2
fi

if [[ -n ${JAVA:-} ]]; then java=$JAVA
else
  jre_tar=${JRE_TAR:-$here/../jre25.tar.xz}
  mkdir -p "$work/jre" && tar -C "$work/jre" -xJf "$jre_tar" || { echo "FAIL setup: cannot unpack $jre_tar"; exit 1; }
  java=$work/jre/jre25/bin/java
fi
tar -C "$work" -xJf "$here/lib.tar.xz" || { echo "FAIL setup: cannot unpack $here/lib.tar.xz"; exit 1; }
cp=$(ls "$work"/lib/*.jar | tr '\n' ':')
export SPARSELORA_CACHE=$work/cache HOME=$work/home
mkdir -p "$SPARSELORA_CACHE" "$HOME"
[[ -d $here/cache ]] && cp -r "$here"/cache/. "$SPARSELORA_CACHE/"
# DJL's HF tokenizer (the demo's tokenizer.json): offline with the CPU flavour, so it takes the
# native library from its jar and never looks for a CUDA build to download.
jflags=(--add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow
        "-Xmx${XMX:-16g}" -Dai.djl.offline=true -DRUST_FLAVOR=cpu "-DDJL_CACHE_DIR=$work/djl" "-DENGINE_CACHE_DIR=$work/djl")
data=$here/data
"$java" -version 2>&1 | head -1
echo "device $device; output $out; work $work"

# sl NAME TIMEOUT ARGS…: runs the CLI, stdout to $out/NAME.out, stderr to $out/NAME.log; returns its exit status
sl() {
  local name=$1 t=$2; shift 2
  local t0=$SECONDS
  timeout "$((t * ${TIMEOUT_SCALE:-1}))" "$java" "${jflags[@]}" -cp "$cp" org.sparselora.actors.cli.Main "$@" >"$out/$name.out" 2>"$out/$name.log"
  local rc=$?
  echo "  [$name] exit $rc in $((SECONDS - t0)) s: sparselora $*"
  return $rc
}
result() {  # result PASS|FAIL STEP TEXT
  echo "$1 $2: $3"
  summary+=("$1 $2: $3")
  [[ $1 == PASS ]] || fails=$((fails + 1))
}
# py STEP DESCRIPTION PYTHON…: runs a check; its last stdout line is the detail; exit 0 = PASS
py() {
  local step=$1 what=$2; shift 2
  local msg
  msg=$(python3 -c "$@" 2>&1); local rc=$?
  if [[ $rc == 0 ]]; then result PASS "$step" "$what — ${msg##*$'\n'}"; else result FAIL "$step" "$what — ${msg//$'\n'/ | }"; fi
}
tail_log() { echo "  --- last lines of $out/$1.log:"; tail -n "${2:-15}" "$out/$1.log" | grep -v '^WARNING' | sed 's/^/  | /'; }

# job NAME DEVICE STEPS WORKERS OUTDIR: a job file in $work (stories260K, GSM8K slice, SparseLoRA with a dense warm-up)
job() {
  cat >"$work/$1.yaml" <<EOF
name: $1
model: $data/stories260K.bin
tokenizer: $data/tok512.bin
data: {path: $data/gsm8k-400.json, format: alpaca}
lora: {r: 8, alpha: 16, targets: [q, k, v, o, gate, up, down]}
sparsity:
  start_step: 0.25
  end_step: 1.0
  mode: svd_8
  skip_output_tokens: true
  sparsity: {layers.1.mlp: 0.5, layers.2.mlp: 0.75, layers.3.mlp: 0.5, layers.1.self_attn: 0.25, layers.3.self_attn: 0.5}
optimizer: {lr: 2.0e-3}
schedule: {type: cosine, warmup_steps: 4}
steps: $3
batch_size: 8
seq_len: 256
workers: $4
checkpoint_every: 20
seed: 7
device: $2
output_dir: $5
EOF
  echo "$work/$1.yaml"
}

# ---- 0 (CPU dry run only): the GPU path must fail loudly without CUDA, never fall back to the CPU
if [[ $device == cpu ]]; then
  sl nogpu-score 60 score --device cuda --model "$data/stories260K.bin" --tokenizer "$data/tok512.bin" --data "$data/gsm8k-score.jsonl"
  rc=$?; msg=$(grep -v '^WARNING' "$out/nogpu-score.log" | head -3 | tr '\n' ' ')
  if [[ $rc == 2 && $msg == *"--device cuda"*"CUDA"* && ! -s $out/nogpu-score.out ]]; then result PASS 0-nogpu "score --device cuda without a GPU: exit 2, nothing scored: $msg"
  else result FAIL 0-nogpu "score --device cuda without a GPU should exit 2 naming the device (exit $rc): $msg"; fi
  sl nogpu-train 60 train --config "$(job nogpu cuda 4 1 "$out/nogpu")"
  rc=$?; msg=$(grep -v '^WARNING' "$out/nogpu-train.out" "$out/nogpu-train.log" | grep -i "cuda" | head -2 | tr '\n' ' ')
  if [[ $rc != 0 && $msg == *"no usable CUDA GPU"* && ! -f $out/nogpu/metrics.jsonl ]]; then result PASS 0-nogpu "train with device: cuda without a GPU: exit $rc, no step run: $msg"
  else result FAIL 0-nogpu "train with device: cuda without a GPU should fail before any step (exit $rc): $msg"; fi
fi

# ---- 1 demo
if [[ $only == *" 1 "* ]]; then
  if sl demo 150 demo --device "$device" --out "$out/demo"; then
    py 1-demo "demo --device $device learns as on the CPU (eval on the CPU from the adapters on disk; CPU reference: exact match 0.000 -> 1.000 dense / 0.996 sparse)" "
import json
s = json.load(open('$out/demo/summary.json'))
b, d, sp = s['base'], s['dense'], s['sparse']
sparse_rows = [json.loads(l) for l in open('$out/demo/sparse/metrics.jsonl')]
assert any(r['sparse'] for r in sparse_rows), 'the SparseLoRA job ran no sparse step'
assert d['exact_match'] >= 0.95 and sp['exact_match'] >= 0.90, 'exact match too low'
assert d['eval_loss'] < 0.2 * b['eval_loss'] and sp['eval_loss'] < 0.2 * b['eval_loss'], 'eval loss did not drop 5x'
print('exact match %.3f -> dense %.3f, sparse %.3f; eval loss %.4f -> %.4f / %.4f; %.1f / %.1f ms per step, flop ratio %.2f' % (
    b['exact_match'], d['exact_match'], sp['exact_match'], b['eval_loss'], d['eval_loss'], sp['eval_loss'], d['ms_per_step'], sp['ms_per_step'], s['flop_ratio']))
"
    sed -n '/^SHIFT task/,$p' "$out/demo.out" | sed 's/^/  | /'
  else
    result FAIL 1-demo "demo --device $device did not finish"; tail_log demo
  fi
fi

# ---- 2 train: 60 steps, stop with a checkpoint, resume to 66; the same job uninterrupted on the CPU
if [[ $only == *" 2 "* ]]; then
  job_gpu=$(job train "$device" 66 1 "$out/train")
  sl train-a 90 train --config "$job_gpu" --stop-after 60; rc_a=$?
  rows_a=$(wc -l <"$out/train/metrics.jsonl" 2>/dev/null || echo 0)
  if [[ $rc_a == 0 && $rows_a -ge 60 && $rows_a -lt 66 && -f $out/train/checkpoint/checkpoint.pb ]]; then
    result PASS 2-train "train --stop-after 60 on $device: exit 0, stopped with a checkpoint after $rows_a steps ($(tail -1 "$out/train-a.out"))"
  else
    result FAIL 2-train "train --stop-after 60 on $device: exit $rc_a, $rows_a metrics rows"; tail_log train-a
  fi
  sl train-b 60 train --config "$job_gpu" --resume; rc_b=$?
  [[ $rc_b == 0 ]] || tail_log train-b
  py 2-resume "train --resume on $device (exit $rc_b): metrics.jsonl steps 1..66 once each, dense warm-up then sparse, loss falls, loss.svg, adapter, checkpoint" "
import json, os
o = '$out/train'
assert $rc_b == 0, 'resume exited $rc_b'
rows = [json.loads(l) for l in open(o + '/metrics.jsonl')]
steps = [r['step'] for r in rows]
assert steps == list(range(steps[0], steps[0] + 66)) and steps[0] in (0, 1), 'steps not contiguous/once: %s' % steps
sp = [r['sparse'] for r in rows]
first = sp.index(True)
assert not any(sp[:first]) and all(sp[first:]) and 10 <= first <= 20, 'dense warm-up then sparse expected, got %s' % sp
for f in ['loss.svg', 'adapter/adapter_model.safetensors', 'adapter/adapter_config.json', 'checkpoint/checkpoint.pb']:
    assert os.path.getsize(o + '/' + f) > 0, f + ' missing'
a = sum(r['loss'] for r in rows[:5]) / 5; z = sum(r['loss'] for r in rows[-10:]) / 10
assert z < a - 0.3, 'loss did not fall: first 5 %.4f, last 10 %.4f' % (a, z)
print('%d rows, sparse from step %d, loss first-5 %.4f -> last-10 %.4f, %.1f ms/step (sparse steps median)' % (
    len(rows), steps[first], a, z, sorted(r['ms'] for r in rows[first:])[len(rows[first:]) // 2]))
"
  sl train-cpu 150 train --config "$(job train-cpu cpu 66 1 "$out/train-cpu")"; rc_c=$?
  [[ $rc_c == 0 ]] || tail_log train-cpu
  py 2-vs-cpu "loss curve on $device (stopped + resumed) vs the same job uninterrupted on the CPU (fp32): step 1 and last-10 mean within $tol_curve relative" "
import json
g = [json.loads(l)['loss'] for l in open('$out/train/metrics.jsonl')]
c = [json.loads(l)['loss'] for l in open('$out/train-cpu/metrics.jsonl')]
assert $rc_c == 0 and len(c) == 66 == len(g), 'cpu run exit $rc_c, %d rows' % len(c)
d0 = abs(g[0] - c[0]) / c[0]; dz = abs(sum(g[-10:]) - sum(c[-10:])) / sum(c[-10:])
dmax = max(abs(x - y) / y for x, y in zip(g, c))
assert d0 <= $tol_curve and dz <= $tol_curve, 'step 1 rel %.2e, last-10 rel %.2e' % (d0, dz)
print('step 1 %.5f vs %.5f (rel %.1e); last-10 mean %.5f vs %.5f (rel %.1e); max per-step rel %.1e' % (g[0], c[0], d0, sum(g[-10:]) / 10, sum(c[-10:]) / 10, dz, dmax))
"
  if [[ $device == cpu ]]; then
    # on the CPU a stopped-and-resumed run is bit-identical to an uninterrupted one
    if cmp -s "$out/train/adapter/adapter_model.safetensors" "$out/train-cpu/adapter/adapter_model.safetensors"; then
      result PASS 2-resume-exact "CPU: stopped + resumed adapter is byte-identical to the uninterrupted run's"
    else result FAIL 2-resume-exact "CPU: stopped + resumed adapter differs from the uninterrupted run's"; fi
  fi
fi

# ---- 3 score and generate with the trained adapter, on the device and on the CPU
if [[ $only == *" 3 "* ]]; then
  m=(--model "$data/stories260K.bin" --tokenizer "$data/tok512.bin")
  sl score-dev 60 score "${m[@]}" --adapter "$out/train/adapter" --data "$data/gsm8k-score.jsonl" --device "$device"; rc1=$?
  sl score-cpu 60 score "${m[@]}" --adapter "$out/train/adapter" --data "$data/gsm8k-score.jsonl" --device cpu; rc2=$?
  sl score-base 60 score "${m[@]}" --data "$data/gsm8k-score.jsonl" --device cpu; rc3=$?
  for n in score-dev score-cpu score-base; do [[ -s $out/$n.out ]] || tail_log $n; done
  py 3-score "score --device $device vs --device cpu with the adapter, 24 held-out GSM8K texts: every record within $tol_score relative; the adapter beats the base" "
import json
def read(n):
    rows = [json.loads(l) for l in open('$out/' + n + '.out')]
    return [r['loss'] for r in rows[:-1]], rows[-1]['mean_loss']
assert ($rc1, $rc2, $rc3) == (0, 0, 0), 'exit codes %s' % str(($rc1, $rc2, $rc3))
g, gm = read('score-dev'); c, cm = read('score-cpu'); b, bm = read('score-base')
assert len(g) == len(c) == 24, 'records %d / %d' % (len(g), len(c))
worst = max(abs(x - y) / y for x, y in zip(g, c))
assert worst <= $tol_score, 'worst record rel %.2e' % worst
assert cm < bm, 'adapter %.4f not below base %.4f' % (cm, bm)
print('mean loss %.5f ($device) vs %.5f (cpu), worst record rel %.1e; base model %.5f' % (gm, cm, worst, bm))
"
  prompt=$'Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?\n'
  sl gen-dev 60 generate "${m[@]}" --adapter "$out/train/adapter" --prompt "$prompt" --max-new-tokens 40 --device "$device"; rc1=$?
  sl gen-cpu 60 generate "${m[@]}" --adapter "$out/train/adapter" --prompt "$prompt" --max-new-tokens 40 --device cpu; rc2=$?
  py 3-generate "generate --device $device vs cpu (greedy, 40 tokens, adapter): same first 8 characters (bf16 may flip a near-tied later token)" "
import os
assert ($rc1, $rc2) == (0, 0), 'exit codes %s' % str(($rc1, $rc2))
g = open('$out/gen-dev.out').read().strip(); c = open('$out/gen-cpu.out').read().strip()
n = len(os.path.commonprefix([g, c]))
assert len(g) > 0 and (n >= 8 or g == c), 'device %r vs cpu %r' % (g, c)
print('common prefix %d of %d chars; %s: %r' % (n, len(c), '$device', g[:80]))
"
fi

# ---- 4 two workers on one GPU (two Steppers, each with its own backend on GPU 0) vs one worker
if [[ $only == *" 4 "* ]]; then
  sl w2 90 train --config "$(job w2 "$gpu_pair" 12 2 "$out/w2")"; rc1=$?
  [[ $rc1 == 0 ]] || tail_log w2
  sl w1 90 train --config "$(job w1 "$device" 12 1 "$out/w1")"; rc2=$?
  [[ $rc2 == 0 ]] || tail_log w1
  py 4-workers "workers: 2 on device $gpu_pair (batch 4 each) vs workers: 1 on $device (batch 8), 12 steps, sparse from step 4: per-step loss within $tol_pair relative" "
import json
assert ($rc1, $rc2) == (0, 0), 'exit codes %s' % str(($rc1, $rc2))
a = [json.loads(l) for l in open('$out/w2/metrics.jsonl')]; b = [json.loads(l) for l in open('$out/w1/metrics.jsonl')]
assert len(a) == len(b) == 12, 'rows %d / %d' % (len(a), len(b))
assert [r['sparse'] for r in a] == [r['sparse'] for r in b] and a[-1]['sparse'], 'sparse flags differ'
worst = max(abs(x['loss'] - y['loss']) / y['loss'] for x, y in zip(a, b))
assert worst <= $tol_pair, 'worst step rel %.2e' % worst
print('worst per-step loss rel %.1e; last loss %.5f vs %.5f; %.1f vs %.1f ms/step (last step)' % (worst, a[-1]['loss'], b[-1]['loss'], a[-1]['ms'], b[-1]['ms']))
"
fi

echo
echo "== cli-check on $device: $fails failed"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
rm -rf "$work"
exit $fails
