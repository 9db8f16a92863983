"""Named ports resolve where Kubernetes and Prometheus resolve them.

The EndpointSlice controller resolves a Service's named targetPort against the pod's regular
containers only, and NetworkPolicy controllers (kube-network-policies, Calico, Cilium) resolve named
ports the same way: a name declared only on a native sidecar (a restartable init container) is
dropped from the EndpointSlices and matches nothing in a policy. Prometheus's pod-role discovery
(PodMonitor) does include init containers; a ServiceMonitor endpoint must be a port the Service
itself declares and the EndpointSlices carry.
"""

import pytest

from conftest import SCENARIOS, of_kind, pod_specs, render


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def matches(label_selector, labels):
    """A metav1.LabelSelector (matchLabels and matchExpressions with In/NotIn/Exists)."""
    if not selects(label_selector.get("matchLabels"), labels):
        return False
    for expr in label_selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def immudb_pods(objects):
    """(labels, regular container port names, init container port names) of every StatefulSet's pods."""
    for obj, spec, labels in pod_specs(objects):
        if obj["kind"] != "StatefulSet":
            continue
        regular = {p["name"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}
        init = {p["name"] for c in spec.get("initContainers", []) for p in c.get("ports", []) if "name" in p}
        yield labels, regular, init


def unresolvable(port, pods, where):
    """Why a named port cannot be resolved on the given pods' regular containers, or None."""
    if isinstance(port, int):
        return None
    pods = list(pods)
    missing = [labels.get("app.kubernetes.io/component") for labels, regular, _ in pods if port not in regular]
    if not missing:
        return None
    only_init = [labels.get("app.kubernetes.io/component") for labels, regular, init in pods
                 if port not in regular and port in init]
    why = "declared only on an init container (a native sidecar)" if only_init else "declared by no container"
    return f"{where}: port {port!r} is {why} of the {sorted(set(missing))} pods; use the number"


def service_problems(objects):
    pods = list(immudb_pods(objects))
    for svc in of_kind(objects, "Service"):
        selector = {k: v for k, v in (svc["spec"].get("selector") or {}).items()
                    if k != "statefulset.kubernetes.io/pod-name"}
        if not selector:
            continue
        selected = [p for p in pods if selects(selector, p[0])]
        for port in svc["spec"]["ports"]:
            problem = unresolvable(port.get("targetPort", port["port"]), selected,
                                   f"Service {svc['metadata']['name']} port {port['name']}")
            if problem:
                yield problem


def network_policy_problems(objects):
    pods = list(immudb_pods(objects))
    for policy in of_kind(objects, "NetworkPolicy"):
        selected = [p for p in pods if matches(policy["spec"]["podSelector"], p[0])]
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                problem = unresolvable(port.get("port"), selected, f"NetworkPolicy {name} ingress")
                if problem:
                    yield problem
        for rule in policy["spec"].get("egress", []):
            # An egress named port resolves on the destination pods.
            destinations = [p for p in pods
                            if any("podSelector" in peer and matches(peer["podSelector"], p[0])
                                   for peer in rule.get("to", []))]
            if not destinations:
                continue
            for port in rule.get("ports", []):
                problem = unresolvable(port.get("port"), destinations, f"NetworkPolicy {name} egress")
                if problem:
                    yield problem


@pytest.fixture(scope="module")
def sidecar_named_in_service_and_policy():
    """Today's templates with the mistake put back: the agent's port referred to by name."""
    objects = render({"metrics": {"serviceMonitor": {"enabled": True}}})
    for svc in of_kind(objects, "Service"):
        for port in svc["spec"]["ports"]:
            if port["name"] == "agent":
                port["targetPort"] = "agent"
    for policy in of_kind(objects, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if port.get("port") == 9498:
                    port["port"] = "agent"
    return objects


def test_the_check_catches_a_sidecar_port_referred_to_by_name(sidecar_named_in_service_and_policy):
    problems = list(service_problems(sidecar_named_in_service_and_policy))
    problems += list(network_policy_problems(sidecar_named_in_service_and_policy))
    assert any("Service" in p and "'agent'" in p and "init container" in p for p in problems), problems
    assert any("NetworkPolicy" in p and "'agent'" in p and "init container" in p for p in problems), problems


def test_service_target_ports_resolve_on_regular_containers(scenario):
    _, _, objects = scenario
    assert list(service_problems(objects)) == []


def test_network_policy_ports_resolve_on_regular_containers(scenario):
    _, _, objects = scenario
    assert list(network_policy_problems(objects)) == []


def endpoint_slice_ports(objects, svc):
    """The port names an EndpointSlice of this Service carries for the immudb pods it selects."""
    pods = [p for p in immudb_pods(objects) if selects(svc["spec"].get("selector"), p[0])]
    return {port["name"] for port in svc["spec"]["ports"]
            if pods and unresolvable(port.get("targetPort", port["port"]), pods, "") is None}


@pytest.mark.parametrize("monitor", ["serviceMonitor", "podMonitor"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_monitor_endpoints_resolve_to_declared_ports(name, monitor):
    values = dict(SCENARIOS[name])
    other = "podMonitor" if monitor == "serviceMonitor" else "serviceMonitor"  # the chart allows one of them
    values["metrics"] = {**values.get("metrics", {}), monitor: {"enabled": True}, other: {"enabled": False}}
    objects = render(values)
    kind = "ServiceMonitor" if monitor == "serviceMonitor" else "PodMonitor"
    (mon,) = of_kind(objects, kind)
    if kind == "ServiceMonitor":
        services = [s for s in of_kind(objects, "Service") if matches(mon["spec"]["selector"], s["metadata"]["labels"])]
        carried = set().union(*(endpoint_slice_ports(objects, s) for s in services))
        for endpoint in mon["spec"]["endpoints"]:
            assert endpoint["port"] in carried, (
                f"{kind} endpoint {endpoint['port']!r}: no selected Service's EndpointSlices carry it ({sorted(carried)})")
    else:
        pods = [p for p in immudb_pods(objects) if matches(mon["spec"]["selector"], p[0])]
        assert pods
        for endpoint in mon["spec"]["podMetricsEndpoints"]:
            for labels, regular, init in pods:
                assert endpoint["port"] in regular | init, (
                    f"{kind} endpoint {endpoint['port']!r} is not a port of the "
                    f"{labels.get('app.kubernetes.io/component')} pods")
