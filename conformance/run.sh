#!/usr/bin/env bash
# WebSocket conformance: runs the Autobahn test suite's fuzzing client (`wstest -m fuzzingclient`)
# against wsu's real accept path in echo mode (tests/src/bin/autobahn_echo.rs), then compares the
# results with conformance/expected.json (conformance/compare.py). See conformance/README.md.
#
# Autobahn is Python 2 only: it needs a CPython 2.7 interpreter ($WSU_PYTHON27 if set, else
# python2.7, python2, pyenv's ~/.pyenv/versions/2.7*). It installs the suite once into a
# virtualenv (default ~/.cache/wsu-autobahn, or $WSU_AUTOBAHN_VENV), reused by later runs.
# Without Python 2.7, or when the suite cannot be installed: with CI set (.ci/run sets CI=true)
# the run FAILS; locally it is skipped with a "SKIPPED: ..." banner and exits 0 (.ci/lib.sh).
#
# Usage: conformance/run.sh [--update]
#   --update    rewrite conformance/expected.json with this run's results (review the diff!)
# Environment:
#   WSU_PYTHON27        the Python 2.7 interpreter to use, and only it (default: searched for)
#   CI                  set (and not "0"/"false"): a missing tool fails the run instead of skipping
#   WSU_AUTOBAHN_VENV   where to install the suite
#   WSU_AUTOBAHN_BIN    a prebuilt autobahn_echo binary (default: built with cargo)
#   WSU_AUTOBAHN_CASES  a JSON list of case patterns to run (default: every case, ["*"])
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh

UPDATE=()
if [[ "${1:-}" == "--update" ]]; then
    UPDATE=(--update)
fi

# ---- a Python 2.7 interpreter ----------------------------------------------------------------
is_py27() {
    [[ -n "$1" ]] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' \
        >/dev/null 2>&1
}

PY27=""
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
if [[ -n "${WSU_PYTHON27:-}" ]]; then
    # Given explicitly: that interpreter or none.
    candidates=("$WSU_PYTHON27")
    looked="\$WSU_PYTHON27=$WSU_PYTHON27"
else
    candidates=(python2.7 python2 /usr/bin/python2.7 /usr/local/bin/python2.7)
    # pyenv installs (its shims only work when the version is selected, so look at them
    # directly).
    for dir in "$pyenv_root"/versions/2.7*/bin; do
        [[ -d "$dir" ]] && candidates+=("$dir/python2.7")
    done
    looked="python2.7, python2, /usr/bin/python2.7, /usr/local/bin/python2.7, $pyenv_root/versions/2.7*"
fi
for candidate in "${candidates[@]}"; do
    if is_py27 "$candidate"; then
        PY27="$(command -v "$candidate")"
        break
    fi
done
if [[ -z "$PY27" ]]; then
    wsu_skip_or_fail "conformance" "Autobahn needs Python 2.7, not found (looked for $looked)" \
        "pyenv install 2.7.18 (Debian has no python2.7 package), or WSU_PYTHON27=/path/to/python2.7"
fi
echo "conformance: Python 2.7 at $PY27"

# ---- the suite, installed once ---------------------------------------------------------------
VENV="${WSU_AUTOBAHN_VENV:-$HOME/.cache/wsu-autobahn}"
WSTEST="$VENV/py27/bin/wstest"
if [[ ! -x "$WSTEST" ]]; then
    echo "conformance: installing autobahntestsuite 25.10.1 into $VENV (once)"
    rm -rf "$VENV"
    if ! {
        python3 -m venv "$VENV/boot" &&
            "$VENV/boot/bin/pip" install --quiet virtualenv==20.21.1 &&
            "$VENV/boot/bin/virtualenv" --quiet -p "$PY27" "$VENV/py27" &&
            "$VENV/py27/bin/pip" install --quiet --no-python-version-warning \
                autobahntestsuite==25.10.1
    } >"${TMPDIR:-/tmp}/wsu-autobahn-install.log" 2>&1; then
        tail -n 20 "${TMPDIR:-/tmp}/wsu-autobahn-install.log" || true
        rm -rf "$VENV"
        wsu_skip_or_fail "conformance" \
            "Autobahn (autobahntestsuite 25.10.1) could not be installed for $PY27 (log above)" \
            "needs python3 -m venv and access to PyPI"
    fi
fi

# ---- the echo server -------------------------------------------------------------------------
BIN="${WSU_AUTOBAHN_BIN:-}"
if [[ -z "$BIN" ]]; then
    # The dev profile: `cargo test --workspace` has built it already in CI, and the whole suite
    # takes about 25 s with it (20 s in release).
    cargo build --quiet -p wsu-tests --bin autobahn_echo
    BIN="$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/autobahn_echo"
fi
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/wsu-autobahn.XXXXXX")"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" "$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    grep -q '^listening on' "$WORK/server.log" && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        cat "$WORK/server.log"
        echo "conformance: the echo server did not start" >&2
        exit 1
    fi
    sleep 0.1
done
grep -q '^listening on' "$WORK/server.log" || {
    echo "conformance: the echo server did not start within 10 s" >&2
    exit 1
}

# ---- the fuzzing client ----------------------------------------------------------------------
CASES="${WSU_AUTOBAHN_CASES:-[\"*\"]}"
cat >"$WORK/fuzzingclient.json" <<EOF
{
  "outdir": "$WORK/reports",
  "servers": [{ "agent": "wsu", "url": "ws://127.0.0.1:$PORT/ws" }],
  "cases": $CASES,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
echo "conformance: wstest -m fuzzingclient against ws://127.0.0.1:$PORT/ws (cases $CASES)"
start=$SECONDS
(cd "$WORK" && "$WSTEST" -m fuzzingclient -s "$WORK/fuzzingclient.json") >"$WORK/wstest.log" 2>&1 || {
    tail -n 30 "$WORK/wstest.log"
    echo "conformance: wstest failed" >&2
    exit 1
}
echo "conformance: wstest finished in $((SECONDS - start)) s"
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    cat "$WORK/server.log"
    echo "conformance: the echo server died during the run" >&2
    exit 1
fi

FLAGS=("${UPDATE[@]}")
if [[ -n "${WSU_AUTOBAHN_CASES:-}" ]]; then
    FLAGS+=(--partial)
fi
python3 conformance/compare.py "${FLAGS[@]}" conformance/expected.json "$WORK/reports/index.json"
