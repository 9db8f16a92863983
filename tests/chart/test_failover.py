"""Failover in the chart: the Role is exactly the one the Kubernetes API double enforces in the
hook's tests, the token reaches only the agent and hook containers, the Services follow the
agent's label, and every immudb pod may reach every other."""

import copy
import json
import pathlib
import re

import helm_python
import pytest
import yaml

from conftest import CHART, CI_SCENARIOS, NAMESPACE, RELEASE, named, of_kind, pod_specs, render, render_raw
from fake_apiserver import FakeApiServer

FULLNAME = "demo-immudb"
REPO = pathlib.Path(__file__).resolve().parents[2]
ROLE_RULES = json.loads((REPO / "tests" / "kube-double" / "chart-role.json").read_text())
README = (REPO / "README.md").read_text()
FAILOVER = CI_SCENARIOS["failover-values"]
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
HOOK_CONTAINERS = {"agent", "hook", "test", "backup", "restore"}


def expected_rules(replicas):
    pods = [f"{FULLNAME}-primary-0"] + [f"{FULLNAME}-read-{i}" for i in range(replicas)]
    names = {
        "$LEASE": [f"{FULLNAME}-primary"],
        "$PODS": pods,
        "$READ_STATEFULSET": [f"{FULLNAME}-read"],
        "$PRIMARY_STATEFULSET": [f"{FULLNAME}-primary"],
    }
    rules = []
    for rule in ROLE_RULES:
        rule = dict(rule)
        if "resourceNames" in rule:
            rule["resourceNames"] = [n for name in rule["resourceNames"] for n in names.get(name, [name])]
        rules.append(rule)
    return rules


def containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


def test_the_role_is_the_one_the_api_double_enforces():
    for replicas in (2, 3, 5):
        objects = render({**FAILOVER, "replicaCount": replicas})
        role = named(objects, "Role", f"{FULLNAME}-failover")
        assert role["rules"] == expected_rules(replicas)
        binding = named(objects, "RoleBinding", f"{FULLNAME}-failover")
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{FULLNAME}-failover"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]


def test_pods_up_to_max_replicas_may_label_themselves():
    objects = render({**FAILOVER, "replicaCount": 2, "failover": {**FAILOVER["failover"], "maxReplicas": 6}})
    role = named(objects, "Role", f"{FULLNAME}-failover")
    assert role["rules"] == expected_rules(6)
    # The read StatefulSet still asks for replicaCount pods; kubectl scale or an HPA add the rest.
    assert named(objects, "StatefulSet", f"{FULLNAME}-read")["spec"]["replicas"] == 2
    for role_name in ("primary", "read"):
        spec = named(objects, "StatefulSet", f"{FULLNAME}-{role_name}")["spec"]["template"]["spec"]
        agent = next(c for c in spec["initContainers"] if c["name"] == "agent")
        env = {e["name"]: e.get("value") for e in agent["env"]}
        assert env["IMMUDB_AGENT_MAX_REPLICAS"] == "6"
        assert env["IMMUDB_HOOK_REPLICA_COUNT"] == "2"
    # null (the default) is replicaCount.
    env = {e["name"]: e.get("value") for e in named(render(FAILOVER), "StatefulSet", f"{FULLNAME}-read")
           ["spec"]["template"]["spec"]["initContainers"][0]["env"]}
    assert env["IMMUDB_AGENT_MAX_REPLICAS"] == str(FAILOVER["replicaCount"])


def test_the_primary_s_sessions_are_sized_for_max_replicas():
    def sessions(max_replicas):
        failover = {**FAILOVER["failover"], "maxReplicas": max_replicas}
        objects = render({**FAILOVER, "replicaCount": 2, "failover": failover})
        immudb = named(objects, "StatefulSet", f"{FULLNAME}-primary")["spec"]["template"]["spec"]["containers"][0]
        return int(next(e["value"] for e in immudb["env"] if e["name"] == "IMMUDB_MAX_SESSIONS"))

    # Each replica more: its agent, one replicator per replicated database (appdb and the
    # canary), and one more pod an agent asks in an election.
    assert sessions(5) - sessions(2) == 3 * (1 + 2 + 1)


def test_without_failover_no_role_and_no_token_anywhere():
    objects = render({})
    assert not of_kind(objects, "Role") and not of_kind(objects, "RoleBinding")
    for _, spec, _ in pod_specs(objects):
        assert spec["automountServiceAccountToken"] is False
        for container in containers(spec):
            mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
            assert TOKEN_DIR not in mounts, container["name"]
            assert not any(e["name"] == "IMMUDB_HOOK_LEASE_NAME" for e in container.get("env", []))


def test_the_token_reaches_the_agent_and_hook_containers_only():
    values = {**FAILOVER, "backup": {"enabled": True}}
    objects = render(values)
    seen = set()
    for _, spec, _ in pod_specs(objects):
        assert spec["automountServiceAccountToken"] is False, "never the whole pod"
        for container in containers(spec):
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            if container["name"] in HOOK_CONTAINERS:
                assert mounts[TOKEN_DIR]["readOnly"] is True
                seen.add(container["name"])
            else:
                assert TOKEN_DIR not in mounts, f"{container['name']} must not get the token"
        volumes = {v["name"]: v for v in spec["volumes"]}
        sources = volumes["kube-api-access"]["projected"]["sources"]
        assert sources[0]["serviceAccountToken"]["path"] == "token"
        assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    assert {"agent", "hook", "test", "backup"} <= seen


def test_every_hook_container_finds_the_primary_through_the_lease():
    objects = render(FAILOVER)
    for _, spec, _ in pod_specs(objects):
        for container in containers(spec):
            if container["name"] not in HOOK_CONTAINERS:
                continue
            env = {e["name"]: e for e in container["env"]}
            assert env["IMMUDB_HOOK_LEASE_NAME"]["value"] == f"{FULLNAME}-primary"
            assert env["IMMUDB_HOOK_REPLICATION_PRIMARY_HOST"]["value"] == f"{FULLNAME}-primary.{NAMESPACE}.svc.cluster.local"


def test_each_agent_knows_its_pod_and_address_and_the_lease_timing():
    objects = render(FAILOVER)
    for role in ("primary", "read"):
        statefulset = named(objects, "StatefulSet", f"{FULLNAME}-{role}")
        spec = statefulset["spec"]["template"]["spec"]
        agent = next(c for c in spec["initContainers"] if c["name"] == "agent")
        names = [e["name"] for e in agent["env"]]
        env = {e["name"]: e for e in agent["env"]}
        assert env["IMMUDB_AGENT_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        # $(VAR) expands only variables defined earlier in the same list.
        assert names.index("IMMUDB_AGENT_POD_NAME") < names.index("IMMUDB_AGENT_POD_HOST")
        headless = statefulset["spec"]["serviceName"]
        assert env["IMMUDB_AGENT_POD_HOST"]["value"] == f"$(IMMUDB_AGENT_POD_NAME).{headless}.{NAMESPACE}.svc.cluster.local"
        assert env["IMMUDB_AGENT_LEASE_DURATION"]["value"] == "15s"
        assert env["IMMUDB_AGENT_FAILOVER_COOLDOWN"]["value"] == "2m"
        assert env["IMMUDB_AGENT_ALLOW_DATA_LOSS"]["value"] == "false"
        assert "immudb/role" not in statefulset["spec"]["template"]["metadata"]["labels"]


def test_every_immudb_pod_may_reach_every_other_and_backups_the_api():
    objects = render({**FAILOVER, "backup": {"enabled": True}})
    for role in ("primary", "read"):
        policy = named(objects, "NetworkPolicy", f"{FULLNAME}-{role}")
        grpc = policy["spec"]["ingress"][0]
        components = {p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for p in grpc["from"] if "podSelector" in p}
        assert {"primary", "read"} <= components, role
    backup = named(objects, "NetworkPolicy", f"{FULLNAME}-backup")
    ports = {p["port"] for rule in backup["spec"]["egress"] for p in rule.get("ports", [])}
    assert {443, 6443} <= ports


def test_the_spec_lets_a_returning_primary_discard_what_nobody_acknowledged():
    objects = render(FAILOVER)
    spec = json.loads(named(objects, "ConfigMap", f"{FULLNAME}-spec")["data"]["spec.json"])
    assert spec["replication"]["allowTxDiscarding"] is True
    assert spec["replication"]["sync"] == {"enabled": True, "acks": 1}


def test_metrics_label_the_role_the_agent_holds():
    objects = render({**FAILOVER, "metrics": {"podMonitor": {"enabled": True}}})
    monitor = of_kind(objects, "PodMonitor")[0]
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        relabel = [r for r in endpoint["relabelings"] if r.get("sourceLabels") == ["__meta_kubernetes_pod_label_immudb_role"]]
        assert {(r["regex"], r["replacement"]) for r in relabel} == {("primary", "primary"), ("replica", "read")}


def test_every_pod_may_open_the_primary_s_sessions():
    objects = render(FAILOVER)
    sessions = {}
    for role in ("primary", "read"):
        statefulset = named(objects, "StatefulSet", f"{FULLNAME}-{role}")
        immudb = statefulset["spec"]["template"]["spec"]["containers"][0]
        sessions[role] = int(next(e["value"] for e in immudb["env"] if e["name"] == "IMMUDB_MAX_SESSIONS"))
    assert sessions["read"] == sessions["primary"]


def notes(values):
    (text,) = [text for path, text in render_raw(values).items() if path.endswith("NOTES.txt")]
    return text


def github_anchor(heading):
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_notes_say_how_to_find_the_primary_and_link_the_failover_section():
    (lease,) = [name for rule in named(render(FAILOVER), "Role", f"{FULLNAME}-failover")["rules"]
                if rule["resources"] == ["leases"] for name in rule.get("resourceNames", [])]
    text = notes(FAILOVER)
    assert f"kubectl -n {NAMESPACE} get lease {lease} -o jsonpath='{{.spec.holderIdentity}}'" in text
    assert "immudb/role=primary" in text
    (anchor,) = re.findall(r"https://github\.com/\S+#(\S+)", text)
    headings = re.findall(r"^#+ (.+)$", README, re.M)
    assert anchor in {github_anchor(h) for h in headings}
    assert github_anchor("What happens when the primary dies") == anchor
    assert "Lease" not in notes({})


def by_kind_and_name(config, values, **options):
    manifests = config.render(helm_python.Chart.load(str(CHART)), copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE, **options)
    objects = [doc for path, text in manifests.items() if not path.endswith("NOTES.txt") for doc in yaml.safe_load_all(text) if doc]
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_turning_failover_on_for_a_running_release():
    installed = {"replicaCount": 2, "replication": {"sync": {"enabled": True, "acks": 1}}}
    api = FakeApiServer()
    try:
        config = helm_python.Config(kube_apiserver=api.url, namespace=NAMESPACE, storage_driver="memory")
        before = by_kind_and_name(config, installed, is_install=True)
        api.store(before["Secret", f"{FULLNAME}-auth"])
        after = by_kind_and_name(config, {**installed, "failover": {"enabled": True}}, is_upgrade=True)
    finally:
        api.close()
    # The API access appears, bound to the account the pods already run as (still without a token).
    role_objects = {("Role", f"{FULLNAME}-failover"), ("RoleBinding", f"{FULLNAME}-failover")}
    assert set(after) - set(before) == role_objects and set(before) <= set(after)
    (subject,) = after["RoleBinding", f"{FULLNAME}-failover"]["subjects"]
    account = ("ServiceAccount", subject["name"])
    assert after[account] == before[account] and after[account]["automountServiceAccountToken"] is False
    for name in ("primary", "read"):
        statefulset = ("StatefulSet", f"{FULLNAME}-{name}")
        assert before[statefulset]["spec"]["template"]["spec"]["serviceAccountName"] == subject["name"]
        # Every pod's template changes, so both StatefulSets roll; the new pods carry no role
        # label until their agents set it, so the Services below select nobody until then.
        assert after[statefulset]["spec"]["template"] != before[statefulset]["spec"]["template"]
        assert "immudb/role" not in after[statefulset]["spec"]["template"]["metadata"]["labels"]
        for field in ("volumeClaimTemplates", "persistentVolumeClaimRetentionPolicy", "selector", "serviceName"):
            assert after[statefulset]["spec"][field] == before[statefulset]["spec"][field], field
    # The write and read Services switch to the agent's label; the pods' DNS names stay.
    for name, label in (("primary", "primary"), ("read", "replica")):
        service = ("Service", f"{FULLNAME}-{name}")
        assert before[service]["spec"]["selector"]["app.kubernetes.io/component"] == name
        release = {k: v for k, v in before[service]["spec"]["selector"].items() if k != "app.kubernetes.io/component"}
        assert after[service]["spec"]["selector"] == {**release, "immudb/role": label}
        headless = ("Service", after[("StatefulSet", f"{FULLNAME}-{name}")]["spec"]["serviceName"])
        assert after[headless] == before[headless]
    # Nothing else changes but the chart's own wiring: the spec (allowTxDiscarding), the policies
    # (every pod may be the primary), and the hook and test pods (they find the primary by the Lease).
    assert after["Secret", f"{FULLNAME}-auth"] == before["Secret", f"{FULLNAME}-auth"]
    changed = {key for key in before if after[key] != before[key]}
    assert changed == {
        ("StatefulSet", f"{FULLNAME}-primary"), ("StatefulSet", f"{FULLNAME}-read"),
        ("Service", f"{FULLNAME}-primary"), ("Service", f"{FULLNAME}-read"),
        ("ConfigMap", f"{FULLNAME}-spec"),
        ("NetworkPolicy", f"{FULLNAME}-primary"), ("NetworkPolicy", f"{FULLNAME}-read"),
        ("Job", f"{FULLNAME}-hook"), ("Pod", f"{FULLNAME}-verify"),
    }


def test_every_immudb_container_asks_its_agent_before_it_stops():
    for values in ({}, FAILOVER):
        objects = render(values)
        for role in ("primary", "read"):
            spec = named(objects, "StatefulSet", f"{FULLNAME}-{role}")["spec"]["template"]["spec"]
            immudb = spec["containers"][0]
            # By number: a port named only on the agent, a native sidecar, is not resolved; no
            # exec: the immudb image has no shell.
            assert immudb["lifecycle"] == {"preStop": {"httpGet": {"path": "/prestop", "port": 9498}}}
            agent = next(c for c in spec["initContainers"] if c["name"] == "agent")
            env = {e["name"]: e.get("value") for e in agent["env"]}
            assert env["IMMUDB_AGENT_DRAIN"] == "2s"
            assert spec["terminationGracePeriodSeconds"] == 60


def test_the_agents_know_the_hand_over_s_bounds_and_the_primary_statefulset():
    objects = render(FAILOVER)
    for role in ("primary", "read"):
        spec = named(objects, "StatefulSet", f"{FULLNAME}-{role}")["spec"]["template"]["spec"]
        agent = next(c for c in spec["initContainers"] if c["name"] == "agent")
        env = {e["name"]: e.get("value") for e in agent["env"]}
        assert env["IMMUDB_AGENT_PRIMARY_STATEFULSET"] == f"{FULLNAME}-primary"
        assert env["IMMUDB_AGENT_ROLLOUT_WAIT"] == "40s"
        # null: the agent's own default, 10 s or what the Lease allows.
        assert "IMMUDB_AGENT_SWITCHOVER_TIMEOUT" not in env
    set_explicitly = {**FAILOVER, "failover": {**FAILOVER["failover"], "switchoverTimeout": "5s"}}
    spec = named(render(set_explicitly), "StatefulSet", f"{FULLNAME}-read")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["initContainers"][0]["env"]}
    assert env["IMMUDB_AGENT_SWITCHOVER_TIMEOUT"] == "5s"


def test_a_short_lease_shortens_the_default_hand_over_and_its_grace_check():
    # leaseDuration 6s, pollInterval 2s: two 1 s calls leave a 4 s hand-over; 40 + 4 + 10 fit 60.
    values = {**FAILOVER, "agent": {"pollInterval": "2s"}, "failover": {**FAILOVER["failover"], "leaseDuration": "6s"}}
    render(values)
    with pytest.raises(helm_python.HelmError, match="failover.switchoverTimeout=5s must be above 0 and at most 4000ms"):
        render({**values, "failover": {**values["failover"], "switchoverTimeout": "5s"}})


def test_the_agents_of_immudb_pods_may_call_each_other_with_failover():
    def agent_peers(values, role):
        policy = named(render(values), "NetworkPolicy", f"{FULLNAME}-{role}")
        (rule,) = [r for r in policy["spec"]["ingress"] if r["ports"] == [{"port": 9498, "protocol": "TCP"}]]
        return {p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for p in rule["from"] if "podSelector" in p}

    for role in ("primary", "read"):
        assert {"primary", "read"} <= agent_peers(FAILOVER, role), role
        assert not {"primary", "read"} & agent_peers({}, role), role
