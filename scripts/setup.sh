#!/usr/bin/env bash
# Set up mdp-opt on a fresh machine: a virtual environment in ./.venv with the library, every solver
# backend, the PyTorch adapter (CPU) and the test tools. Safe to run again.
#   SKIP_MINDTPY=1     skip the mindtpy solver stack (it needs root: apt-get installs libamplsolver-dev);
#                      the mindtpy tests then skip, saying why
#   TORCH_REQUIREMENT  torch to install first (default torch==2.13.0, the CPU build on this machine's disk;
#                      a plain "torch" from PyPI would pull a multi-GB CUDA build)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install "${TORCH_REQUIREMENT:-torch==2.13.0}"
"${pip[@]}" install -e ".[all]"
if [ "${SKIP_MINDTPY:-0}" = 1 ]; then
  echo "SKIP_MINDTPY=1: the mindtpy backend's solver stack is not set up"
else
  .venv/bin/mdp-opt setup-mindtpy || { echo "setup-mindtpy failed (it needs root for apt-get); rerun with SKIP_MINDTPY=1 to go without the mindtpy backend" >&2; exit 1; }
fi
echo "mdp-opt set up in $(pwd)/.venv"
