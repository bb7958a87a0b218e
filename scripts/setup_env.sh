#!/usr/bin/env bash
# Creates or updates the virtual environment .venv at the repo root.
# torch comes first, pinned to the CPU build on local disk, so that no later dependency can pull a CUDA build.
# Re-running is cheap: the install is skipped while setup.py is unchanged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python_bin="${MIRROR_PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv with $($python_bin --version)"
  "$python_bin" -m venv "$venv"
fi
stamp="$venv/.mirror-installed"
want="$(cat "$root/setup.py" "$root/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing torch==2.13.0 (CPU) and the project into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check torch==2.13.0
  "$venv/bin/pip" install --quiet --disable-pip-version-check -e "$root[ros,test]"
  echo "$want" > "$stamp"
fi
