"""Renders the chart with Helm's own engine (helm-python-sdk) for every scenario the tests use."""

import copy
import functools
import pathlib

import helm_python
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "chart"
RELEASE, NAMESPACE = "demo", "db"

# Scenarios: the chart-testing values files, plus a matrix over the values that change the shape.
CI_SCENARIOS = {p.stem: yaml.safe_load(p.read_text()) or {} for p in sorted((CHART / "ci").glob("*-values.yaml"))}
MATRIX = {
    f"replicas{n}-{mode}-ingress{'On' if ing else 'Off'}-netpol{'On' if np else 'Off'}": {
        "replicaCount": n,
        "replication": {"mode": mode},
        "ingress": {"enabled": ing},
        "networkPolicy": {"enabled": np},
    }
    for n in (0, 1, 5)
    for mode in ("database", "systemdb")
    for ing in (True, False)
    for np in (True, False)
}
# Server TLS needs a certificate Secret chart-testing cannot provide, so it is a scenario here only.
TLS_STANDALONE = {
    "replicaCount": 0,
    "immudb": {"tls": {"enabled": True, "existingSecret": "immudb-tls"}},
    "ingress": {"enabled": True},
    "metrics": {"serviceMonitor": {"enabled": True}},
}
# Backups to S3 and a restore at install: their Jobs cannot run under chart-testing without an S3
# server or a backup to restore, so they are scenarios here only.
BACKUP_S3 = {
    "backup": {
        "enabled": True,
        "destination": {
            "type": "s3",
            "s3": {"endpoint": "http://minio.storage:9000", "bucket": "immudb-backups", "pathStyle": True,
                   "existingSecret": "backup-s3"},
        },
        "networkPolicy": {"s3Peers": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
    },
}
RESTORE_AT_INSTALL = {
    "replication": {"databases": ["appdb", "audit"]},
    "backup": {"destination": {"pvc": {"existingClaim": "old-release-backup"}}},
    "restore": {"enabled": True},
}
SCENARIOS = {**CI_SCENARIOS, **MATRIX, "tls-standalone": TLS_STANDALONE, "backup-s3": BACKUP_S3,
             "restore-at-install": RESTORE_AT_INSTALL}


@functools.lru_cache(maxsize=None)
def chart():
    return helm_python.Chart.load(str(CHART))


def render_raw(values=None, **options):
    opts = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True} | options
    return chart().render(copy.deepcopy(values or {}), **opts)


def render(values=None, **options):
    """Every rendered object, NOTES.txt left out."""
    manifests = render_raw(values, **options)
    return [
        doc
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@functools.lru_cache(maxsize=None)
def _rendered(name):
    return render(SCENARIOS[name])


@pytest.fixture(params=sorted(SCENARIOS))
def scenario(request):
    """(name, values, objects) for every scenario."""
    return request.param, SCENARIOS[request.param], _rendered(request.param)


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def named(objects, kind, name):
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_specs(objects):
    """(object, pod spec, pod labels) of every workload and pod."""
    for o in objects:
        if o["kind"] in ("StatefulSet", "Deployment", "Job"):
            template = o["spec"]["template"]
            yield o, template["spec"], template["metadata"].get("labels", {})
        elif o["kind"] == "CronJob":
            template = o["spec"]["jobTemplate"]["spec"]["template"]
            yield o, template["spec"], template["metadata"].get("labels", {})
        elif o["kind"] == "Pod":
            yield o, o["spec"], o["metadata"].get("labels", {})
