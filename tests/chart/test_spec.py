"""The desired-state spec the chart renders for the hook: its content, and the hook's own parser
accepting it for every scenario (`immudb-hook converge --check`, which touches no server)."""

import functools
import json
import subprocess

import pytest

from conftest import CHART, SCENARIOS, named, render, render_raw

REPO = CHART.parent
FULLNAME = "demo-immudb"


@functools.lru_cache(maxsize=None)
def hook_binary():
    subprocess.run(["cargo", "build", "--locked", "--quiet", "-p", "immudb-hook"], cwd=REPO, check=True)
    return REPO / "target" / "debug" / "immudb-hook"


def spec_of(objects):
    return json.loads(named(objects, "ConfigMap", f"{FULLNAME}-spec")["data"]["spec.json"])


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def hook_check(values, tmp_path):
    """`converge --check` on the rendered spec: its stdout, after asserting it accepted the spec."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_of(render(values))))
    password = tmp_path / "pw"
    password.write_text("pw")
    replicas = ",".join(f"r{i}" for i in range(values.get("replicaCount", 2)))
    result = subprocess.run(
        [str(hook_binary()), "--primary-host=p", f"--admin-password-file={password}", f"--replicas={replicas}",
         "converge", f"--spec-file={spec}", f"--replication-password-file={password}", "--check"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "the configuration is valid" in result.stdout
    return result.stdout


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_hook_accepts_the_rendered_spec(name, tmp_path):
    hook_check(SCENARIOS[name], tmp_path)


def sync_frequencies(check_output):
    """Each database's syncFrequency as the hook applies it on the primary and every replica."""
    found = {}
    for line in check_output.splitlines():
        if line.startswith("database "):
            name, settings = line.removeprefix("database ").split(": ", 1)
            found[name] = dict(s.split("=", 1) for s in settings.split())["syncFrequency"]
    return found


SYNC = {"replication": {"sync": {"enabled": True, "acks": 1}}}


@pytest.mark.parametrize("values, expected", [({}, "5ms"), (SYNC, "1ms")], ids=["async", "sync"])
def test_sync_frequency_auto_follows_the_replication_mode_on_every_database_and_node(values, expected, tmp_path):
    values = {**values, "replication": {**values.get("replication", {}), "databases": ["appdb", "audit"]}}
    assert spec_of(render(values))["settings"]["syncFrequency"] == expected
    # One spec for every pod: the agents of both roles and the Job read the same ConfigMap.
    objects = render(values)
    for kind, name in [("StatefulSet", f"{FULLNAME}-primary"), ("StatefulSet", f"{FULLNAME}-read"), ("Job", f"{FULLNAME}-hook")]:
        volumes = named(objects, kind, name)["spec"]["template"]["spec"]["volumes"]
        assert {"name": "spec", "configMap": {"name": f"{FULLNAME}-spec"}} in volumes, name
    assert sync_frequencies(hook_check(values, tmp_path)) == {"appdb": expected, "audit": expected, "chart_canary": expected}


def test_an_explicit_sync_frequency_wins_over_auto(tmp_path):
    overrides = ["appdb", {"name": "audit", "settings": {"syncFrequency": "20ms"}}, {"name": "ledger", "settings": {"syncFrequency": "auto"}}]
    explicit = {"replication": {**SYNC["replication"], "databases": overrides}, "databaseSettings": {"syncFrequency": "2ms"}}
    assert sync_frequencies(hook_check(explicit, tmp_path)) == {"appdb": "2ms", "audit": "20ms", "ledger": "1ms", "chart_canary": "2ms"}
    async_override = {"replication": {"databases": overrides}}
    assert sync_frequencies(hook_check(async_override, tmp_path)) == {"appdb": "5ms", "audit": "20ms", "ledger": "5ms", "chart_canary": "5ms"}
    unmanaged = {**SYNC, "databaseSettings": {"syncFrequency": None}}
    assert "syncFrequency" not in spec_of(render(unmanaged))["settings"]


def test_settings_and_overrides_reach_the_spec():
    values = {
        "replication": {"databases": ["appdb", {"name": "audit", "settings": {"syncFrequency": "20ms", "maxKeyLen": 512}}]},
        "databaseSettings": {"syncFrequency": "1ms", "fileSize": 1048576, "retentionPeriod": "30d", "applySettings": "immediately"},
    }
    spec = spec_of(render(values))
    assert spec["applySettings"] == "immediately"
    assert spec["settings"] == {"syncFrequency": "1ms", "maxConcurrency": 30, "fileSize": 1048576, "retentionPeriod": "30d"}
    databases = {d["name"]: d["settings"] for d in spec["databases"]}
    assert databases == {"appdb": {}, "audit": {"syncFrequency": "20ms", "maxKeyLen": 512}, "chart_canary": {}}
    assert spec["replication"]["commitConcurrency"] == 30


def test_the_job_reads_the_spec_from_the_configmap():
    objects = render({})
    job = named(objects, "Job", f"{FULLNAME}-hook")["spec"]["template"]["spec"]
    container = job["containers"][0]
    spec_file = env_of(container)["IMMUDB_HOOK_SPEC_FILE"]
    mount = next(m for m in container["volumeMounts"] if spec_file.startswith(m["mountPath"]))
    volume = next(v for v in job["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == f"{FULLNAME}-spec"
    assert not any(k in env_of(container) for k in ("IMMUDB_HOOK_DATABASES", "IMMUDB_HOOK_SYNC_ACKS"))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_helm_test_never_writes_into_a_user_database(name):
    values = SCENARIOS[name]
    objects = render(values)
    pod = named(objects, "Pod", f"{FULLNAME}-verify")
    env = env_of(pod["spec"]["containers"][0])
    spec = spec_of(objects)
    user_databases = set(values.get("replication", {}).get("databases", ["appdb"]))
    if env.get("IMMUDB_HOOK_VERIFY_READ_ONLY") == "true":
        return
    canary = env["IMMUDB_HOOK_VERIFY_DATABASE"]
    assert canary not in user_databases and canary != "defaultdb"
    assert canary in [d["name"] for d in spec["databases"]], "the canary is created and replicated"


def test_systemdb_mode_verifies_read_only():
    objects = render({"replication": {"mode": "systemdb"}})
    env = env_of(named(objects, "Pod", f"{FULLNAME}-verify")["spec"]["containers"][0])
    assert env["IMMUDB_HOOK_VERIFY_READ_ONLY"] == "true"
    assert "databases" not in spec_of(objects)
    manifests = render_raw({"replication": {"canaryDatabase": ""}})
    assert "IMMUDB_HOOK_VERIFY_READ_ONLY" in manifests["immudb/templates/tests/verify-pod.yaml"]
