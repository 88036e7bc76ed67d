"""Generates the Grafana dashboards in this folder (one overview, one per service).

    python observability/dashboards/generate.py          # rewrite the JSON files
    python observability/dashboards/generate.py --check  # fail if they differ

The JSON files are what ships (the chart and Grafana's provisioning read them); this
script is their source, so panels stay consistent and the check in `make
test-observability` fails when someone edits one side only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

Panel = dict[str, Any]


def target(expr: str, legend: str = "", ref: str = "A") -> dict[str, Any]:
    return {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend}


def panel(
    title: str,
    exprs: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    description: str = "",
) -> Panel:
    refs = "ABCDEFGHIJ"
    p: Panel = {
        "type": kind,
        "title": title,
        "datasource": DS,
        "targets": [target(e, legend, refs[i]) for i, (e, legend) in enumerate(exprs)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    if description:
        p["description"] = description
    return p


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout(panels: list[Panel]) -> list[Panel]:
    """Two panels per line (stats four), rows across; ids and grid positions in order."""
    y, x, out = 0, 0, []
    for i, p in enumerate(panels, start=1):
        p = dict(p, id=i)
        if p["type"] == "row":
            if x:
                y, x = y + 8, 0
            p["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
        else:
            w, h = (6, 4) if p["type"] == "stat" else (12, 8)
            if x + w > 24:
                y, x = y + h, 0
            p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
            x += w
            if x >= 24:
                y, x = y + h, 0
        out.append(p)
    return out


def dashboard(uid: str, title: str, job: str, panels: list[Panel]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["execbridge"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []},
        "links": [
            {
                "title": "execbridge",
                "type": "dashboards",
                "tags": ["execbridge"],
                "asDropdown": True,
                "icon": "external link",
                "includeVars": False,
                "keepTime": True,
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "default", "value": "default"},
                    "hide": 0,
                },
                {
                    "name": "job",
                    "label": "Job (regex)",
                    "type": "custom",
                    "query": job,
                    "current": {"text": job, "value": job},
                    "options": [{"text": job, "value": job, "selected": True}],
                    "hide": 0,
                },
            ]
        },
        "panels": layout(panels),
    }


def rpc_panels(selector: str) -> list[Panel]:
    """Calls, errors and latency by method, for the services matching `selector`."""
    h = "execbridge_grpc_server_handling_seconds"
    return [
        row("gRPC calls"),
        panel(
            "Calls per second by method and code",
            [(f"sum by (grpc_method, grpc_code) (rate({h}_count{{{selector}}}[{RATE}]))", "{{grpc_method}} {{grpc_code}}")],
            unit="reqps",
        ),
        panel(
            "Server-side error ratio by method",
            [(
                f'sum by (grpc_method) (rate({h}_count{{{selector}, grpc_code=~"UNKNOWN|INTERNAL|UNAVAILABLE|DATA_LOSS|DEADLINE_EXCEEDED"}}[{RATE}]))'
                f" / sum by (grpc_method) (rate({h}_count{{{selector}}}[{RATE}]))",
                "{{grpc_method}}",
            )],
            unit="percentunit",
        ),
        panel(
            "p50 / p99 latency by method (unary; streams show their duration)",
            [
                (f"histogram_quantile(0.5, sum by (grpc_method, le) (rate({h}_bucket{{{selector}}}[{RATE}])))", "p50 {{grpc_method}}"),
                (f"histogram_quantile(0.99, sum by (grpc_method, le) (rate({h}_bucket{{{selector}}}[{RATE}])))", "p99 {{grpc_method}}"),
            ],
            unit="s",
        ),
        panel(
            "Calls in flight (started - finished)",
            [(
                f"sum by (grpc_method) (execbridge_grpc_server_started_total{{{selector}}})"
                f" - sum by (grpc_method) ({h}_count{{{selector}}})",
                "{{grpc_method}}",
            )],
        ),
    ]


def health_panels(selector: str) -> list[Panel]:
    return [
        row("Health"),
        panel("Ready", [(f"min by (instance) (execbridge_ready{{{selector}}})", "{{instance}}")], kind="stat"),
        panel("Scraped", [(f"min by (instance) (up{{{selector}}})", "{{instance}}")], kind="stat"),
        panel(
            "Certificate expiry",
            [(f"min by (instance, certificate) (execbridge_certificate_expiry_seconds{{{selector}}})", "{{instance}} {{certificate}}")],
            unit="s",
            kind="stat",
            description="Seconds left on each TLS certificate (native TLS mode only).",
        ),
    ]


def overview() -> dict[str, Any]:
    slo = "execbridge:trading_calls_slow:ratio_rate5m"
    return dashboard(
        "execbridge-overview",
        "execbridge / overview",
        ".*(gateway|executor|marketdata).*",
        [
            row("Service level"),
            panel("Ready instances by job", [('sum by (job) (execbridge_ready{job=~"$job"})', "{{job}}")], kind="stat"),
            panel("Trading calls slower than 250 ms (SLO: 1%)", [(f'{slo}{{job=~"$job"}}', "{{job}}")], unit="percentunit", kind="stat"),
            panel(
                "Orders per second",
                [(f'sum(rate(executor_orders_total{{job=~"$job", status="PENDING_NEW"}}[{RATE}]))', "new orders")],
                unit="reqps",
                kind="stat",
            ),
            panel(
                "Failed authentications (5m)",
                [('sum(increase(gateway_authentication_failures_total{job=~"$job"}[5m]))', "failures")],
                kind="stat",
            ),
            row("Traffic"),
            panel(
                "Calls per second by job",
                [(f'sum by (job) (rate(execbridge_grpc_server_handling_seconds_count{{job=~"$job"}}[{RATE}]))', "{{job}}")],
                unit="reqps",
            ),
            panel(
                "Server-side error ratio by job",
                [(f'execbridge:grpc_server_errors:ratio_rate5m{{job=~"$job"}}', "{{job}} {{grpc_service}}")],
                unit="percentunit",
            ),
            panel(
                "SubmitOrder p99 by job",
                [(
                    f'histogram_quantile(0.99, sum by (job, le) (rate(execbridge_grpc_server_handling_seconds_bucket{{job=~"$job", grpc_method="SubmitOrder"}}[{RATE}])))',
                    "{{job}}",
                )],
                unit="s",
            ),
            panel(
                "Orders by status",
                [(f'sum by (status) (rate(executor_orders_total{{job=~"$job"}}[{RATE}]))', "{{status}}")],
                unit="reqps",
            ),
            panel(
                "Market data subscribers and stale instruments",
                [
                    ('sum(marketdata_subscribers{job=~"$job"})', "subscribers"),
                    ('sum(marketdata_instruments{job=~"$job", status!="LIVE"})', "instruments not live"),
                ],
            ),
            panel(
                "Certificate expiry (lowest per job)",
                [('min by (job) (execbridge_certificate_expiry_seconds{job=~"$job"})', "{{job}}")],
                unit="s",
            ),
        ],
    )


def gateway() -> dict[str, Any]:
    sel = 'job=~"$job"'
    return dashboard(
        "execbridge-gateway",
        "execbridge / gateway",
        ".*gateway.*",
        health_panels(sel)
        + rpc_panels(sel)
        + [
            row("Admission"),
            panel(
                "Failed authentications by reason",
                [(f"sum by (reason) (rate(gateway_authentication_failures_total{{{sel}}}[{RATE}]))", "{{reason}}")],
                unit="reqps",
            ),
            panel(
                "Refusals by reason (rate limits, shedding, permissions)",
                [(f"sum by (reason) (rate(gateway_admission_refusals_total{{{sel}}}[{RATE}]))", "{{reason}}")],
                unit="reqps",
            ),
            panel(
                "Rate-limit rejections by RPC class",
                [(f"sum by (class) (rate(gateway_rate_limit_rejections_total{{{sel}}}[{RATE}]))", "{{class}}")],
                unit="reqps",
            ),
            panel(
                "Load shed (gateway full)",
                [(f'sum by (instance) (rate(gateway_admission_refusals_total{{{sel}, reason="OVERLOADED"}}[{RATE}]))', "{{instance}}")],
                unit="reqps",
            ),
        ],
    )


def executor() -> dict[str, Any]:
    sel = 'job=~"$job"'
    return dashboard(
        "execbridge-executor",
        "execbridge / executor",
        ".*executor.*",
        health_panels(sel)
        + rpc_panels(sel)
        + [
            row("Orders"),
            panel(
                "Order state changes by status and venue",
                [(f"sum by (status, venue) (rate(executor_orders_total{{{sel}}}[{RATE}]))", "{{status}} {{venue}}")],
                unit="reqps",
            ),
            panel(
                "Rejections by reason",
                [(f'sum by (reason) (rate(executor_orders_total{{{sel}, status="REJECTED"}}[{RATE}]))', "{{reason}}")],
                unit="reqps",
            ),
            panel(
                "Risk denials by reason",
                [(f"sum by (reason) (rate(executor_risk_denials_total{{{sel}}}[{RATE}]))", "{{reason}}")],
                unit="reqps",
            ),
            panel(
                "Fill ratio (filled / new)",
                [(
                    f'sum(rate(executor_orders_total{{{sel}, status="FILLED"}}[{RATE}]))'
                    f' / sum(rate(executor_orders_total{{{sel}, status="PENDING_NEW"}}[{RATE}]))',
                    "filled / submitted",
                )],
                unit="percentunit",
            ),
            row("Journal"),
            panel(
                "fsync latency p50 / p99 / max bucket",
                [
                    (f"histogram_quantile(0.5, sum by (le) (rate(executor_journal_fsync_seconds_bucket{{{sel}}}[{RATE}])))", "p50"),
                    (f"histogram_quantile(0.99, sum by (le) (rate(executor_journal_fsync_seconds_bucket{{{sel}}}[{RATE}])))", "p99"),
                    (f"histogram_quantile(1, sum by (le) (rate(executor_journal_fsync_seconds_bucket{{{sel}}}[{RATE}])))", "max"),
                ],
                unit="s",
            ),
            panel(
                "Group commits: records per fsync and queue",
                [
                    (
                        f"sum(rate(executor_journal_batch_records_sum{{{sel}}}[{RATE}])) / sum(rate(executor_journal_batch_records_count{{{sel}}}[{RATE}]))",
                        "records per commit",
                    ),
                    (f"sum by (instance) (executor_journal_queue_records{{{sel}}})", "queued {{instance}}"),
                ],
            ),
            panel(
                "Audit trail: queued, read back from the journal, failed writes",
                [
                    (f"sum by (instance) (executor_audit_queue_records{{{sel}}})", "queued {{instance}}"),
                    (
                        f"sum by (instance) (rate(executor_audit_read_back_records_total{{{sel}}}[{RATE}]))",
                        "read back/s {{instance}}",
                    ),
                    (
                        f"sum by (instance) (rate(executor_audit_write_failures_total{{{sel}}}[{RATE}]))",
                        "failed writes/s {{instance}}",
                    ),
                ],
            ),
            panel(
                "History held in memory: finished orders, forgotten client order ids",
                [
                    (f"sum by (instance) (executor_finished_orders_held{{{sel}}})", "finished orders {{instance}}"),
                    (
                        f"sum by (instance) (executor_forgotten_client_order_ids{{{sel}}})",
                        "forgotten ids {{instance}}",
                    ),
                ],
            ),
            panel(
                "Snapshots: time to write one, journal segments deleted, failures",
                [
                    (
                        f"histogram_quantile(0.99, sum by (le, instance) (rate(executor_snapshot_seconds_bucket{{{sel}}}[{RATE}])))",
                        "p99 seconds {{instance}}",
                    ),
                    (
                        f"sum by (instance) (increase(executor_journal_segments_deleted_total{{{sel}}}[1h]))",
                        "segments deleted/h {{instance}}",
                    ),
                    (
                        f"sum by (instance) (increase(executor_snapshot_failures_total{{{sel}}}[1h]))",
                        "failures/h {{instance}}",
                    ),
                ],
            ),
            row("Streams and market data"),
            panel(
                "Order-update subscribers",
                [(f"sum by (instance) (executor_order_update_subscribers{{{sel}}})", "{{instance}}")],
            ),
            panel(
                "Price feed reconnects",
                [(f"sum by (instance) (increase(executor_marketdata_reconnects_total{{{sel}}}[{RATE}]))", "{{instance}}")],
            ),
        ],
    )


def marketdata() -> dict[str, Any]:
    sel = 'job=~"$job"'
    return dashboard(
        "execbridge-marketdata",
        "execbridge / marketdata",
        ".*marketdata.*",
        health_panels(sel)
        + rpc_panels(sel)
        + [
            row("Feeds"),
            panel(
                "Instruments by status",
                [(f"sum by (venue, status) (marketdata_instruments{{{sel}}})", "{{venue}} {{status}}")],
            ),
            panel(
                "Events published by kind",
                [(f"sum by (kind) (rate(marketdata_events_published_total{{{sel}}}[{RATE}]))", "{{kind}}")],
                unit="ops",
            ),
            panel(
                "Upstream reconnects and sequence gaps",
                [
                    (f"sum by (venue) (increase(marketdata_upstream_reconnects_total{{{sel}}}[{RATE}]))", "reconnects {{venue}}"),
                    (f"sum by (venue) (increase(marketdata_sequence_gaps_total{{{sel}}}[{RATE}]))", "gaps {{venue}}"),
                ],
            ),
            panel(
                "Feed to send p99",
                [(f"histogram_quantile(0.99, sum by (le) (rate(marketdata_feed_to_send_seconds_bucket{{{sel}}}[{RATE}])))", "p99")],
                unit="s",
            ),
            row("Subscribers"),
            panel(
                "Subscribers and subscriptions",
                [
                    (f"sum(marketdata_subscribers{{{sel}}})", "subscribers"),
                    (f"sum(marketdata_subscriptions{{{sel}}})", "subscriptions"),
                ],
            ),
            panel(
                "Queued events and queue depth p99",
                [
                    (f"sum(marketdata_queued_events{{{sel}}})", "queued (all)"),
                    (f"histogram_quantile(0.99, sum by (le) (rate(marketdata_subscriber_queue_depth_bucket{{{sel}}}[{RATE}])))", "depth p99"),
                ],
            ),
            panel(
                "Dropped events by reason and slow-consumer disconnects",
                [
                    (f"sum by (reason) (rate(marketdata_dropped_events_total{{{sel}}}[{RATE}]))", "dropped {{reason}}"),
                    (f"sum(rate(marketdata_slow_consumer_disconnects_total{{{sel}}}[{RATE}]))", "disconnects"),
                ],
                unit="ops",
            ),
        ],
    )


DASHBOARDS = {
    "overview.json": overview,
    "gateway.json": gateway,
    "executor.json": executor,
    "marketdata.json": marketdata,
}


def render(make: Any) -> str:
    return json.dumps(make(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for name, make in DASHBOARDS.items():
        path = HERE / name
        text = render(make)
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(
            f"dashboards out of date: {', '.join(stale)}; run "
            "`python observability/dashboards/generate.py`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
