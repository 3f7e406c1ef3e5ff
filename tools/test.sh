#!/usr/bin/env bash
# Set up (or reuse) the cached test environment, then run the whole test suite.
#   bash tools/test.sh [pytest args...]
# The venv lives outside the checkout, keyed by a hash of requirements-test.txt, and is built
# into a temporary folder then renamed, so an interrupted build is never mistaken for a good one.
set -euo pipefail
cd "$(dirname "$0")/.."
key=$(sha256sum requirements-test.txt | cut -c1-16)
root="${NPVIT_CACHE:-$HOME/.cache/npvit}"
venv="$root/venv-$key"
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$root"
  tmp=$(mktemp -d "$root/build.XXXXXX")
  echo "building test environment in $venv (one time, ~2 min)"
  python3 -m venv "$tmp"
  # Always call pip through the interpreter: the venv is renamed afterwards, so its scripts'
  # shebangs would point at the temporary folder.
  "$tmp/bin/python" -m pip install -q -r requirements-test.txt
  mv "$tmp" "$venv"
fi
# The project itself is used from the checkout (no install step to go stale).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
# The reference libraries must import: otherwise the parity tests' importorskip would quietly skip.
"$venv/bin/python" -c "import torch, torchvision, timm, transformers, safetensors, PIL, hypothesis, sklearn" \
  || { echo "the test environment $venv is broken: delete it and run again"; exit 1; }
set +e
"$venv/bin/python" -m pytest -q "$@"
rc=$?
set -e
# pytest's 5 means "no tests collected": a suite that runs nothing is a failure here.
[ "$rc" -eq 5 ] && { echo "no tests were collected"; exit 1; }
exit "$rc"
