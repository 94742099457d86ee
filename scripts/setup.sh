#!/usr/bin/env bash
# Creates .venv with Python 3.12 and installs the locked dependencies, once; later calls return at once
# unless requirements.lock or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
STAMP="$VENV/.rlforge-installed"
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

works() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; }

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.12 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && works "$candidate"; then command -v "$candidate"; return 0; fi
  done
  # pyenv keeps versions that its shims refuse to run until selected; ask pyenv for the binary directly.
  if command -v pyenv >/dev/null 2>&1; then
    local version
    for version in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V -r); do
      candidate="$(pyenv root)/versions/$version/bin/python3.12"
      if works "$candidate"; then echo "$candidate"; return 0; fi
    done
  fi
  for candidate in /usr/bin/python3.12 /usr/local/bin/python3.12 "$HOME"/.local/bin/python3.12; do
    if [ -x "$candidate" ] && works "$candidate"; then echo "$candidate"; return 0; fi
  done
  return 1
}

if ! [ -x "$VENV/bin/python" ] || ! works "$VENV/bin/python"; then
  if ! PY=$(find_python); then
    cat >&2 <<'MSG'
error: no working Python 3.12 found (Isaac Lab 3.0 needs exactly 3.12).
Install one, then run this again, for example:
  pyenv install 3.12          # with pyenv
  sudo apt-get install python3.12 python3.12-venv   # Debian/Ubuntu with 3.12 packages
  uv python install 3.12      # with uv
or point PYTHON at one: PYTHON=/path/to/python3.12 make train
MSG
    exit 1
  fi
  echo "setup: creating $VENV with $PY"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

echo "setup: installing locked dependencies into $VENV (first time: several GB, a few minutes)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
# --compile-bytecode: the packages are compiled to bytecode once, here, instead of at every start of a process
# that may not write it (PYTHONDONTWRITEBYTECODE, read-only installs): 9.2 s of a profiled start on an H200 machine
# (docs/benchmarks.md, "Warm start with compiled bytecode").
"$VENV/bin/python" -m uv pip install --compile-bytecode --python "$VENV/bin/python" -r requirements.lock
"$VENV/bin/python" -m uv pip install --python "$VENV/bin/python" --no-deps -e .
echo "$want" > "$STAMP"
echo "setup: done ($("$VENV/bin/python" --version))"
# Videos of policies draw headless through EGL (docs/video.md); training and play work without it.
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL\.so\.1'; then
  echo "setup: note: no libEGL.so.1 on this machine; for videos (play.py --video, logger.video_interval) install" \
    "EGL, e.g. apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri (docs/video.md)"
fi
