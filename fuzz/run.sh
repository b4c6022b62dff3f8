#!/usr/bin/env bash
# A time-boxed run of every fuzz target (cargo-fuzz, libFuzzer, on stable with `-s none`),
# starting from the committed corpus and the saved crashes. Fails on any crash, timeout or OOM.
# See fuzz/README.md.
#
# Usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60 s, every target)
# New corpus entries go to a temporary directory (the committed corpus stays as it is); a crash
# is saved under fuzz/artifacts/TARGET/ as libFuzzer reports it.
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_PER_TARGET="${1:-60}"
shift || true
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
    TARGETS=(decode handshake registry)
fi

# The largest input per target: past the 64 KiB message limit is pointless for the decoder (the
# server never hands it more), past the 16 KiB head limit for the handshake, and a few thousand
# operations for the registry.
max_len() {
    case "$1" in
        decode) echo 65536 ;;
        handshake) echo 20000 ;;
        *) echo 4096 ;;
    esac
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is missing; installing it (cargo install cargo-fuzz --locked, 0.13.x)"
    if ! cargo install cargo-fuzz --locked --version '^0.13' >/tmp/wsu-cargo-fuzz-install.log 2>&1; then
        tail -n 20 /tmp/wsu-cargo-fuzz-install.log || true
        echo "SKIPPED: fuzzing: cargo-fuzz could not be installed (see the log above)"
        exit 0
    fi
fi
echo "fuzz: $(cargo fuzz --version)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/wsu-fuzz.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
for target in "${TARGETS[@]}"; do
    if ! cargo fuzz build -s none "$target" >"$WORK/build.log" 2>&1; then
        tail -n 40 "$WORK/build.log"
        echo "fuzz: building $target failed" >&2
        exit 1
    fi
done
for target in "${TARGETS[@]}"; do
    mkdir -p "$WORK/$target"
    seeds=("corpus/$target")
    [[ -d "artifacts/$target" ]] && seeds+=("artifacts/$target")
    echo "fuzz: $target for ${SECONDS_PER_TARGET} s (corpus: ${seeds[*]})"
    if ! cargo fuzz run -s none "$target" "$WORK/$target" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len="$(max_len "$target")" \
        -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 >"$WORK/$target.log" 2>&1; then
        grep -v '^#[0-9]' "$WORK/$target.log" | tail -n 60
        echo "fuzz: FAILED: $target crashed; the input is saved under fuzz/artifacts/$target/" >&2
        exit 1
    fi
    # The final line of libFuzzer's progress and its final stats.
    grep -E '^#[0-9]+[[:space:]]+DONE' "$WORK/$target.log" | tail -n 1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' \
        "$WORK/$target.log" | tr '\n' ' ' || true
    echo
done
echo "fuzz: no crash in ${#TARGETS[@]} targets × ${SECONDS_PER_TARGET} s"
