"""The chart rendered by Helm: lint, official Kubernetes and CRD schemas, and semantic checks."""

import base64
import json
import pathlib

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import CHART, NAMESPACE, RELEASE, SCENARIOS, TLS_STANDALONE, named, of_kind, pod_specs, render, render_raw

KUBE_VERSIONS = ("1.29.0", "1.33.0", kubernetes_validate.latest_version())
CRD_DIR = pathlib.Path(__file__).parent / "crds"  # upstream CRDs, vendored (see crds/README.md)
CRD_FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
    "GRPCRoute": "gateway.networking.k8s.io_grpcroutes.yaml",
    "HTTPRoute": "gateway.networking.k8s.io_httproutes.yaml",
}
# Custom resources of operators whose CRDs are not in crds/: checked for shape by their own tests.
UNCHECKED_CUSTOM_KINDS = {"GrafanaDashboard"}
FULLNAME = f"{RELEASE}-immudb"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_strict_lint_passes(name):
    report = helm_python.lint(str(CHART), SCENARIOS[name], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert not problems, problems


def crd_schema(kind, version):
    crd = yaml.safe_load((CRD_DIR / CRD_FILES[kind]).read_text())
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{kind} {version} is not served by the CRD")


def test_every_object_passes_its_schema(scenario):
    _, _, objects = scenario
    for obj in objects:
        kind = obj["kind"]
        if kind in CRD_FILES:
            version = obj["apiVersion"].split("/")[1]
            # Validate without checking the schema itself: CRDs carry Go regexes Python cannot compile.
            jsonschema.Draft7Validator(crd_schema(kind, version)).validate(obj)
        elif kind in UNCHECKED_CUSTOM_KINDS:
            continue
        else:
            for kube in KUBE_VERSIONS:
                kubernetes_validate.validate(obj, kube, strict=True)


def test_every_namespaced_object_names_its_namespace(scenario):
    _, _, objects = scenario
    for obj in objects:
        assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']} {obj['metadata']['name']}"


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def test_services_select_exactly_their_role(scenario):
    _, values, objects = scenario
    pods = {o["metadata"]["name"]: labels for o, _, labels in pod_specs(objects) if o["kind"] == "StatefulSet"}
    failover = values.get("failover", {}).get("enabled", False)
    for svc in of_kind(objects, "Service"):
        selector = dict(svc["spec"]["selector"])
        name = svc["metadata"]["name"]
        if failover and name in (f"{FULLNAME}-primary", f"{FULLNAME}-read"):
            # The role moves with the Lease: the agent labels whichever pod holds it, in
            # either StatefulSet; no pod template carries the label.
            role = "primary" if name.endswith("-primary") else "replica"
            assert selector.pop("immudb/role") == role and "app.kubernetes.io/component" not in selector
            assert all("immudb/role" not in labels for labels in pods.values())
            assert {n for n, labels in pods.items() if selects(selector, labels)} == set(pods), name
            continue
        # The StatefulSet controller adds the pod-name label; a per-replica Service must name a read pod.
        pod_name = selector.pop("statefulset.kubernetes.io/pod-name", None)
        if pod_name is not None:
            assert pod_name.rsplit("-", 1)[0] == f"{FULLNAME}-read"
        selected = {name for name, labels in pods.items() if selects(selector, labels)}
        if name.startswith(f"{FULLNAME}-primary"):
            assert selected == {f"{FULLNAME}-primary"}, name
        else:
            assert selected == {f"{FULLNAME}-read"}, f"{name} selects {selected}"
    if values.get("replicaCount", 2) > 0 and not failover:
        read = named(objects, "Service", f"{FULLNAME}-read")
        assert read["spec"]["selector"]["app.kubernetes.io/component"] == "read"


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def test_hook_addresses_match_the_statefulsets(scenario):
    _, values, objects = scenario
    job = named(objects, "Job", f"{FULLNAME}-hook")
    env = env_of(job["spec"]["template"]["spec"]["containers"][0])
    count = values.get("replicaCount", 2)
    assert env["IMMUDB_HOOK_REPLICA_COUNT"]["value"] == str(count)
    assert env["IMMUDB_HOOK_PRIMARY_HOST"]["value"] == (
        f"{FULLNAME}-primary-0.{FULLNAME}-primary-hl.{NAMESPACE}.svc.cluster.local"
    )
    headless = {s["metadata"]["name"] for s in of_kind(objects, "Service") if s["spec"].get("clusterIP") == "None"}
    assert f"{FULLNAME}-primary-hl" in headless
    if count:
        assert env["IMMUDB_HOOK_REPLICA_SERVICE"]["value"] in headless
        read = named(objects, "StatefulSet", env["IMMUDB_HOOK_REPLICA_STATEFULSET"]["value"])
        assert read["spec"]["replicas"] == count
        assert read["spec"]["serviceName"] == env["IMMUDB_HOOK_REPLICA_SERVICE"]["value"]
    for svc in of_kind(objects, "Service"):
        if svc["spec"].get("clusterIP") == "None":
            assert svc["spec"]["publishNotReadyAddresses"] is True


def test_every_pod_is_pss_restricted(scenario):
    _, _, objects = scenario
    for obj, spec, _ in pod_specs(objects):
        where = f"{obj['kind']} {obj['metadata']['name']}"
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        mounts_tmp = False
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["runAsNonRoot"] is True and sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert "add" not in sc["capabilities"], where
            mounts_tmp = mounts_tmp or any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", []))
        assert mounts_tmp, f"{where}: no /tmp emptyDir under a read-only root"
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, where


def test_immudb_pods_follow_the_volume_rules(scenario):
    _, _, objects = scenario
    for sts in of_kind(objects, "StatefulSet"):
        spec = sts["spec"]["template"]["spec"]
        assert spec["securityContext"]["fsGroup"] == 3322
        data = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "data"]
        assert data == [{"name": "data", "mountPath": "/var/lib/immudb", "subPath": "immudb"}]
        assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def test_no_password_appears_in_plain_text(scenario):
    _, _, objects = scenario
    secrets = [o for o in objects if o["kind"] == "Secret"]
    passwords = {base64.b64decode(v).decode() for s in secrets for v in s.get("data", {}).values()}
    assert "immudb" not in passwords, "never immudb's default password"
    for obj in objects:
        if obj["kind"] == "Secret":
            continue
        text = json.dumps(obj)
        for password in passwords:
            assert password not in text, f"a password appears in {obj['kind']} {obj['metadata']['name']}"
    for obj, spec, _ in pod_specs(objects):
        for c in spec["containers"]:
            for e in c.get("env", []):
                if "PASSWORD" in e["name"] and not e["name"].endswith("_FILE"):
                    assert "valueFrom" in e, f"{e['name']} must come from a Secret"
            assert not any("password" in a.lower() for a in c.get("args", []) + c.get("command", []))


def test_existing_secret_is_used_and_none_generated():
    objects = render({"auth": {"existingSecret": "mine"}})
    assert not of_kind(objects, "Secret")
    sts = named(objects, "StatefulSet", f"{FULLNAME}-primary")
    ref = env_of(sts["spec"]["template"]["spec"]["containers"][0])["IMMUDB_ADMIN_PASSWORD"]
    assert ref["valueFrom"]["secretKeyRef"]["name"] == "mine"


def immutable_statefulset_fields(objects):
    return {
        s["metadata"]["name"]: {
            k: s["spec"].get(k)
            for k in ("selector", "volumeClaimTemplates", "serviceName", "podManagementPolicy")
        }
        for s in of_kind(objects, "StatefulSet")
    }


@pytest.mark.parametrize("change", [{"replicaCount": 5}, {"image": {"tag": "1.11.2"}}])
def test_upgrades_change_no_immutable_statefulset_field(change):
    before = immutable_statefulset_fields(render({"replicaCount": 2}))
    after = immutable_statefulset_fields(render({"replicaCount": 2} | change, is_install=False, is_upgrade=True))
    assert before == after


def test_one_image_for_every_role_and_tag_defaults_to_app_version():
    objects = render({})
    images = {s["spec"]["template"]["spec"]["containers"][0]["image"] for s in of_kind(objects, "StatefulSet")}
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert images == {f"docker.io/codenotary/immudb:{app_version}"}
    digest = "sha256:" + "a" * 64
    pinned = render({"image": {"digest": digest}})
    assert {s["spec"]["template"]["spec"]["containers"][0]["image"] for s in of_kind(pinned, "StatefulSet")} == {
        f"docker.io/codenotary/immudb@{digest}"
    }


def test_storage_class_and_size_are_honoured():
    objects = render({"read": {"persistence": {"storageClass": "fast", "size": "50Gi"}}})
    claim = named(objects, "StatefulSet", f"{FULLNAME}-read")["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast" and claim["resources"]["requests"]["storage"] == "50Gi"


def test_systemdb_mode_gives_replicas_the_current_env_names():
    objects = render({"replication": {"mode": "systemdb"}})
    env = env_of(named(objects, "StatefulSet", f"{FULLNAME}-read")["spec"]["template"]["spec"]["containers"][0])
    assert env["IMMUDB_REPLICATION_IS_REPLICA"]["value"] == "true"
    assert env["IMMUDB_REPLICATION_PRIMARY_HOST"]["value"].startswith(f"{FULLNAME}-primary-0.")
    assert "valueFrom" in env["IMMUDB_REPLICATION_PRIMARY_PASSWORD"]
    for legacy in ("IMMUDB_REPLICATION_ENABLED", "IMMUDB_REPLICATION_MASTER_ADDRESS"):
        assert legacy not in env
    primary = env_of(named(objects, "StatefulSet", f"{FULLNAME}-primary")["spec"]["template"]["spec"]["containers"][0])
    assert not any(k.startswith("IMMUDB_REPLICATION_") for k in primary), "sync env on the primary blocks writes"


def test_network_policy_lets_only_the_expected_peers_in():
    objects = render({})
    primary = named(objects, "NetworkPolicy", f"{FULLNAME}-primary")
    grpc_rule, metrics_rule, agent_rule = primary["spec"]["ingress"]
    components = {p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for p in grpc_rule["from"] if "podSelector" in p}
    assert {"read", "hook", "test"} <= components
    assert [p["port"] for p in metrics_rule["ports"]] == ["metrics"]
    read = named(objects, "NetworkPolicy", f"{FULLNAME}-read")
    read_components = {p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for p in read["spec"]["ingress"][0]["from"] if "podSelector" in p}
    assert "read" not in read_components
    assert "primary" in read_components, "the primary's agent asks replicas what they hold"
    for policy in (primary, read):
        agent_rule = policy["spec"]["ingress"][2]
        assert [p["port"] for p in agent_rule["ports"]] == [9498], "by number: the agent is a native sidecar"
        assert agent_rule["from"][0] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        agent_peers = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in agent_rule["from"][1:]}
        assert agent_peers == {"hook"}, "rebuild-primary as a hook Job asks the agents which replica is Ready"


def agent_of(spec):
    (agent,) = [c for c in spec.get("initContainers", []) if c["name"] == "agent"]
    return agent


def test_every_immudb_pod_carries_the_agent_and_is_ready_only_by_it(scenario):
    _, values, objects = scenario
    port = values.get("agent", {}).get("port", 9498)
    for sts in of_kind(objects, "StatefulSet"):
        spec = sts["spec"]["template"]["spec"]
        agent = agent_of(spec)
        assert agent["restartPolicy"] == "Always", "a native sidecar"
        assert agent["args"] == ["agent"]
        assert {p["name"]: p["containerPort"] for p in agent["ports"]} == {"agent": port}
        assert agent["livenessProbe"]["httpGet"]["path"] == "/livez"
        env = {e["name"]: e.get("value") for e in agent["env"]}
        role = sts["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        assert env["IMMUDB_AGENT_ROLE"] == {"primary": "primary", "read": "replica"}[role]
        assert env["IMMUDB_AGENT_LISTEN"] == f"0.0.0.0:{port}"
        assert (env["IMMUDB_AGENT_WATCH_INTERVAL"], env["IMMUDB_AGENT_STALL_AFTER"]) == ("1s", "10s")
        mounted = {m["mountPath"] for m in agent["volumeMounts"]}
        assert env["IMMUDB_HOOK_SPEC_FILE"].rsplit("/", 1)[0] in mounted
        assert env["IMMUDB_HOOK_REPLICATION_PASSWORD_FILE"].rsplit("/", 1)[0] in mounted
        immudb = spec["containers"][0]
        if values.get("readinessProbe", {}).get("enabled", True):
            assert immudb["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        if "startupProbe" in immudb:
            assert immudb["startupProbe"]["httpGet"]["port"] == "metrics", "loading a large database is immudb's"


def test_max_sessions_leave_room_for_the_chart_s_own_sessions():
    objects = render({"replicaCount": 3, "replication": {"databases": ["a", "b"]}, "immudb": {"maxSessions": 50}})
    sessions = {
        sts["metadata"]["name"]: int(env_of(sts["spec"]["template"]["spec"]["containers"][0])["IMMUDB_MAX_SESSIONS"]["value"])
        for sts in of_kind(objects, "StatefulSet")
    }
    # Primary: 3 replicas x (3 replicators for a, b and the canary + 1 agent) + its agent + 3 jobs.
    assert sessions == {f"{FULLNAME}-primary": 50 + 12 + 4, f"{FULLNAME}-read": 50 + 4}


def test_monitors_scrape_the_agent_too():
    objects = render({"metrics": {"serviceMonitor": {"enabled": True}}})
    (monitor,) = of_kind(objects, "ServiceMonitor")
    ports = [e["port"] for e in monitor["spec"]["endpoints"]]
    assert ports == ["metrics", "agent"]
    for svc in of_kind(objects, "Service"):
        if svc["spec"].get("clusterIP") == "None":
            assert {"metrics", "agent"} <= {p["name"] for p in svc["spec"]["ports"]}
    (pod_monitor,) = of_kind(render({"metrics": {"podMonitor": {"enabled": True}}}), "PodMonitor")
    assert [e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]] == ["metrics", "agent"]


def test_ingress_splits_reads_and_writes_by_host():
    objects = render({"ingress": {"enabled": True, "tls": {"clusterIssuer": "letsencrypt"}}})
    grpc = named(objects, "Ingress", f"{FULLNAME}-grpc")
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    assert grpc["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    backends = {r["host"]: r["http"]["paths"][0]["backend"]["service"]["name"] for r in grpc["spec"]["rules"]}
    assert backends == {"immudb.example.com": f"{FULLNAME}-primary", "read.immudb.example.com": f"{FULLNAME}-read"}
    assert set(grpc["spec"]["tls"][0]["hosts"]) == set(backends)


def test_grpcroutes_point_at_the_write_and_read_services():
    objects = render({"gateway": {"enabled": True, "parentRefs": [{"name": "gw"}]}})
    routes = {r["metadata"]["name"]: r["spec"]["rules"][0]["backendRefs"][0]["name"] for r in of_kind(objects, "GRPCRoute")}
    assert routes == {f"{FULLNAME}-write": f"{FULLNAME}-primary", f"{FULLNAME}-read": f"{FULLNAME}-read"}


def test_hook_job_is_a_post_install_and_post_upgrade_hook():
    job = named(render({}), "Job", f"{FULLNAME}-hook")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    volumes = job["spec"]["template"]["spec"]["volumes"]
    secret = next(v for v in volumes if "secret" in v)
    assert {i["path"] for i in secret["secret"]["items"]} == {"admin-password", "replication-password"}


BAD_VALUES = sorted((pathlib.Path(__file__).parent / "bad-values").glob("*.yaml"))


def test_there_are_at_least_twelve_bad_values_files():
    assert len(BAD_VALUES) >= 12


@pytest.mark.parametrize("path", BAD_VALUES, ids=[p.stem for p in BAD_VALUES])
def test_bad_values_are_rejected_naming_the_value(path):
    text = path.read_text()
    expected = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("# expect:")]
    assert expected, f"{path.name} needs '# expect:' lines"
    values = yaml.safe_load(text)
    with pytest.raises(helm_python.HelmError) as raised:
        chart_ = helm_python.Chart.load(str(CHART))
        chart_.validate_schema(values)
        render_raw(values)
    message = str(raised.value)
    for fragment in expected:
        assert fragment in message, f"{path.name}: {fragment!r} not in {message!r}"


def secret_data(config, **options):
    manifests = config.render(helm_python.Chart.load(str(CHART)), {}, name=RELEASE, namespace=NAMESPACE, **options)
    (secret,) = [d for d in yaml.safe_load_all(manifests["immudb/templates/secret.yaml"]) if d]
    return secret


def test_generated_passwords_survive_an_upgrade():
    from fake_apiserver import FakeApiServer

    api = FakeApiServer()
    try:
        config = helm_python.Config(kube_apiserver=api.url, namespace=NAMESPACE, storage_driver="memory")
        installed = secret_data(config, is_install=True)
        # Without a stored Secret every render generates new passwords...
        assert secret_data(config, is_install=True)["data"] != installed["data"]
        # ...and once the install's Secret exists, an upgrade reads it back unchanged.
        api.store(installed)
        upgraded = secret_data(config, is_upgrade=True)
        assert upgraded["data"] == installed["data"]
        assert f"/api/v1/namespaces/{NAMESPACE}/secrets/{RELEASE}-immudb-auth" in api.requests
        assert upgraded["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    finally:
        api.close()


def test_server_tls_reaches_immudb_probes_the_hook_and_the_edge():
    objects = render(TLS_STANDALONE)
    container = named(objects, "StatefulSet", f"{FULLNAME}-primary")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    assert env["IMMUDB_CERTIFICATE"]["value"] == "/etc/immudb/tls/tls.crt"
    assert env["IMMUDB_PKEY"]["value"] == "/etc/immudb/tls/tls.key"
    assert container["startupProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert "scheme" not in container["readinessProbe"]["httpGet"], "the agent's port is plain HTTP"
    agent = agent_of(named(objects, "StatefulSet", f"{FULLNAME}-primary")["spec"]["template"]["spec"])
    assert env_of(agent)["IMMUDB_HOOK_TLS_CA_FILE"]["value"] == "/var/run/secrets/immudb-tls/ca.crt"
    hook = named(objects, "Job", f"{FULLNAME}-hook")["spec"]["template"]["spec"]
    ca_file = env_of(hook["containers"][0])["IMMUDB_HOOK_TLS_CA_FILE"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in hook["containers"][0]["volumeMounts"]}
    volume = next(v for v in hook["volumes"] if v["name"] == mounts[ca_file.rsplit("/", 1)[0]])
    assert volume["secret"]["secretName"] == "immudb-tls"
    grpc = named(objects, "Ingress", f"{FULLNAME}-grpc")
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPCS"
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["scheme"] == "https"
    plain = named(render({}), "StatefulSet", f"{FULLNAME}-primary")["spec"]["template"]["spec"]["containers"][0]
    assert plain["startupProbe"]["httpGet"]["scheme"] == "HTTP"
    assert "IMMUDB_CERTIFICATE" not in env_of(plain)
