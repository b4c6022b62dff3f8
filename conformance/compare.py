#!/usr/bin/env python3
"""Compare an Autobahn fuzzingclient report (reports/index.json) with conformance/expected.json.

Usage: compare.py [--update] [--partial] EXPECTED INDEX

For every case, the outcome is its `behavior` (the protocol verdict: OK, NON-STRICT,
INFORMATIONAL, UNIMPLEMENTED, FAILED, ...), its `behaviorClose` (the closing handshake verdict)
and the close code the server sent (`remoteCloseCode`). Durations are ignored. Exits 1 when a
case differs, is missing (unless --partial: only some cases were run) or is unexpected.
--update rewrites EXPECTED's `cases` and `summary` from INDEX, keeping its other keys.
"""

import json
import sys
from collections import Counter

AGENT = "wsu"
FIELDS = ("behavior", "behaviorClose", "remoteCloseCode")


def case_key(case):
    return tuple(int(part) for part in case.split("."))


def outcomes(index):
    with open(index) as f:
        report = json.load(f)
    if AGENT not in report:
        sys.exit("compare: no results for agent %r in %s" % (AGENT, index))
    return {
        case: {field: result.get(field) for field in FIELDS}
        for case, result in report[AGENT].items()
    }


def summary(cases):
    counts = Counter(outcome["behavior"] for outcome in cases.values())
    return dict(sorted(counts.items()))


def main(argv):
    flags = {arg for arg in argv if arg.startswith("--")}
    paths = [arg for arg in argv if not arg.startswith("--")]
    unknown = flags - {"--update", "--partial"}
    if unknown or len(paths) != 2:
        sys.exit(__doc__)
    expected_path, index_path = paths
    got = outcomes(index_path)

    if "--update" in flags:
        try:
            with open(expected_path) as f:
                expected = json.load(f)
        except FileNotFoundError:
            expected = {}
        expected["summary"] = summary(got)
        expected["cases"] = {case: got[case] for case in sorted(got, key=case_key)}
        with open(expected_path, "w") as f:
            json.dump(expected, f, indent=2)
            f.write("\n")
        print("compare: wrote %d cases to %s: %s" % (len(got), expected_path, summary(got)))
        return 0

    with open(expected_path) as f:
        expected = json.load(f)["cases"]
    problems = []
    for case in sorted(set(expected) | set(got), key=case_key):
        if case not in got:
            if "--partial" not in flags:
                problems.append("%s: expected %s, not run" % (case, expected[case]))
        elif case not in expected:
            problems.append("%s: not in the expected results, got %s" % (case, got[case]))
        elif got[case] != expected[case]:
            problems.append("%s: expected %s, got %s" % (case, expected[case], got[case]))
    print("conformance: %d cases run: %s" % (len(got), summary(got)))
    if problems:
        for problem in problems:
            print("  " + problem)
        print(
            "conformance: FAILED: %d cases differ from %s (a regression, or update the file with"
            " `conformance/run.sh --update` and review the diff)" % (len(problems), expected_path)
        )
        return 1
    print("conformance: all %d cases as expected (%s)" % (len(got), expected_path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
