#!/usr/bin/env bash
# Download, where pip reaches PyPI, the wheels the GPU machine lacks into .gpu-wheels/ (git-ignored), for run.sh to
# install there offline. Run from anywhere:
#
#     bash benchmarks/gpu/fetch_wheels.sh            # then carry=[".gpu-wheels"] in the device call
#
# The GPU machine (Python 3.12; see /work/.library/device/KINDS.md) has torch, transformers, lightning, tokenizers,
# tiktoken, pyarrow, pandas, fsspec, xxhash, huggingface-hub, ... but not what train.py and the data module import:
# hydra-core, omegaconf (+ antlr4-python3-runtime), datasets (+ dill, multiprocess), and llama-models (the Llama 3
# tokenizer file); nor bitsandbytes (QLoRA's 4-bit layers: the one compiled wheel, 43 MB, with its CUDA 11.8 to 13.2
# libraries; pinned in requirements-gpu.txt). peft (LoRA) is there already (run.sh installs a carried wheel only when
# its distribution is missing), but travels too (0.8 MB) in case an image lacks it. Versions: the project's pins in
# requirements.txt; the dependencies' versions are the ones those pins accept (checked below against each wheel's
# Requires-Dist; bitsandbytes needs torch, numpy and packaging, all on the machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${1:-.gpu-wheels}
PY=${GPU_PYTHON_VERSION:-3.12}
pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" "${2:-requirements.txt}"; }
PINNED=("hydra-core==$(pin hydra-core)" "omegaconf==$(pin omegaconf)" "datasets==$(pin datasets)" "llama-models==$(pin llama-models)"
        "peft==$(pin peft)")
BNB="bitsandbytes==$(pin bitsandbytes requirements-gpu.txt)"  # compiled: manylinux_2_24 x86-64, any CPython 3
DEPS=("dill==0.4.1" "multiprocess==0.70.19")   # datasets 5.2.0: dill>=0.3.0,<0.4.2; multiprocess<0.70.20
ANTLR="antlr4-python3-runtime==4.9.3"           # hydra-core and omegaconf: ==4.9.* (published as a source archive only)

rm -rf "$DEST" && mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux2014_x86_64 -d "$DEST" "${PINNED[@]}" "${DEPS[@]}"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 -d "$DEST" "$BNB"
# antlr4 4.9.3 has no wheel on PyPI: build its pure-Python wheel here.
python3 -m pip wheel -q --no-deps -w "$DEST" "$ANTLR"
rm -f "$DEST"/*.tar.gz

# Every wheel must be pure Python (py3/py312, any platform), but bitsandbytes (x86-64 Linux, the GPU machine's), and
# one version per distribution.
for whl in "$DEST"/*.whl; do
    case "$(basename "$whl")" in
        *-none-any.whl | bitsandbytes-*-py3-none-manylinux*_x86_64.whl) ;;
        *) echo "not a pure-Python wheel: $whl" >&2; exit 1 ;;
    esac
done
ls "$DEST"/*.whl | sed 's|.*/||; s/-.*//' | sort | uniq -d | grep . && { echo "two versions of one distribution" >&2; exit 1; }
du -ch "$DEST"/*.whl | sed 's|\.gpu-wheels/||'
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -n 1 | cut -f1)
wheels=$(du -cb "$DEST"/*.whl | tail -n 1 | cut -f1)
echo "travels: $((tree / 1024)) KiB tracked+untracked, $((wheels / 1024)) KiB wheels, $(((tree + wheels) / 1048576)) MiB of the device tool's 64"
if [ $((tree + wheels)) -gt $((64 * 1048576)) ]; then
    echo "over the 64 MiB the device tool carries: leave bitsandbytes out (rm $DEST/bitsandbytes-*; check d then says" \
        "'skipped: bitsandbytes not available')" >&2
    exit 1
fi
