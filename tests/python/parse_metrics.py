"""Parses a Prometheus text exposition from stdin with the reference parser
(prometheus_client.parser) and prints every sample as JSON lines: [name, labels, value].
Exits non-zero (with the parser's error) when the text does not parse."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    families = 0
    for family in text_string_to_metric_families(text):
        families += 1
        for sample in family.samples:
            print(json.dumps([sample.name, sample.labels, sample.value]))
    print(json.dumps(["#families", {}, families]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
