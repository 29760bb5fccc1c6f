# Sourced by the other scripts: make .venv in the repository root (if absent), install the
# project into it (again when pyproject.toml changes) and activate it.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "Creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
STAMP=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
    echo "Installing mnms_groupdistil and its dependencies into .venv (first run takes a few minutes)"
    if ! .venv/bin/python -m pip install -e ".[test]" > .venv/install.log 2>&1 \
        || ! .venv/bin/python -c "import mnms_groupdistil, monai, ignite, nibabel, torchvision"; then
        tail -n 40 .venv/install.log >&2
        echo "installation into .venv failed: see .venv/install.log" >&2
        exit 1
    fi
    rm -f .venv/.installed-*
    touch "$STAMP"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
