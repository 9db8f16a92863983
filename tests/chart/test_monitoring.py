"""Alerts and the dashboard: promtool checks and unit tests, PromQL parsing, metric names, runbooks."""

import json
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import CHART, of_kind, render

REPO = CHART.parent
DASHBOARD = json.loads((REPO / "dashboards" / "immudb.json").read_text())
MONITORING_TESTS = REPO / "tests" / "monitoring"

# The replication agent's metrics (hook/src/agent/metrics.rs), checked against that file below.
AGENT_METRICS = set(
    """
immudb_agent_ready immudb_agent_primary_reachable immudb_agent_replicating immudb_agent_lag_transactions
immudb_agent_lag_seconds immudb_agent_database_state immudb_agent_repairs_total immudb_agent_polls_total
immudb_agent_poll_errors_total immudb_agent_logins_total immudb_agent_poll_duration_seconds immudb_agent_settings_unconfirmed
immudb_agent_role immudb_agent_failovers_total immudb_agent_failover_lost_transactions_total
immudb_agent_replicator_wakes_total immudb_agent_switchovers_total
""".split()
)
AGENT_SOURCE = REPO / "hook" / "src" / "agent" / "metrics.rs"
COUNTERS_SOURCE = REPO / "hook" / "src" / "agent" / "counters.rs"
# Target labels Prometheus or the Prometheus Operator attach to every series a monitor scrapes.
SCRAPE_LABELS = {"job", "instance", "namespace", "service", "pod", "container", "endpoint"}
STATES_SOURCE = REPO / "hook" / "src" / "plan" / "state.rs"
ROLE_SOURCE = REPO / "hook" / "src" / "types" / "role.rs"

# immudb's port: 1.10.0 as observed, 1.11 additions, go-grpc-prometheus.
IMMUDB_METRICS = set(
    """
immudb_uptime_hours immudb_loaded_databases immudb_active_sessions immudb_db_size_bytes
immudb_number_of_stored_entries immudb_remote_storage_kind immudb_number_of_rpcs_per_client
immudb_clients_last_message_at_unix_seconds immudb_last_committed_trx_id immudb_last_indexed_trx_id
immudb_btree_depth immudb_btree_leaf_node_entries immudb_btree_nodes_data_begin immudb_btree_nodes_data_end
immudb_btree_flushed_entries_last_cycle immudb_btree_flushed_entries_total immudb_btree_flushed_nodes_last_cycle
immudb_btree_flushed_nodes_total immudb_multiapp_cache_events immudb_multiapp_read_bytes immudb_multiapp_read_events
immudb_replication_lag immudb_replication_primary_committed_tx_id immudb_replication_allow_commit_up_to_tx_id
immudb_replication_replicators immudb_replication_replicators_active immudb_replication_replicators_retries
immudb_replication_replicators_retry_delay immudb_replication_tx_wait_queue immudb_replication_commit_time
immudb_query_latency_seconds immudb_index_seek_latency_seconds immudb_catalog_cache_total
immudb_stream_send_blocked_duration_seconds
grpc_server_started_total grpc_server_handled_total grpc_server_msg_received_total grpc_server_msg_sent_total
grpc_server_handling_seconds
""".split()
)
# Recorded by Prometheus itself for every target.
PROMETHEUS_METRICS = {"up"}
README = (REPO / "README.md").read_text()
PROMQL_WORDS = set(
    """
sum max min avg count by on without group_left group_right ignoring rate increase irate deriv
histogram_quantile label_values and or unless bool offset le
""".split()
)


@pytest.fixture(scope="module")
def rules():
    objects = render({"metrics": {"prometheusRule": {"enabled": True}}})
    (rule,) = of_kind(objects, "PrometheusRule")
    return rule["spec"]


def promtool(*args, cwd=None):
    assert shutil.which("promtool"), "promtool missing: run tests/bootstrap.sh"
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True)


def test_rendered_rules_pass_promtool_check(rules, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_in_promtool_unit_tests(rules, tmp_path):
    # Annotations are templated text, checked below; the unit tests pin expressions, durations, labels.
    stripped = {"groups": [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]} for g in rules["groups"]]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(stripped))
    shutil.copy(MONITORING_TESTS / "alerts-test.yaml", tmp_path)
    tested = yaml.safe_load((MONITORING_TESTS / "alerts-test.yaml").read_text())
    firing = {t["alertname"] for case in tested["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    quiet = {t["alertname"] for case in tested["tests"] for t in case["alert_rule_test"] if not t["exp_alerts"]}
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert firing == alerts and quiet == alerts, f"untested: {alerts - firing} / {alerts - quiet}"
    result = promtool("test", "rules", "alerts-test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_agent_alert_thresholds_come_from_values():
    values = {"enabled": True, "replicaLagSeconds": 600, "replicaLagFor": "15m", "repairsPerHour": 10}
    (rule,) = of_kind(render({"metrics": {"prometheusRule": values}}), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    lagging, repairing = alerts["ImmudbReplicaLagging"], alerts["ImmudbAgentRepairing"]
    assert re.search(r"immudb_agent_lag_seconds\{[^}]*\}\) > 600\n", lagging["expr"]), lagging["expr"]
    assert lagging["for"] == "15m"
    assert repairing["expr"].endswith("[1h:1m]) > 10"), repairing["expr"]


def test_every_alert_has_summary_description_and_an_existing_runbook(rules):
    for group in rules["groups"]:
        for rule in group["rules"]:
            annotations = rule["annotations"]
            assert annotations["summary"] and annotations["description"], rule["alert"]
            runbook = annotations["runbook_url"].rsplit("/", 1)[1]
            page = REPO / "docs" / "runbooks" / runbook
            assert page.exists(), f"{rule['alert']}: {page} is missing"
            text = page.read_text()
            for section in ("## Meaning", "## Confirm", "## Act"):
                assert section in text, f"{page.name} lacks {section}"


def dashboard_queries():
    variables = {"$namespace": "db", "$release": "demo", "$pod": "demo-immudb-read-0|demo-immudb-primary-0", "$database": "appdb", "$__rate_interval": "1m", "$__range": "1h"}
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            yield panel, expr


def panel_exprs(title):
    return [expr for panel, expr in dashboard_queries() if panel["title"] == title]


def test_traffic_panels_draw_only_live_series_and_leave_replication_out_of_the_error_ratio(tmp_path):
    # A healthy primary as seen on a real cluster: go-grpc-prometheus pre-creates every method x code at 0,
    # 2 writes/s succeed, and the replicas' streamExportTx calls end Unknown at 0.25/s (0.26 seen; exact in floats).
    (per_method,) = panel_exprs("gRPC requests per second by method and code")
    (ratio,) = panel_exprs("gRPC error ratio")
    primary = 'namespace="db", release="demo", pod="demo-immudb-primary-0"'
    live = {("verifiableSet", "OK"): 120, ("streamExportTx", "Unknown"): 15}
    series = [
        {"series": f'grpc_server_handled_total{{{primary}, grpc_method="{method}", grpc_code="{code}"}}',
         "values": f"0+{live.get((method, code), 0)}x10"}
        for method in ("verifiableSet", "verifiableGet", "streamExportTx", "exportTx", "login")
        for code in ("OK", "Unknown", "NotFound", "Internal")
    ]
    tests = {
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [
                {"expr": per_method, "eval_time": "10m", "exp_samples": [
                    {"labels": '{grpc_method="verifiableSet", grpc_code="OK"}', "value": 2},
                    {"labels": '{grpc_method="streamExportTx", grpc_code="Unknown"}', "value": 0.25},
                ]},
                {"expr": ratio, "eval_time": "10m", "exp_samples": [{"labels": '{pod="demo-immudb-primary-0"}', "value": 0}]},
            ],
        }],
    }
    (tmp_path / "traffic-test.yaml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", "traffic-test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_first_repair_reaches_the_repairs_panel_and_the_alert_counts_it(rules, tmp_path):
    # The agent exports every database x reason at 0 from its first poll (hook/src/agent/counters.rs):
    # increase() needs a sample before a repair to see it. A series born at 1 (the agent before it
    # exported zeros, here on the primary) never reaches the panel.
    (panel,) = panel_exprs("Agent repairs by reason")
    (alert,) = [r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == "ImmudbAgentRepairing"]
    restarted = 'namespace="db", release="demo", endpoint="agent", db="appdb", reason="replicator_restarted"'
    read, primary = 'role="read", pod="demo-immudb-read-0"', 'role="primary", pod="demo-immudb-primary-0"'
    one_repair = [
        {"series": f"immudb_agent_repairs_total{{{restarted}, {read}}}", "values": "0x4 1x20"},
        {"series": f"immudb_agent_repairs_total{{{restarted}, {primary}}}", "values": "_x4 1x20"},
    ]
    # repairsPerHour (3) + 1 repairs, one every 5 minutes: counted exactly, the first included.
    four_repairs = [{"series": f"immudb_agent_repairs_total{{{restarted}, {read}}}", "values": "0x4 1x4 2x4 3x4 4x10"}]
    # With failover, the poll that promotes read-0 also relabels its pod primary: the count goes on
    # in a series born at 1, which the panel still shows, merged per pod.
    promoted = 'namespace="db", release="demo", endpoint="agent", db="appdb", reason="promoted"'
    relabelled = [
        {"series": f"immudb_agent_repairs_total{{{promoted}, {read}}}", "values": "0x4 stale"},
        {"series": f'immudb_agent_repairs_total{{{promoted}, role="primary", pod="demo-immudb-read-0"}}', "values": "_x4 1x20"},
    ]
    shown_promoted = '{pod="demo-immudb-read-0", db="appdb", reason="promoted"}'
    shown = '{pod="demo-immudb-read-0", db="appdb", reason="replicator_restarted"}'
    alerting = '{namespace="db", release="demo", pod="demo-immudb-read-0", db="appdb", reason="replicator_restarted"}'
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": one_repair, "promql_expr_test": [
                {"expr": panel, "eval_time": "4m", "exp_samples": []},
                {"expr": panel, "eval_time": "5m", "exp_samples": [{"labels": shown, "value": 1}]},
            ]},
            {"interval": "1m", "input_series": relabelled, "promql_expr_test": [
                {"expr": panel, "eval_time": "3m", "exp_samples": []},
                {"expr": panel, "eval_time": "4m", "exp_samples": [{"labels": shown_promoted, "value": 1}]},
            ]},
            {"interval": "1m", "input_series": four_repairs, "promql_expr_test": [
                {"expr": alert, "eval_time": "19m", "exp_samples": []},
                {"expr": alert, "eval_time": "20m", "exp_samples": [{"labels": alerting, "value": 4}]},
            ]},
        ],
    }
    (tmp_path / "repairs-test.yaml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", "repairs-test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_failover_reaches_the_failover_panels_from_the_first_one(tmp_path):
    # read-0 takes the Lease at 4m after primary-0 died at 3m, losing 7 transactions of appdb
    # (asynchronous replication). In the poll that counts the failover the agent labels its pod
    # primary, so the scrape's role label changes: the count continues in a new series born at 1,
    # which increase() on that series alone would never count. primary-0 returns at 8m, fenced,
    # and its appdb is found diverged at 12m. ($pod selects these two pods.)
    (failovers,) = panel_exprs("Failovers")
    (lost,) = panel_exprs("Transactions lost in failovers")
    (roles,) = panel_exprs("Role by pod (agent)")
    base = 'namespace="db", release="demo", endpoint="agent"'

    def agent(metric, pod, role, values, **labels):
        extra = "".join(f', {k}="{v}"' for k, v in labels.items())
        return {"series": f'{metric}{{{base}, pod="demo-immudb-{pod}", role="{role}"{extra}}}', "values": values}

    before, after, gone, back = "0 0 0 0 stale", "_x4 {}x16", "{} {} {} stale", "_x8 {}x12"
    series = [
        agent("immudb_agent_failovers_total", "read-0", "read", before),
        agent("immudb_agent_failovers_total", "read-0", "primary", after.format(1)),
        agent("immudb_agent_failover_lost_transactions_total", "read-0", "read", before, db="appdb"),
        agent("immudb_agent_failover_lost_transactions_total", "read-0", "primary", after.format(7), db="appdb"),
        agent("immudb_agent_role", "read-0", "read", "1 1 1 1 stale", agent_role="replica"),
        agent("immudb_agent_role", "read-0", "read", before, agent_role="primary"),
        agent("immudb_agent_role", "read-0", "primary", after.format(0), agent_role="replica"),
        agent("immudb_agent_role", "read-0", "primary", after.format(1), agent_role="primary"),
        agent("immudb_agent_failovers_total", "primary-0", "primary", gone.format(0, 0, 0)),
        agent("immudb_agent_failover_lost_transactions_total", "primary-0", "primary", gone.format(0, 0, 0), db="appdb"),
        agent("immudb_agent_role", "primary-0", "primary", gone.format(1, 1, 1), agent_role="primary"),
        agent("immudb_agent_role", "primary-0", "primary", gone.format(0, 0, 0), agent_role="replica"),
        agent("immudb_agent_failovers_total", "primary-0", "read", back.format(0)),
        agent("immudb_agent_failover_lost_transactions_total", "primary-0", "read", back.format(0), db="appdb"),
        agent("immudb_agent_role", "primary-0", "read", back.format(1), agent_role="replica"),
        agent("immudb_agent_role", "primary-0", "read", back.format(0), agent_role="primary"),
        agent("immudb_agent_database_state", "primary-0", "read", "_x8 1 1 1 1 0x8", db="appdb", state="fenced"),
        agent("immudb_agent_database_state", "primary-0", "read", "_x8 0 0 0 0 1x8", db="appdb", state="diverged"),
    ]
    pods = lambda **values: [{"labels": f'{{pod="demo-immudb-{pod.replace("_", "-")}"}}', "value": v} for pod, v in values.items()]
    replica, primary, fenced, diverged = 1, 2, 3, 4
    tests = {
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": [
            {"expr": failovers, "eval_time": "3m", "exp_samples": [{"labels": "{}", "value": 0}]},
            {"expr": failovers, "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 1}]},
            {"expr": lost, "eval_time": "3m", "exp_samples": [{"labels": '{db="appdb"}', "value": 0}]},
            {"expr": lost, "eval_time": "10m", "exp_samples": [{"labels": '{db="appdb"}', "value": 7}]},
            {"expr": roles, "eval_time": "2m", "exp_samples": pods(primary_0=primary, read_0=replica)},
            {"expr": roles, "eval_time": "6m", "exp_samples": pods(read_0=primary)},
            {"expr": roles, "eval_time": "10m", "exp_samples": pods(primary_0=fenced, read_0=primary)},
            {"expr": roles, "eval_time": "14m", "exp_samples": pods(primary_0=diverged, read_0=primary)},
        ]}],
    }
    (tmp_path / "failover-test.yaml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", "failover-test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_switchover_reaches_the_switchovers_panel_from_the_pod_that_received_it(tmp_path):
    # primary-0 stops for a rollout at 4m after handing its role to read-0, whose agent counts
    # outcome="received" in the poll that labels its pod primary: the count continues in a new
    # series born at 1. primary-0's own handed_over count ends with its process, unscraped.
    (switchovers,) = panel_exprs("Switchovers")
    base = 'namespace="db", release="demo", endpoint="agent"'

    def received(pod, role, values):
        labels = f'{base}, pod="demo-immudb-{pod}", role="{role}", outcome="received"'
        return {"series": f"immudb_agent_switchovers_total{{{labels}}}", "values": values}

    series = [
        received("read-0", "read", "0 0 0 0 stale"),
        received("read-0", "primary", "_x4 1x16"),
        received("primary-0", "primary", "0 0 0 0 stale"),
        received("primary-0", "read", "_x5 0x15"),
    ]
    tests = {
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": [
            {"expr": switchovers, "eval_time": "3m", "exp_samples": [{"labels": "{}", "value": 0}]},
            {"expr": switchovers, "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 1}]},
        ]}],
    }
    (tmp_path / "switchover-test.yaml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", "switchover-test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_parses_as_promql(tmp_path):
    # promtool parses each expression with Prometheus's own parser when it checks recording rules.
    records = [{"record": f"dashboard:panel{panel['id']}:{i}", "expr": expr} for i, (panel, expr) in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(records) >= 20


def metric_names(expr):
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL_WORDS
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names if not n.isdigit()}


def readme_needs():
    """README "Metrics from outside the chart": source -> (metrics, panels, alerts)."""
    section = README.split("### Metrics from outside the chart\n", 1)[1].split("\n#", 1)[0]
    needs = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("| ").split(" | ")]
        if len(cells) == 4 and cells[1].startswith("`"):
            source, metrics, panels, alerts = cells
            listed = lambda cell: set() if cell == "none" else set(cell.split(", "))
            needs[source] = (set(re.findall(r"`(\w+)`", metrics)), listed(panels), listed(alerts))
    return needs


def alert_rules(rules):
    return [r for g in rules["groups"] for r in g["rules"]]


def test_every_metric_name_is_the_charts_or_a_documented_need(rules):
    used = set()
    for _, expr in dashboard_queries():
        used |= metric_names(expr)
    for rule in alert_rules(rules):
        used |= metric_names(rule["expr"])
    needed = set().union(*(metrics for metrics, _, _ in readme_needs().values()))
    known = IMMUDB_METRICS | AGENT_METRICS | PROMETHEUS_METRICS | needed
    unknown = {n for n in used if n not in known and not re.fullmatch(r"[0-9e.]+", n)}
    assert not unknown, f"neither immudb's, the agent's, Prometheus's nor in the README's needs table: {unknown}"
    assert needed <= used, f"documented as needed but unused: {needed - used}"


def test_readme_names_every_panel_and_alert_each_outside_source_feeds(rules):
    needs = readme_needs()
    assert {"kube-state-metrics", "cAdvisor", "kubelet volume stats"} == {s.split(" (")[0] for s in needs}
    for source, (metrics, panels, alerts) in needs.items():
        assert not metrics & (IMMUDB_METRICS | AGENT_METRICS), source
        fed_panels = {panel["title"] for panel, expr in dashboard_queries() if metric_names(expr) & metrics}
        fed_alerts = {r["alert"] for r in alert_rules(rules) if metric_names(r["expr"]) & metrics}
        assert (panels, alerts) == (fed_panels, fed_alerts), source


def test_agent_metric_names_are_the_ones_the_agent_exports():
    exported = set(re.findall(r'(?:family|labelled_counter|database_gauge)\(\s*&mut text,\s*"(immudb_agent_\w+)"', AGENT_SOURCE.read_text()))
    assert exported == AGENT_METRICS


def test_no_agent_label_collides_with_a_target_label():
    # Prometheus renames a scraped label that a target label also sets (to exported_<name>), so a
    # query on the agent's own label would select the target's value instead.
    sources = AGENT_SOURCE.read_text() + COUNTERS_SOURCE.read_text()
    exported = set(re.findall(r'(\w+)=\\"', sources))
    assert {"db", "state", "reason", "agent_role"} <= exported, exported
    objects = render({"failover": {"enabled": True, "allowDataLoss": True}, "replicaCount": 2,
                      "metrics": {"serviceMonitor": {"enabled": True}}})
    objects += render({"metrics": {"podMonitor": {"enabled": True}}})
    (sm,) = of_kind(objects, "ServiceMonitor")
    (pm,) = of_kind(objects, "PodMonitor")
    endpoints = sm["spec"]["endpoints"] + pm["spec"]["podMetricsEndpoints"]
    targets = {r["targetLabel"] for e in endpoints for r in e["relabelings"]} | SCRAPE_LABELS
    assert {"role", "release"} <= targets
    assert not exported & targets, exported & targets


def label_values(expr, label):
    """Values an expression selects for `label`, from = and =~ matchers (alternatives split)."""
    values = set()
    for value in re.findall(rf'\b{label}=~?"([^"]*)"', expr):
        values |= set(value.split("|"))
    return values


def test_states_roles_and_repair_reasons_in_queries_are_the_agents(rules):
    # A misspelt state selects nothing, and an alert on it never fires.
    source = STATES_SOURCE.read_text()
    states = set(re.findall(r'State::\w+ => "(\w+)"', source))
    reasons = set(re.findall(r'Repair::\w+ => "(\w+)"', source))
    assert {"replicating", "catching_up", "lost_on_primary"} <= states and "replicator_restarted" in reasons
    exprs = [expr for _, expr in dashboard_queries()] + [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used_states, used_reasons = set(), set()
    for expr in exprs:
        if "immudb_agent_" in expr:
            used_states |= label_values(expr, "state")
            used_reasons |= label_values(expr, "reason")
    assert used_states, "no query selects an agent state"
    assert used_states <= states, used_states - states
    assert used_reasons <= reasons, used_reasons - reasons
    roles = set(re.findall(r'Role::\w+ => "(\w+)"', ROLE_SOURCE.read_text()))
    used_roles = set().union(*(label_values(expr, "agent_role") for expr in exprs))
    assert used_roles == roles == {"primary", "replica"}, used_roles


def test_dashboard_has_unique_ids_a_datasource_variable_and_no_fixed_uid():
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert {"namespace", "release", "pod", "database"} <= set(variables)
    for node in json.dumps(DASHBOARD) and walk(DASHBOARD):
        if isinstance(node, dict) and "uid" in node and "type" in node:
            assert node["uid"] == "${datasource}", node
    rows = [p["title"] for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Replication", "Failover", "Traffic", "Storage", "Resources", "Agent"]


def walk(node):
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def test_chart_ships_the_dashboard_unchanged_with_the_sidecar_label():
    objects = render({})
    (cm,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["immudb.json"]) == DASHBOARD


def dashboard_panels_markdown():
    """README "Dashboard panels" as the dashboard has it: every row, panel, description and query."""
    lines = ["Variables: " + ", ".join(v["name"] for v in DASHBOARD["templating"]["list"]) + "."]
    for panel in DASHBOARD["panels"]:
        if panel["type"] == "row":
            lines += ["", f"**{panel['title']}**", ""]
            continue
        lines.append(f"- **{panel['title']}**: {panel['description']}")
        lines += [f"  - `{target['expr']}`" for target in panel["targets"]]
    return "\n".join(lines) + "\n"


def test_every_panel_has_a_description():
    for panel in DASHBOARD["panels"]:
        assert panel["type"] == "row" or panel.get("description"), panel["title"]


def test_readme_dashboard_panels_are_the_dashboard_s():
    section = README.split("### Dashboard panels\n\n", 1)[1].split("\n## ", 1)[0]
    expected = dashboard_panels_markdown()
    assert section == expected, f"README's Dashboard panels differ from dashboards/immudb.json; they should read:\n{expected}"


def test_monitors_carry_release_and_role_labels():
    sm = of_kind(render({"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s"}}}), "ServiceMonitor")[0]
    endpoint = sm["spec"]["endpoints"][0]
    assert endpoint["interval"] == "15s"
    assert {r["targetLabel"] for r in endpoint["relabelings"]} >= {"role", "release"}
    pm = of_kind(render({"metrics": {"podMonitor": {"enabled": True}}}), "PodMonitor")[0]
    assert {r["targetLabel"] for r in pm["spec"]["podMetricsEndpoints"][0]["relabelings"]} >= {"role", "release"}
