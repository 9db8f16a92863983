"""Backups in the chart: the CronJob for both destinations, the restore Job's place before the
replication hook, the network policies, and the values that cannot go together."""

from conftest import BACKUP_S3, CI_SCENARIOS, RESTORE_AT_INSTALL, named, of_kind, render

FULLNAME = "demo-immudb"


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def cronjob(objects):
    return named(objects, "CronJob", f"{FULLNAME}-backup")


def pod_of(cron):
    return cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_no_backup_objects_by_default():
    objects = render({})
    assert not of_kind(objects, "CronJob")
    assert not [o for o in objects if o["metadata"]["name"].endswith(("-backup", "-restore"))]


def test_the_cronjob_backs_up_from_a_replica_into_its_claim():
    objects = render(CI_SCENARIOS["backup-values"])
    cron = cronjob(objects)
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["schedule"] == "17 * * * *"
    assert cron["metadata"]["labels"]["app.kubernetes.io/component"] == "backup"
    pod = pod_of(cron)
    (container,) = pod["containers"]
    assert container["args"] == ["backup"]
    env = env_of(container)
    assert env["IMMUDB_HOOK_DATABASES"] == "appdb"
    assert env["IMMUDB_HOOK_BACKUP_SOURCE"] == "replica"
    assert env["IMMUDB_HOOK_BACKUP_DIR"] == "/backups"
    assert env["IMMUDB_HOOK_BACKUP_KEEP_CHAINS"] == "4"
    assert env["IMMUDB_HOOK_BACKUP_CATCH_UP_TIMEOUT"] == "60s", "a replica first holds what the primary committed"
    assert env["IMMUDB_HOOK_REPLICA_COUNT"] == "2", "the source is chosen among the replicas"
    assert env["IMMUDB_HOOK_AGENT_PORT"] == "9498", "only a replica its agent calls Ready is a source"
    claim = next(v for v in pod["volumes"] if v["name"] == "backups")["persistentVolumeClaim"]["claimName"]
    pvc = named(objects, "PersistentVolumeClaim", claim)
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert {"mountPath": "/backups", "name": "backups"} in container["volumeMounts"]
    assert pod["automountServiceAccountToken"] is False
    assert container["resources"]["limits"]["memory"] == "256Mi"


def test_the_cronjob_writes_to_s3_with_keys_from_a_secret_as_files():
    objects = render(BACKUP_S3)
    pod = pod_of(cronjob(objects))
    (container,) = pod["containers"]
    env = env_of(container)
    assert env["IMMUDB_HOOK_S3_BUCKET"] == "immudb-backups"
    assert env["IMMUDB_HOOK_S3_ENDPOINT"] == "http://minio.storage:9000"
    assert env["IMMUDB_HOOK_S3_PATH_STYLE"] == "true"
    assert "IMMUDB_HOOK_BACKUP_DIR" not in env
    secret = next(v for v in pod["volumes"] if v["name"] == "backup-s3")["secret"]
    assert secret["secretName"] == "backup-s3"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "backup-s3")
    for variable in ("IMMUDB_HOOK_S3_ACCESS_KEY_ID_FILE", "IMMUDB_HOOK_S3_SECRET_ACCESS_KEY_FILE"):
        assert env[variable].startswith(mount["mountPath"] + "/")
    assert not of_kind(objects, "PersistentVolumeClaim")


def test_immudb_pods_admit_backups_and_backups_reach_only_dns_immudb_and_s3():
    objects = render(BACKUP_S3)
    for role in ("primary", "read"):
        policy = named(objects, "NetworkPolicy", f"{FULLNAME}-{role}")
        grpc_rule = policy["spec"]["ingress"][0]
        components = {p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for p in grpc_rule["from"] if "podSelector" in p}
        assert "backup" in components, role
        assert "restore" not in components, "no restore Job, no rule for it"
        # Backups read only from a replica its agent calls Ready: they may ask the agent.
        (agent_rule,) = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 9498]
        agent_peers = {p["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
                       for p in agent_rule["from"] if "podSelector" in p}
        assert agent_peers == {"hook", "backup"}, role
    egress = named(objects, "NetworkPolicy", f"{FULLNAME}-backup")
    assert egress["spec"]["policyTypes"] == ["Egress"]
    assert egress["spec"]["podSelector"]["matchExpressions"][0]["values"] == ["backup", "restore"]
    dns, immudb, s3 = egress["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns
    assert [p["port"] for p in immudb["ports"]] == ["grpc", "metrics", 9498]
    assert immudb["to"][0]["podSelector"]["matchExpressions"][0]["values"] == ["primary", "read"]
    assert s3 == {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 9000, "protocol": "TCP"}]}
    jobs = named(objects, "NetworkPolicy", f"{FULLNAME}-jobs")
    assert "backup" in jobs["spec"]["podSelector"]["matchExpressions"][0]["values"]
    aws = render({"backup": {"enabled": True, "destination": {"type": "s3", "s3": {"bucket": "b-1"}}}})
    *_, s3_rule = named(aws, "NetworkPolicy", f"{FULLNAME}-backup")["spec"]["egress"]
    assert s3_rule == {"ports": [{"port": 443, "protocol": "TCP"}]}
    pvc = named(render(CI_SCENARIOS["backup-values"]), "NetworkPolicy", f"{FULLNAME}-backup")
    assert len(pvc["spec"]["egress"]) == 2, "no S3 rule for a volume destination"


def test_the_restore_job_runs_before_the_replication_hook():
    objects = render(RESTORE_AT_INSTALL)
    job = named(objects, "Job", f"{FULLNAME}-restore")
    hook = named(objects, "Job", f"{FULLNAME}-hook")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install"
    assert int(annotations["helm.sh/hook-weight"]) < int(hook["metadata"]["annotations"]["helm.sh/hook-weight"])
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["restore"]
    env = env_of(container)
    assert env["IMMUDB_HOOK_DATABASES"] == "appdb,audit"
    assert "IMMUDB_HOOK_RESTORE_UP_TO_TX" not in env
    claim = next(v for v in pod["volumes"] if v["name"] == "backups")["persistentVolumeClaim"]["claimName"]
    assert claim == "old-release-backup"
    assert not of_kind(objects, "PersistentVolumeClaim"), "an existing claim is used, none created"
    primary = named(objects, "NetworkPolicy", f"{FULLNAME}-primary")
    components = {p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for p in primary["spec"]["ingress"][0]["from"] if "podSelector" in p}
    assert "restore" in components
    one = render({"restore": {"enabled": True, "databases": ["appdb"], "upToTx": 42, "chain": "20260101T000000Z"}})
    env = env_of(named(one, "Job", f"{FULLNAME}-restore")["spec"]["template"]["spec"]["containers"][0])
    assert env["IMMUDB_HOOK_RESTORE_UP_TO_TX"] == "42"
    assert env["IMMUDB_HOOK_RESTORE_CHAIN"] == "20260101T000000Z"


def test_databases_default_to_the_replicated_names_without_the_canary():
    values = {"replication": {"databases": ["appdb", {"name": "audit", "settings": {"syncFrequency": "20ms"}}]},
              "backup": {"enabled": True}, "restore": {"enabled": True}}
    objects = render(values)
    backup_env = env_of(pod_of(cronjob(objects))["containers"][0])
    assert backup_env["IMMUDB_HOOK_DATABASES"] == "appdb,audit"
    restore_env = env_of(named(objects, "Job", f"{FULLNAME}-restore")["spec"]["template"]["spec"]["containers"][0])
    assert restore_env["IMMUDB_HOOK_DATABASES"] == "appdb,audit"
    chosen = render({"backup": {"enabled": True, "databases": ["audit"]}, "restore": {"enabled": True}})
    restore_env = env_of(named(chosen, "Job", f"{FULLNAME}-restore")["spec"]["template"]["spec"]["containers"][0])
    assert restore_env["IMMUDB_HOOK_DATABASES"] == "audit", "restore follows backup.databases"
