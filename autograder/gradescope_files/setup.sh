#!/usr/bin/env bash
# Gradescope runs this once, as root in /autograder/source, when it builds the
# image that grades __ASSIGNMENT__: a virtual environment at /autograder/venv with
# Python >= 3.11 and the grader's pinned dependencies. Gradescope has no GPU, so
# torch comes from PyTorch's CPU index (the CUDA wheel on PyPI is gigabytes).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${AUTOGRADER_ROOT:-/autograder}/venv"

apt-get update
# bubblewrap isolates student code where the container allows it; the grader
# checks that it works and otherwise falls back to resource limits
apt-get install -y --no-install-recommends python3 python3-venv bubblewrap
PYTHON=python3
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    # Ubuntu 22.04's python3 is 3.10; the pinned numpy and IPython need 3.11
    apt-get install -y --no-install-recommends python3.11 python3.11-venv
    PYTHON=python3.11
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --upgrade pip
"$VENV/bin/python" -m pip install __TORCH_REQUIREMENT__ --index-url https://download.pytorch.org/whl/cpu
"$VENV/bin/python" -m pip install -r "$SOURCE/requirements.txt"
