#!/usr/bin/env bash
# The whole GPU session in one command (see benchmarks/gpu/README.md):
#
#     bash benchmarks/gpu/run.sh OUT [--budget SECONDS] [--only a,b] [--quick] [--preflight-only]
#
# 1. installs the carried wheels (.gpu-wheels/, made by fetch_wheels.sh) that this Python lacks, offline, into a
#    private folder on PYTHONPATH (nothing of the machine's own environment is replaced);
# 2. runs benchmarks/gpu/preflight.py: versions, requirements, and an import of every package the checks need and
#    of every wheel just installed; the first failed import stops here (exit 2, OUT/report.md says which);
#    --preflight-only stops here in any case;
# 3. runs benchmarks/gpu/run_checks.py: every check in its own process with its own timeout, all within the
#    budget (counted from here), writing OUT/report.md, report.json, log.txt and profile.md.
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu/run.sh OUT [run_checks.py options]}
shift
export GPU_CHECKS_T0=$(date +%s)
cd "$(dirname "$0")/../.." || exit 1
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-.gpu-wheels}
SITE=${GPU_CHECKS_SITE:-/tmp/simpo-gpu-site}
export GPU_CHECKS_WORK=${GPU_CHECKS_WORK:-/tmp/simpo-gpu-work}
export GPU_CHECKS_INSTALL_LOG=$GPU_CHECKS_WORK/installed.txt
mkdir -p "$OUT" "$GPU_CHECKS_WORK" "$SITE"
: > "$GPU_CHECKS_INSTALL_LOG"

# Offline and quiet: the machine reaches no network, so no library may try (a hub call would wait for its timeout).
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HOME=${HF_HOME:-/tmp/simpo-gpu-hf} SIMPO_CACHE=${SIMPO_CACHE:-/tmp/simpo-gpu-cache}
export WANDB_MODE=disabled

# A wheel is installed only when its distribution is missing here (any version): the machine's own packages
# (torch, transformers, ...) are never shadowed. Each wheel alone, so one that does not fit this Python (a
# py312-only wheel on another Python) is reported and skipped instead of stopping the rest.
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    for whl in "$WHEELS"/*.whl; do
        dist=$(basename "$whl" | cut -d- -f1)
        version=$(basename "$whl" | cut -d- -f2)
        have=$(PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} "$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$dist" 2>/dev/null)
        if [ -n "$have" ]; then
            echo "$dist $version: not installed, $have already here" | tee -a "$GPU_CHECKS_INSTALL_LOG"
        elif "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$whl" > "$GPU_CHECKS_WORK/pip.log" 2>&1; then
            echo "$dist $version: installed" | tee -a "$GPU_CHECKS_INSTALL_LOG"
        else
            echo "$dist $version: FAILED to install ($(tail -n 1 "$GPU_CHECKS_WORK/pip.log"))" | tee -a "$GPU_CHECKS_INSTALL_LOG"
        fi
    done
else
    echo "no wheels in $WHEELS (run benchmarks/gpu/fetch_wheels.sh where pip reaches PyPI)" | tee -a "$GPU_CHECKS_INSTALL_LOG"
fi
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}

echo "$(date '+%H:%M:%S') $("$PYTHON" --version 2>&1), setup $(( $(date +%s) - GPU_CHECKS_T0 )) s"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader

export GPU_CHECKS_PREFLIGHT=$GPU_CHECKS_WORK/preflight.json
rm -f "$GPU_CHECKS_PREFLIGHT"
"$PYTHON" benchmarks/gpu/preflight.py "$OUT" --result "$GPU_CHECKS_PREFLIGHT" || exit 2
args=()
for arg in "$@"; do
    [ "$arg" = --preflight-only ] && { echo "preflight passed in $(( $(date +%s) - GPU_CHECKS_T0 )) s (--preflight-only: no check run)"; exit 0; }
    args+=("$arg")
done
exec "$PYTHON" benchmarks/gpu/run_checks.py "$OUT" ${args[@]+"${args[@]}"}
