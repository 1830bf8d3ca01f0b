#!/usr/bin/env bash
# Stages the predictor device run (issue 5: the predictor's top-k, Gram and expansion kernels) into
# ONE git-ignored folder the device tool carries: /work/main/.devrun/predk/ (default; the first
# argument overrides) with what stage.sh stages for the GPU tests and run.sh (a copy of
# benchmarks/gpu/predictor-run.sh). The Java runtime is the shared .devrun/jre25.tar.xz next to it.
# Then: device tool with carry [".devrun/jre25.tar.xz", ".devrun/predk"] and command
# `bash .devrun/predk/run.sh` (logs in $OUT: env.txt, tests.log, predictor-bench.log, memcheck.log, junit/).
set -euo pipefail
dest=${1:-/work/main/.devrun/predk}
STAGE_NAME=$(basename "$dest") STAGE_RUN=benchmarks/gpu/predictor-run.sh:run.sh exec bash "$(dirname "$0")/stage.sh" "$(dirname "$dest")"
