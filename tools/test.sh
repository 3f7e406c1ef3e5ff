#!/usr/bin/env bash
# Set up (or reuse) the cached test environment, then run the whole test suite.
#   bash tools/test.sh [pytest args...]
# The venv lives outside the checkout, keyed by a hash of requirements-test.txt, and is built
# into a temporary folder then renamed, so an interrupted build is never mistaken for a good one.
#
# Without pytest args (the full run, what CI does) the NumPy-only tests then run again on the
# oldest and the newest Python/NumPy pair pyproject.toml promises (Python >= 3.10, NumPy >= 1.24),
# each in a small cached venv (numpy, pytest, hypothesis, Pillow) built from a pyenv interpreter;
# tests that need torch & co skip there.  A missing interpreter is reported and skipped.
# NPVIT_COMPAT=0 leaves this step out; NPVIT_COMPAT=1 runs it with the pytest args too.
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

# --- the same tests, NumPy only, on the oldest and newest Python/NumPy pyproject.toml allows -------
# Pins: the newest pytest/hypothesis/Pillow each interpreter takes (Pillow 13 needs Python 3.11).
COMPAT=(
  "3.10|numpy==1.24.4 pytest==9.0.3 hypothesis==6.155.2 pillow==12.3.0"
  "3.13|numpy==2.5.5 pytest==9.0.3 hypothesis==6.155.2 pillow==13.0.0"
)
compat_venv() {  # compat_venv PYTHON PINS...: a cached venv (keyed by interpreter and pins) on stdout
  local python=$1; shift
  local key cvenv tmp
  key=$( { "$python" -c 'import sys; print(sys.version)'; printf '%s\n' "$@"; } | sha256sum | cut -c1-16)
  cvenv="$root/compat-$key"
  if [ ! -x "$cvenv/bin/python" ]; then
    mkdir -p "$root"
    tmp=$(mktemp -d "$root/build.XXXXXX")
    echo "compat: building $cvenv (one time)" >&2
    "$python" -m venv "$tmp"
    "$tmp/bin/python" -m pip install -q "$@" >&2
    mv "$tmp" "$cvenv"
  fi
  echo "$cvenv"
}
find_python() {  # the newest installed patch release of Python $1, from pyenv (or PATH)
  local pyenv_root
  pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  local found
  found=$(ls -d "$pyenv_root"/versions/"$1".*/bin/python"$1" 2>/dev/null | sort -V | tail -n 1)
  [ -n "$found" ] || found=$(command -v "python$1" || true)
  echo "$found"
}
if [ "${NPVIT_COMPAT:-}" = 1 ] || { [ "${NPVIT_COMPAT:-}" != 0 ] && [ "$#" -eq 0 ]; }; then
  for entry in "${COMPAT[@]}"; do
    version=${entry%%|*}
    read -r -a pins <<< "${entry#*|}"
    python=$(find_python "$version")
    if [ -z "$python" ]; then
      echo "compat: no Python $version here (pyenv root: $(pyenv root 2>/dev/null || echo none)); skipped"
      continue
    fi
    if ! cvenv=$(compat_venv "$python" "${pins[@]}"); then
      echo "compat: could not install ${pins[*]} for Python $version; skipped"
      continue
    fi
    echo "compat: $("$cvenv/bin/python" -c 'import platform, numpy; print(f"Python {platform.python_version()}, NumPy {numpy.__version__}")')"
    set +e
    "$cvenv/bin/python" -m pytest -q -p no:cacheprovider "${@:-tests}"
    crc=$?
    set -e
    [ "$crc" -eq 0 ] || { echo "compat: Python $version with ${pins[0]} failed (pytest exit $crc)"; rc=1; }
  done
fi
exit "$rc"
