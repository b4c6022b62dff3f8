# Sourced by the scripts .ci/run calls (fuzz/run.sh, conformance/run.sh, tests/browser/run.sh):
# what a step does when a tool it needs is missing and cannot be installed.
#
# - CI mode (CI set to anything but "", "0" or "false"; .ci/run sets CI=${CI:-true}): the step
#   FAILS. A CI run never skips a step and passes.
# - Locally (CI unset, empty, "0" or "false"): the step is skipped, with a banner saying that it
#   did not run and that it would fail in CI; the script exits 0.
#
# The Rust side (the benchmark smoke run, bench/src/orchestrate.rs) follows the same rule.

# Whether this is a CI run.
wsu_in_ci() {
    case "${CI:-}" in
        "" | 0 | false) return 1 ;;
        *) return 0 ;;
    esac
}

# wsu_skip_or_fail STEP REASON [HOW_TO_FIX]: in CI, print "FAILED: STEP: REASON" and exit 1;
# locally, print "SKIPPED: STEP: REASON" in a banner and exit 0. Never returns.
wsu_skip_or_fail() {
    local step="$1" reason="$2" fix="${3:-}"
    if wsu_in_ci; then
        {
            echo "FAILED: $step: $reason"
            [[ -n "$fix" ]] && echo "  fix: $fix"
            echo "  (CI=${CI}: a CI run installs what a step needs or fails; it never skips." \
                "Run with CI unset to skip this step locally.)"
        } >&2
        exit 1
    fi
    local rule="************************************************************************"
    echo "$rule"
    echo "SKIPPED: $step: $reason"
    [[ -n "$fix" ]] && echo "  fix: $fix"
    echo "  THIS STEP DID NOT RUN. CI is not set, so it exits 0; with CI=true it fails."
    echo "$rule"
    exit 0
}
