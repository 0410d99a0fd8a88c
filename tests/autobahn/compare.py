"""Compares an Autobahn index.json with the expected verdicts.

Fails on any FAILED or UNIMPLEMENTED verdict, on any case whose behavior or close behavior differs
from the expected file, and on cases missing from either side. Prints a 'N passed, N failed' line.
With --update, rewrites the expected file from the report instead (after the same FAILED check).
"""
import json
import sys

BAD = {"FAILED", "UNIMPLEMENTED"}


def verdicts(index_path):
    with open(index_path) as f:
        index = json.load(f)
    if len(index) != 1:
        sys.exit(f"autobahn: expected one agent in {index_path}, found {list(index)}")
    (cases,) = index.values()
    return {
        case: {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
        for case, r in cases.items()
    }


def case_key(case):
    return [int(p) for p in case.split(".")]


def main():
    report, expected_path = sys.argv[1], sys.argv[2]
    update = len(sys.argv) > 3 and sys.argv[3] == "--update"
    got = verdicts(report)
    bad = sorted((c for c, v in got.items() if v["behavior"] in BAD or v["behaviorClose"] in BAD), key=case_key)
    if update:
        if bad:
            sys.exit(f"autobahn: refusing to record failing cases: {bad}")
        ordered = {c: got[c] for c in sorted(got, key=case_key)}
        with open(expected_path, "w") as f:
            json.dump(ordered, f, indent=1)
            f.write("\n")
        print(f"autobahn: recorded {len(ordered)} cases in {expected_path}")
        return
    with open(expected_path) as f:
        expected = json.load(f)
    failures = []
    for case in sorted(set(got) | set(expected), key=case_key):
        if case not in got:
            failures.append(f"{case}: not run")
        elif case not in expected:
            failures.append(f"{case}: not in expected results (got {got[case]})")
        elif case in bad:
            failures.append(f"{case}: {got[case]}")
        elif got[case] != expected[case]:
            failures.append(f"{case}: expected {expected[case]}, got {got[case]}")
    counts = {}
    for v in got.values():
        counts[v["behavior"]] = counts.get(v["behavior"], 0) + 1
    print("autobahn: behaviors " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    for line in failures:
        print("autobahn: " + line)
    total = len(set(got) | set(expected))
    print(f"autobahn: {total - len(failures)} passed, {len(failures)} failed")
    if failures:
        print("autobahn: either a regression, or update tests/autobahn/expected-results.json "
              "with tests/autobahn/run.sh --update after reviewing the report in target/autobahn-report")
        sys.exit(1)


main()
