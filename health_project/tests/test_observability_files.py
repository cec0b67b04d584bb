"""The observability files (dashboard, rules, runbooks) held to the code.

Every metric a Grafana panel or a Prometheus rule names must be a recording rule of
deploy/prometheus/rules/ or a series the code exports: the exported names are read from the
prometheus_client collectors of every module of ours that uses prometheus_client, never from
a hand-written list. Every alert has a severity, a summary and a runbook that exists and has
the three sections an on-call engineer needs; every runbook belongs to an alert.
promtool is not available here, so the rule files' structure is checked by this test.
See docs/phase-3/observability.md.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.metrics import MetricWrapperBase

PROJECT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((PROJECT / "deploy/grafana/dashboards").glob("*.json"))
RULE_FILES = sorted((PROJECT / "deploy/prometheus/rules").glob("*.yml"))
RUNBOOKS = PROJECT / "docs/phase-3/runbooks"
NOT_ALERT_RUNBOOKS = {"README.md", "incident-response.md"}

# Series Prometheus itself writes for every scrape target; no code of ours exports them.
PROMETHEUS_SYNTHETIC = {"up"}

# Apps whose modules may define metrics; tests, migrations and the venv are not searched.
_SKIP_PARTS = {".venv", "tests", "migrations", "node_modules", "bench"}

# Sample names prometheus_client exposes for a family, by type.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gauge": ("",),
    "unknown": ("",),
}

_KEYWORDS = {
    "and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
    "group_right", "offset", "atan2", "inf", "nan", "start", "end",
}  # fmt: skip
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_TOKEN = re.compile(
    r"(?P<num>(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)(?:[smhdwy]|ms)*)"
    r"|(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)(?P<call>\s*\()?"
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers outside strings, label matchers,
    range/subquery brackets and label lists, that are not functions, aggregations or keywords."""
    text = re.sub(r"\$\{[^}]*\}|\$__\w+|\$\w+", "", expr)  # Grafana variables
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', text)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"#[^\n]*", " ", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in _TOKEN.finditer(text):
        name = match.group("id")
        if name and not match.group("call") and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def test_tokenizer_finds_metrics_only() -> None:
    expr = (
        'sum by (le, kind) (rate(foo_bucket{le=~"5(\\\\.0)?",kind!="x y"}[5m] offset 1h))'
        " > on () group_left (a) (0.2 * (sum(rate(bar_total[$__rate_interval])) or vector(0)))"
        " unless ignoring(b) rec:rule:ratio_rate5m > bool 1e3 and absent(baz) or time() - qux"
    )
    assert promql_metric_names(expr) == {
        "foo_bucket",
        "bar_total",
        "rec:rule:ratio_rate5m",
        "baz",
        "qux",
    }


# --- what the code exports ---------------------------------------------------------------


def _metric_modules() -> list[str]:
    modules = []
    for path in sorted(PROJECT.rglob("*.py")):
        rel = path.relative_to(PROJECT)
        if _SKIP_PARTS & set(rel.parts) or rel.name.startswith("test_") or rel.parts[0] == "deploy":
            continue
        if "prometheus_client" in path.read_text(encoding="utf-8"):
            modules.append(".".join(rel.with_suffix("").parts))
    return modules


def _is_collector(value: object) -> bool:
    """A metric, or a custom collector instance that declares its families (describe())."""
    if isinstance(value, MetricWrapperBase):
        return True
    return (
        not isinstance(value, type)
        and callable(getattr(value, "collect", None))
        and callable(getattr(value, "describe", None))
    )


def _family_names(collector: Any) -> Iterator[str]:
    for family in collector.describe():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            yield family.name + suffix
        yield family.name


_FAMILY_TYPES = {
    "GaugeMetricFamily": "gauge",
    "CounterMetricFamily": "counter",
    "HistogramMetricFamily": "histogram",
    "SummaryMetricFamily": "summary",
    "InfoMetricFamily": "info",
    "StateSetMetricFamily": "stateset",
    "GaugeHistogramMetricFamily": "gaugehistogram",
}


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _name_argument(call: ast.Call) -> ast.expr | None:
    if call.args:
        return call.args[0]
    return next((k.value for k in call.keywords if k.arg == "name"), None)


def scrape_time_families() -> dict[str, str]:
    """The families a scrape-time collector builds, {name: type}, read from the source.

    Such a collector reads Postgres and NATS when collected, so its names cannot be asked of
    it here without the stores: they are the literal names given to a `*MetricFamily(...)`,
    directly or through a helper of ours that passes its first parameter on as the name
    (core.scrape_metrics.gauge).
    """
    trees = [ast.parse((PROJECT / (m.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
             for m in _metric_modules()]  # fmt: skip
    factories = dict(_FAMILY_TYPES)
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or not node.args.args:
                continue
            first = node.args.args[0].arg
            for inner in ast.walk(node):
                if (
                    isinstance(inner, ast.Return)
                    and isinstance(inner.value, ast.Call)
                    and _callee(inner.value) in _FAMILY_TYPES
                    and isinstance(arg := _name_argument(inner.value), ast.Name)
                    and arg.id == first
                ):
                    factories[node.name] = _FAMILY_TYPES[_callee(inner.value)]
    families: dict[str, str] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _callee(node) in factories:
                arg = _name_argument(node)
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    kind = factories[_callee(node)]
                    name = arg.value.removesuffix("_total") if kind == "counter" else arg.value
                    families[name] = kind
    return families


@cache
def exported_names() -> frozenset[str]:
    """Every family and sample name a collector of ours declares, without collecting
    (a scrape-time collector would reach Postgres and NATS)."""
    names: set[str] = set()
    registries: list[CollectorRegistry] = [REGISTRY]
    modules = _metric_modules()
    assert "core.metrics" in modules
    assert "upkeep.metrics" in modules
    for module_name in modules:
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, CollectorRegistry):
                registries.append(value)
            elif _is_collector(value):
                names.update(_family_names(value))
    for name, kind in scrape_time_families().items():
        names.add(name)
        names.update(name + suffix for suffix in _SUFFIXES[kind])
    for registry in registries:
        # The names each registered collector declared when it was registered (from its
        # describe(), or for a collector without one, what it yielded then).
        for declared in registry._collector_to_names.values():
            names.update(declared)
    return frozenset(names)


# --- the files -----------------------------------------------------------------------------


@cache
def rule_groups() -> tuple[tuple[str, dict[str, Any]], ...]:
    found = []
    for path in RULE_FILES:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert isinstance(doc, dict), path
        assert set(doc) == {"groups"}, path
        for group in doc["groups"]:
            found.append((path.name, group))
    return tuple(found)


def rules() -> list[dict[str, Any]]:
    return [rule for _, group in rule_groups() for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard_exprs() -> Iterator[tuple[str, str, str]]:
    def walk(panels: list[dict[str, Any]], file: str) -> Iterator[tuple[str, str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield file, panel["title"], target["expr"]
            yield from walk(panel.get("panels", []), file)

    for path in DASHBOARDS:
        yield from walk(json.loads(path.read_text(encoding="utf-8"))["panels"], path.name)


def kebab(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()


_DURATION = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")


def test_rule_files_are_well_formed() -> None:
    assert {p.name for p in RULE_FILES} == {"slo.yml", "alerts.yml"}
    group_names = [group["name"] for _, group in rule_groups()]
    assert len(group_names) == len(set(group_names)), "group names must be unique"
    for file, group in rule_groups():
        assert set(group) <= {"name", "interval", "rules", "limit"}, (file, group["name"])
        assert isinstance(group["rules"], list), (file, group["name"])
        assert group["rules"], (file, group["name"])
        if "interval" in group:
            assert _DURATION.match(group["interval"]), (file, group["name"])
        for rule in group["rules"]:
            where = (file, group["name"], rule.get("alert") or rule.get("record"))
            assert ("alert" in rule) != ("record" in rule), where
            assert isinstance(rule.get("expr"), str), where
            assert rule["expr"].strip(), where
            assert rule["expr"].count("(") == rule["expr"].count(")"), where
            if "record" in rule:
                assert set(rule) <= {"record", "expr", "labels"}, where
                assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["record"]), where
            else:
                assert set(rule) <= {
                    "alert",
                    "expr",
                    "for",
                    "keep_firing_for",
                    "labels",
                    "annotations",
                }, where
                assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", rule["alert"]), where
                if "for" in rule:
                    assert _DURATION.match(rule["for"]), where
            for value in (rule.get("labels") or {}).values():
                assert isinstance(value, str), where
    assert len({a["alert"] for a in alerts()}) == len(alerts()), "alert names must be unique"
    assert "provider_rate_limit_hits" in recorded_names()


def test_every_alert_has_severity_summary_and_runbook() -> None:
    assert alerts()
    for alert in alerts():
        name = alert["alert"]
        assert alert.get("labels", {}).get("severity") in {"critical", "warning"}, name
        annotations = alert.get("annotations", {})
        assert annotations.get("summary", "").strip(), name
        expected = f"docs/phase-3/runbooks/{kebab(name)}.md"
        assert annotations.get("runbook_url") == expected, name
        assert (PROJECT / expected).is_file(), f"{name}: no runbook {expected}"


def test_every_runbook_belongs_to_an_alert_and_has_its_sections() -> None:
    referenced = {f"{kebab(a['alert'])}.md" for a in alerts()}
    files = {p.name for p in RUNBOOKS.glob("*.md")}
    assert files >= NOT_ALERT_RUNBOOKS
    assert files - NOT_ALERT_RUNBOOKS == referenced, "a runbook without an alert, or vice versa"
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")
    for name in files - {"README.md"}:
        assert f"]({name})" in index, f"README.md does not link {name}"
    for name in referenced:
        headings = {
            h.strip().lower()
            for h in re.findall(r"^## (.+)$", (RUNBOOKS / name).read_text(encoding="utf-8"), re.M)
        }
        for section in ("what it means", "contain it", "confirm recovery"):
            assert any(section in h for h in headings), f"{name}: no section '{section}'"
    incident = (RUNBOOKS / "incident-response.md").read_text(encoding="utf-8").lower()
    for needed in ("containment", "notification", "72", "verify_audit_chain", "postmortem"):
        assert needed in incident, f"incident-response.md: {needed}"


def test_dashboard_is_provisionable() -> None:
    assert DASHBOARDS
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        assert dashboard["schemaVersion"] >= 39, path.name
        assert dashboard["uid"], path.name
        assert dashboard["title"], path.name
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = []

        def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for panel in panels:
                yield panel
                yield from walk(panel.get("panels", []))

        for panel in walk(dashboard["panels"]):
            ids.append(panel["id"])
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel[
                "title"
            ]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
    for provisioning in (PROJECT / "deploy/grafana/provisioning").rglob("*.yml"):
        assert yaml.safe_load(provisioning.read_text(encoding="utf-8"))["apiVersion"] == 1


def _named_metrics() -> list[tuple[str, str, str]]:
    named = []
    for file, group in rule_groups():
        for rule in group["rules"]:
            for metric in promql_metric_names(rule["expr"]):
                named.append(
                    (f"{file}: {rule.get('alert') or rule.get('record')}", metric, rule["expr"])
                )
    for file, title, expr in dashboard_exprs():
        for metric in promql_metric_names(expr):
            named.append((f"{file}: {title}", metric, expr))
    return named


def test_every_named_metric_is_exported_or_recorded() -> None:
    known = exported_names() | recorded_names() | PROMETHEUS_SYNTHETIC
    missing: dict[str, list[str]] = {}
    for where, metric, _ in _named_metrics():
        if metric not in known:
            missing.setdefault(metric, []).append(where)
    assert not missing, "named but not exported by the code nor recorded:\n" + "\n".join(
        f"  {metric}: {', '.join(sorted(set(places)))}"
        for metric, places in sorted(missing.items())
    )


def test_recording_rules_are_used() -> None:
    used = {metric for _, metric, _ in _named_metrics()}
    # provider_rate_limit_hits exists for people and dashboards to query by the draft's name.
    assert recorded_names() - used == set()


@pytest.mark.parametrize("metric", ["webhook_to_row_seconds"])
def test_slo_threshold_is_a_histogram_bucket(metric: str) -> None:
    """The latency SLO counts `le="5"`: 5 s must be a bucket boundary of the histogram."""
    for module_name in _metric_modules():
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, Histogram) and value._name == metric:
                assert 5.0 in value._upper_bounds, f"{metric} has no 5 s bucket"
                return
    pytest.fail(f"{metric} is not defined by the code")
