#!/usr/bin/env bash
# A time-boxed run of every fuzz target (cargo-fuzz, libFuzzer, on stable with `-s none`),
# starting from the committed corpus and the saved crashes. Fails on any crash, timeout or OOM.
# See fuzz/README.md.
#
# Usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 60
#   TARGET...           default: every target `cargo fuzz list` reports (the `[[bin]]` entries
#                       of fuzz/Cargo.toml), so a new target is run without editing this script
# New corpus entries go to a temporary directory (the committed corpus stays as it is); a crash
# is saved under fuzz/artifacts/TARGET/ as libFuzzer reports it.
#
# cargo-fuzz is installed when missing (`cargo install cargo-fuzz --locked`, 0.13.x). If that
# fails: with CI set (.ci/run sets CI=true) the run FAILS; locally it is skipped with a banner
# (see .ci/lib.sh).
set -euo pipefail
cd "$(dirname "$0")"
source ../.ci/lib.sh

SECONDS_PER_TARGET="${1:-60}"
shift || true
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || [[ "$SECONDS_PER_TARGET" -eq 0 ]]; then
    echo "fuzz: SECONDS_PER_TARGET must be a positive integer, not '$SECONDS_PER_TARGET'" >&2
    exit 2
fi

# The largest input per target: past the 64 KiB message limit is pointless for the decoder (the
# server never hands it more), past the 16 KiB head limit for the handshake. Any other target
# (the registry, a stateful driver of a few thousand operations, and targets added later) gets
# libFuzzer's own default, 4096 bytes; give a new target a line here when it needs more.
max_len() {
    case "$1" in
        decode) echo 65536 ;;
        handshake) echo 20000 ;;
        *) echo 4096 ;;
    esac
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is missing; installing it (cargo install cargo-fuzz --locked, 0.13.x)"
    log="${TMPDIR:-/tmp}/wsu-cargo-fuzz-install.log"
    if ! cargo install cargo-fuzz --locked --version '^0.13' >"$log" 2>&1 ||
        ! cargo fuzz --version >/dev/null 2>&1; then
        tail -n 20 "$log" || true
        wsu_skip_or_fail "fuzzing" "cargo-fuzz is missing and could not be installed (log above)" \
            "cargo install cargo-fuzz --locked --version '^0.13'"
    fi
fi
echo "fuzz: $(cargo fuzz --version)"

mapfile -t ALL_TARGETS < <(cargo fuzz list)
if [[ ${#ALL_TARGETS[@]} -eq 0 ]]; then
    echo "fuzz: FAILED: cargo fuzz list reports no target (fuzz/Cargo.toml)" >&2
    exit 1
fi
TARGETS=("$@")
if [[ ${#TARGETS[@]} -eq 0 ]]; then
    TARGETS=("${ALL_TARGETS[@]}")
fi
for target in "${TARGETS[@]}"; do
    if ! printf '%s\n' "${ALL_TARGETS[@]}" | grep -qxF -- "$target"; then
        echo "fuzz: unknown target '$target' (targets: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done
echo "fuzz: targets: ${TARGETS[*]}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/wsu-fuzz.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
for target in "${TARGETS[@]}"; do
    if ! cargo fuzz build -s none "$target" >"$WORK/build.log" 2>&1; then
        tail -n 40 "$WORK/build.log"
        echo "fuzz: FAILED: building $target failed" >&2
        exit 1
    fi
done
for target in "${TARGETS[@]}"; do
    mkdir -p "$WORK/$target"
    seeds=()
    [[ -d "corpus/$target" ]] && seeds+=("corpus/$target")
    [[ -d "artifacts/$target" ]] && seeds+=("artifacts/$target")
    if [[ ${#seeds[@]} -eq 0 ]]; then
        echo "fuzz: $target has no committed corpus (fuzz/corpus/$target/); starting from nothing"
    fi
    echo "fuzz: $target for ${SECONDS_PER_TARGET} s, max_len $(max_len "$target")" \
        "(corpus: ${seeds[*]:-none})"
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
