#!/usr/bin/env bash
# Set up (or reuse) the cached benchmark environment, then run tools/bench.py with these arguments.
#   bash tools/bench.sh [bench.py args...]      e.g.  bash tools/bench.sh --quick --peers torch,ort
# Like tools/test.sh: the venv lives outside the checkout, keyed by a hash of requirements-bench.txt
# and requirements-test.txt (which it includes), and is built into a temporary folder then renamed,
# so an interrupted build is never mistaken for a good one.  It holds the test requirements plus
# ONNX Runtime and OpenVINO; npvit's runtime never sees them.
# To measure the OpenBLAS kernels a user's NumPy picks where the environment forces others:
#   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE bash tools/bench.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
key=$(cat requirements-bench.txt requirements-test.txt | sha256sum | cut -c1-16)
root="${NPVIT_CACHE:-$HOME/.cache/npvit}"
venv="$root/bench-venv-$key"
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$root"
  tmp=$(mktemp -d "$root/build.XXXXXX")
  echo "building benchmark environment in $venv (one time, a few minutes)"
  start=$SECONDS
  python3 -m venv "$tmp"
  # pip through the interpreter: the venv is renamed afterwards, so its scripts' shebangs would
  # point at the temporary folder.
  "$tmp/bin/python" -m pip install -q -r requirements-bench.txt
  mv "$tmp" "$venv"
  echo "built in $((SECONDS - start)) s, $(du -sh "$venv" | cut -f1)"
fi
# The project itself is used from the checkout (no install step to go stale).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# A broken environment should fail here, not show up as missing peers in the table.
"$venv/bin/python" -c "import torch, timm, onnx, onnxruntime, openvino" \
  || { echo "the benchmark environment $venv is broken: delete it and run again"; exit 1; }
exec "$venv/bin/python" tools/bench.py "$@"
