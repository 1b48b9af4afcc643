#!/usr/bin/env bash
# Run the threadloom-vs-LangGraph benchmark in its own virtualenv.
#
#   bench/run.sh [bench.py options]      e.g.  bench/run.sh --workloads seed_loop --reps 5
#
# The first run creates bench/.venv and installs the reference engine (LangGraph and its
# savers) plus threadloom itself in editable mode; later runs reuse it. LangGraph lives only in
# this venv: it is never a dependency of the threadloom package.
#
# Environment:
#   BENCH_VENV       venv directory (default: bench/.venv)
#   BENCH_PYTHON     interpreter used to create the venv (default: python3.11, else python3)
#   BENCH_REINSTALL  set to 1 to reinstall every requirement into the existing venv
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BENCH_DIR/.." && pwd)"
VENV="${BENCH_VENV:-$BENCH_DIR/.venv}"

# The reference side. Changing this list changes the stamp and triggers a reinstall.
REQUIREMENTS=(
    "langgraph==1.2.22"
    "langgraph-checkpoint-sqlite"
    "langgraph-checkpoint-postgres"
    "psycopg[binary]"
    "psycopg-pool"
)
STAMP="$VENV/.bench-requirements"
WANTED_STAMP="$(printf '%s\n' "${REQUIREMENTS[@]}")"

log() { printf 'bench/run.sh: %s\n' "$*" >&2; }

pick_python() {
    if [[ -n "${BENCH_PYTHON:-}" ]]; then
        echo "$BENCH_PYTHON"
    elif command -v python3.11 >/dev/null 2>&1; then
        echo python3.11
    else
        echo python3
    fi
}

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    "$(pick_python)" -m venv "$VENV"
fi
PY="$VENV/bin/python"

if [[ "${BENCH_REINSTALL:-0}" == 1 || ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANTED_STAMP" ]]; then
    log "installing reference engine: ${REQUIREMENTS[*]}"
    rm -f "$STAMP"
    "$PY" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}" >&2
    printf '%s\n' "$WANTED_STAMP" >"$STAMP"
fi

# threadloom is installed editable, so source changes need no reinstall. Reinstall only when it
# is missing, points at another checkout (the repo moved, the venv was copied), or its
# pyproject.toml changed (new dependencies, entry points).
TL_STAMP="$VENV/.bench-threadloom"
WANTED_TL_STAMP="$REPO_ROOT $(cksum <"$REPO_ROOT/pyproject.toml")"
installed_root="$(
    "$PY" -I - <<'EOF' 2>/dev/null || true
import json, urllib.parse, urllib.request
from importlib.metadata import PackageNotFoundError, distribution
try:
    info = json.loads(distribution("threadloom").read_text("direct_url.json") or "{}")
except PackageNotFoundError:
    info = {}
if info.get("dir_info", {}).get("editable"):
    print(urllib.request.url2pathname(urllib.parse.urlparse(info["url"]).path))
EOF
)"
if [[ "${BENCH_REINSTALL:-0}" == 1 || "$installed_root" != "$REPO_ROOT" || ! -f "$TL_STAMP" ||
      "$(cat "$TL_STAMP")" != "$WANTED_TL_STAMP" ]]; then
    log "installing threadloom (editable) from $REPO_ROOT"
    rm -f "$TL_STAMP"
    if "$PY" -m pip install --quiet --disable-pip-version-check -e "$REPO_ROOT" >&2; then
        printf '%s\n' "$WANTED_TL_STAMP" >"$TL_STAMP"
    else
        # The engine may be mid-rewrite; the harness still runs and reports threadloom's error.
        log "WARNING: editable install of threadloom failed; using PYTHONPATH=$REPO_ROOT"
        export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi

exec "$PY" "$BENCH_DIR/bench.py" "$@"
