#!/usr/bin/env bash
# The ARC solver end to end on one GPU (staged by benchmarks/gpu/stage-arc.sh): pretrains an ARC base
# model from scratch on the ARC-AGI-1 + ARC-AGI-2 training sets with its validation split held out
# (a time budget: MINUTES), then solves a task folder three ways — the base model alone (no TTT),
# test-time training with dense LoRA, and with SparseLoRA — and prints the score and timing table.
# Usage: bash arc-run.sh [TASKS_DIR]   (default: the validation split of the pretraining run)
# Env: MINUTES (4), PRESET (small), SEQ (8192), BATCH (4), LR (1e-3), STEPS (planned schedule, 3000),
#      LIMIT (tasks solved, 0 = all), TTT_STEPS (32), AUGS (8), MODES ("no-ttt dense sparse"),
#      SOLVE_TIMEOUT (seconds per solve, 600).
# Everything lands in $OUT: the model, metrics, each solve's results.json/submission.json, arc-table.md.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$PWD/out}; mkdir -p "$out" /tmp/jre /tmp/arclib
[[ -x /tmp/jre/jre25/bin/java ]] || tar -C /tmp/jre -xJf "$here/../jre25.tar.xz"
tar -C /tmp/arclib -xJf "$here/lib.tar.xz"
data=/tmp/arcdata; rm -rf "$data"; mkdir -p "$data"; tar -C "$data" -xJf "$here/data.tar.xz"
java=/tmp/jre/jre25/bin/java
cp=$(ls /tmp/arclib/lib/*.jar | tr '\n' ':')
run() { "$java" --add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow -Xmx64g \
          -cp "$cp" org.sparselora.actors.cli.Main "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/env.txt" 2>&1
t0=$(date +%s)
run arc pretrain --arc1 "$data/arc1" --arc2 "$data/arc2" --out "$out/model" --preset "${PRESET:-small}" \
    --minutes "${MINUTES:-4}" --steps "${STEPS:-3000}" --seq-len "${SEQ:-8192}" --batch-size "${BATCH:-4}" --lr "${LR:-1e-3}" \
    --device cuda 2>&1 | tee "$out/pretrain.log" | grep -vE '^\s*$' | tail -25
tasks=${1:-}
if [[ -z $tasks ]]; then   # the validation split the pretraining held out (its ARC-AGI-1 files; the ARC-AGI-2 copies are the same tasks)
  tasks=/tmp/arc-validation; rm -rf "$tasks"; mkdir -p "$tasks"
  python3 - "$out/model/split.json" "$data/arc1" "$tasks" <<'PY'
import json, shutil, sys, os
ids = json.load(open(sys.argv[1]))["validation"]
for i in ids:
    shutil.copy(os.path.join(sys.argv[2], i + ".json"), sys.argv[3])
print(f"validation split: {len(ids)} tasks")
PY
fi
for mode in ${MODES:-no-ttt dense sparse}; do
  extra=()
  case $mode in
    no-ttt) extra=(--no-ttt) ;;
    sparse) extra=(--sparsity "$here/arc-sparsity.yaml") ;;
  esac
  s0=$(date +%s)
  timeout "${SOLVE_TIMEOUT:-600}" "$java" --add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow -Xmx64g \
      -cp "$cp" org.sparselora.actors.cli.Main arc solve --model "$out/model" --tasks "$tasks" --out "$out/solve-$mode" --device cuda --limit "${LIMIT:-0}" \
      --ttt-steps "${TTT_STEPS:-32}" --augmentations "${AUGS:-8}" "${extra[@]}" > "$out/solve-$mode.log" 2>&1
  echo "solve $mode: exit $? in $(( $(date +%s) - s0 )) s" | tee -a "$out/solve-times.txt"
done
python3 - "$out" ${MODES:-no-ttt dense sparse} <<'PY' | tee "$out/arc-table.md"
import json, os, sys
out, modes = sys.argv[1], sys.argv[2:]
print("| run | tasks | score | tests solved | not fitting | TTT s/task (mean) | inference s/task (mean) | tasks/min (TTT + inference) |")
print("|---|---|---|---|---|---|---|---|")
for m in modes:
    p = os.path.join(out, f"solve-{m}", "results.json")
    if not os.path.exists(p):
        print(f"| {m} | - | (no results.json) | | | | | |"); continue
    r = json.load(open(p))
    ts = list(r.get("tasks", {}).values())
    n = len(ts) or 1
    ttt = sum(t.get("ttt_seconds", 0) for t in ts) / n
    inf = sum(t.get("inference_seconds", 0) for t in ts) / n
    err = sum(1 for t in ts if t.get("error"))
    print(f"| {m} | {r.get('task_count')} | {r.get('score')} | {r.get('solved_tests')}/{r.get('tests')} | {err} | {ttt:.2f} | {inf:.2f} | {60 / max(ttt + inf, 1e-9):.1f} |")
PY
echo "wall: $(( $(date +%s) - t0 )) s"
