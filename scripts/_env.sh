# Sourced by scripts/serve and scripts/test: leaves the repo root as cwd and .venv/bin first on PATH,
# with this checkout's dependencies installed.
#
#   ensure_env dev    # runtime + dev extra (tests, linters)
#   ensure_env        # runtime only
#
# The install is skipped when a stamp in .venv matches pyproject.toml's hash, so a second run costs
# a fraction of a second. Knobs (environment):
#   BNSERVE_VENV      where the environment lives (default: <repo>/.venv)
#   BNSERVE_PYTHON    interpreter used to create it (default: python3.11, else python3 if >= 3.11)
# A torch==2.13.0 already in the environment (say a CUDA build from PyTorch's index) is kept.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${BNSERVE_VENV:-$ROOT/.venv}
cd "$ROOT"

_say() { printf '[bnserve] %s\n' "$*" >&2; }

_find_python() {
    local candidate
    for candidate in ${BNSERVE_PYTHON:-} python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    _say "need Python >= 3.11 (tried: ${BNSERVE_PYTHON:-} python3.11 python3); install it or set BNSERVE_PYTHON"
    return 1
}

_install_key() {
    # Changes whenever what we would install changes.
    local extra=$1
    { cat "$ROOT/pyproject.toml"; echo "extra=$extra"; } |
        "$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}

_venv_usable() {
    "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

_activate() { export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV"; }

ensure_env() {
    local extra=${1:-runtime}
    if ! _venv_usable; then
        local python
        python=$(_find_python)
        _say "creating $VENV with $python ($("$python" --version 2>&1))"
        "$python" -m venv --clear "$VENV"
    fi

    # A dev install also satisfies a runtime-only request.
    local installed
    for installed in "$extra" dev; do
        if [ "$(cat "$VENV/.bnserve-installed-$installed" 2>/dev/null)" = "$(_install_key "$installed")" ]; then
            _activate
            return 0
        fi
    done

    local target=.
    [ "$extra" = runtime ] || target=".[$extra]"
    _say "installing $target into $VENV (the first time takes a few minutes)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$target"

    rm -f "$VENV"/.bnserve-installed-*
    _install_key "$extra" >"$VENV/.bnserve-installed-$extra"
    _activate
}
