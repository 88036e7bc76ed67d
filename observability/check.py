"""Checks the shipped dashboards: generated output matches, JSON validates against the
Grafana dashboard schema, and every PromQL expression parses (through promtool).

    python observability/check.py --schema DASHBOARD_SCHEMA.json [--promtool promtool]

The schema is the `Dashboard` type of npm `@grafana/schema`, turned into JSON Schema by
`ts-json-schema-generator` (see mk/observability.mk). There is no PromQL parser for
Python here and no Grafana server, so each panel query (with its template variables
replaced by plausible values) becomes a recording rule in a generated rules file that
`promtool check rules` parses.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import jsonschema

HERE = Path(__file__).resolve().parent
DASHBOARDS = HERE / "dashboards"
#: What Grafana substitutes for each template variable, close enough for parsing.
VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": ".*"}


def expressions(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """(location, expr) for every query in a dashboard, rows' nested panels included."""
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield where, node["expr"]
        for key, value in node.items():
            yield from expressions(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from expressions(value, f"{where}[{i}]")


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr.replace("$labels", ""), f"unknown variable in {expr!r}"
    return expr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schema", required=True, type=Path)
    parser.add_argument("--promtool", default="promtool")
    args = parser.parse_args()

    failures: list[str] = []
    generated = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate.py"), "--check"], text=True, capture_output=True
    )
    if generated.returncode != 0:
        failures.append(generated.stderr.strip())

    schema = json.loads(args.schema.read_text())
    validator = jsonschema.Draft7Validator(schema)
    rules: list[dict[str, str]] = []
    files = sorted(DASHBOARDS.glob("*.json"))
    if not files:
        failures.append(f"no dashboards in {DASHBOARDS}")
    for path in files:
        dashboard = json.loads(path.read_text())
        for error in validator.iter_errors(dashboard):
            location = "/".join(str(p) for p in error.absolute_path)
            failures.append(f"{path.name}: {location}: {error.message}")
        uids = [p.get("id") for p in dashboard.get("panels", [])]
        if len(uids) != len(set(uids)):
            failures.append(f"{path.name}: panel ids repeat")
        for where, expr in expressions(dashboard.get("panels", []), "panels"):
            rules.append(
                {"record": f"dashboard:{path.stem}:expr{len(rules)}", "expr": substitute(expr), "where": f"{path.name} {where}"}
            )

    with tempfile.TemporaryDirectory() as tmp:
        rules_file = Path(tmp) / "dashboard-queries.rules.yml"
        # JSON is YAML: no YAML library needed to write the rules file.
        rules_file.write_text(
            json.dumps(
                {"groups": [{"name": "dashboard-queries", "rules": [{"record": r["record"], "expr": r["expr"]} for r in rules]}]},
                indent=1,
            )
        )
        checked = subprocess.run([args.promtool, "check", "rules", str(rules_file)], text=True, capture_output=True)
        if checked.returncode != 0:
            output = checked.stdout + checked.stderr
            # Name the dashboard and panel behind each rule promtool complains about.
            for r in rules:
                if f'"{r["record"]}"' in output:
                    output += f"\n  {r['record']} is {r['where']}: {r['expr']}"
            failures.append("promtool check rules on the dashboard queries failed:\n" + output)

    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1
    print(f"{len(files)} dashboards valid against the Grafana schema; {len(rules)} queries parse")
    return 0


if __name__ == "__main__":
    sys.exit(main())
