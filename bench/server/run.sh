#!/usr/bin/env bash
# Run the runtime benchmark (threadloom dev/serve/worker vs LangGraph's dev server) in its own
# virtualenv: bench/server/run.sh [server_bench.py options]
#
# The first run creates bench/.venv-server with langgraph-cli[inmem] (LangGraph's dev server,
# langgraph-api 0.16.7), langgraph-sdk 0.4.14 (the client both servers are driven by) and
# threadloom in editable mode with its server and postgres extras.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${BENCH_SERVER_VENV:-$ROOT/bench/.venv-server}"
REQS=("langgraph-cli[inmem]" "langgraph-api==0.16.7" "langgraph-sdk==0.4.14" "langgraph==1.2.22")
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
STAMP="$VENV/.stamp"
WANT="${REQS[*]} $(cksum <"$ROOT/pyproject.toml")"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQS[@]}" \
        -e "$ROOT[server,postgres]" >&2
    printf '%s' "$WANT" >"$STAMP"
fi
exec "$VENV/bin/python" "$HERE/server_bench.py" "$@"
