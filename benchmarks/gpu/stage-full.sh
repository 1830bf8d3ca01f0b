#!/usr/bin/env bash
# Stages ONE folder for a device call that checks and times everything of the GPU backend at once:
# the GPU correctness tests (device-check.sh) and the step benchmark against the PyTorch + PEFT peer
# (device-bench.sh), over the jars built from THIS checkout (so a branch can be run before it is
# merged). Output: $DEVRUN/$NAME/ (default /work/main/.devrun/full: the device tool ships /work/main)
# with lib/ (engine, cuda-kernels, benchmarks jars and runtime jars, the JUnit console),
# test-classes/, and the scripts; the JRE at $DEVRUN/jre25.tar.xz. Then call the device tool with
# carry [".devrun/jre25.tar.xz", ".devrun/NAME"] and command `bash .devrun/NAME/full-check.sh`
# (env as device-check.sh and device-bench.sh take: KERNEL_BENCH, MEMCHECK, WARMUP, STEPS, TARGETS,
# PEER, SKIP_1B, PROFILE, OURS_TIMEOUT; TESTS=0 skips the tests, BENCH=0 the benchmark).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
devrun=${DEVRUN:-/work/main/.devrun}
name=${NAME:-full}
cd "$root"
# the benchmark's jars and runtime classpath, staged by stage-device-bench.sh into this checkout's .devrun/bench
benchmarks/stage-device-bench.sh >/dev/null
# the GPU tests' classes and the JUnit console, staged by stage.sh into a scratch folder
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp "$devrun/jre25.tar.xz" "$scratch/" 2>/dev/null || true
STAGE_NAME=gpu benchmarks/gpu/stage.sh "$scratch" >/dev/null
dest=$devrun/$name
rm -rf "$dest"; mkdir -p "$dest/lib"
# (not the benchmark's JUnit jars: the console launcher brings its own, and two copies of an engine clash)
for j in .devrun/bench/lib/*.jar; do
  case "$(basename "$j")" in junit-*|opentest4j-*|apiguardian-*) ;; *) cp "$j" "$dest/lib/" ;; esac
done
cp "$scratch/gpu/lib/junit-platform-console-standalone.jar" "$dest/lib/"
cp -r "$scratch/gpu/test-classes" "$dest/test-classes"
[[ -f $devrun/jre25.tar.xz ]] || cp "$scratch/jre25.tar.xz" "$devrun/"
cp benchmarks/gpu/device-check.sh benchmarks/gpu/device-run-lib.sh benchmarks/device-bench.sh "$dest/"
cat > "$dest/full-check.sh" <<'RUN'
#!/usr/bin/env bash
# the GPU tests, then the benchmark (both logs under $OUT); exit status: the tests'
here=$(cd "$(dirname "$0")" && pwd)
status=0
if [[ ${TESTS:-1} == 1 ]]; then bash "$here/device-check.sh"; status=$?; fi
[[ ${BENCH:-1} == 1 ]] && BENCH_LIB="$here/lib" bash "$here/device-bench.sh"
exit $status
RUN
du -sm "$devrun/jre25.tar.xz" "$dest"
size=$(du -scm "$devrun/jre25.tar.xz" "$dest" | tail -1 | cut -f1)
(( size <= 54 )) || { echo "stage-full.sh: ${size} MiB to carry, over the 54 MiB left beside the tracked tree" >&2; exit 1; }
