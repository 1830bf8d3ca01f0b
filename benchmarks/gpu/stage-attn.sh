#!/usr/bin/env bash
# Stages the attention device run (issue 5) into ONE git-ignored folder the device tool carries:
# /work/main/.devrun/attn/ (default; first argument overrides) with what stage.sh stages for the GPU
# tests (engine and cuda-kernels jars, their runtime jars, the JUnit console launcher, the
# cuda-kernels test classes) and run.sh (a copy of benchmarks/gpu/attn-run.sh). The Java runtime is
# the shared .devrun/jre25.tar.xz next to it.
# Then: device tool with carry [".devrun/jre25.tar.xz", ".devrun/attn"] and command
# `bash .devrun/attn/run.sh` (logs in $OUT: env.txt, tests.log, attention-bench.log, memcheck.log, junit/).
set -euo pipefail
dest=${1:-/work/main/.devrun/attn}
STAGE_NAME=$(basename "$dest") STAGE_RUN=benchmarks/gpu/attn-run.sh:run.sh exec bash "$(dirname "$0")/stage.sh" "$(dirname "$dest")"
