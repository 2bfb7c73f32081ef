"""Parses a /metrics exposition with the real prometheus_client parsers and prints JSON.

    parse_metrics.py text|openmetrics < exposition

Output: {"samples": [[name, labels, value, exemplar_or_null], ...]}; a parse error exits
non-zero with the parser's message.
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families as text_families


def main():
    kind = sys.argv[1]
    text = sys.stdin.read()
    parse = om_families if kind == "openmetrics" else text_families
    out = []
    for family in parse(text):
        for s in family.samples:
            ex = None
            if getattr(s, "exemplar", None):
                ex = {"labels": s.exemplar.labels, "value": s.exemplar.value}
            out.append([s.name, s.labels, s.value, ex])
    json.dump({"samples": out}, sys.stdout)


if __name__ == "__main__":
    main()
