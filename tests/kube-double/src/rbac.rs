//! RBAC as the API server evaluates a Role: a request is allowed when one rule names its API
//! group, resource and verb, and, if the rule lists resourceNames, the object's name. A rule with
//! resourceNames never allows `create` or `list` (the name is not part of the request's URL).

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub resource_names: Vec<String>,
}

/// The chart's Role with failover on, one list shared with the chart's tests
/// (`tests/chart/test_failover.py` compares the rendered Role with it).
pub const CHART_ROLE: &str = include_str!("../chart-role.json");

fn strings(value: &Value, key: &str) -> Vec<String> {
    value[key]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    /// The chart's rules for a release whose Lease is `lease`, whose StatefulSets are
    /// `read_statefulset` and `primary_statefulset` and whose pods that may label themselves
    /// are `pods`.
    pub fn chart(
        lease: &str,
        read_statefulset: &str,
        primary_statefulset: &str,
        pods: &[&str],
    ) -> Vec<Rule> {
        let rules: Value = serde_json::from_str(CHART_ROLE).expect("chart-role.json is JSON");
        rules
            .as_array()
            .expect("a list of rules")
            .iter()
            .map(|rule| Rule {
                api_groups: strings(rule, "apiGroups"),
                resources: strings(rule, "resources"),
                verbs: strings(rule, "verbs"),
                resource_names: strings(rule, "resourceNames")
                    .into_iter()
                    .flat_map(|name| match name.as_str() {
                        "$LEASE" => vec![lease.to_string()],
                        "$READ_STATEFULSET" => vec![read_statefulset.to_string()],
                        "$PRIMARY_STATEFULSET" => vec![primary_statefulset.to_string()],
                        "$PODS" => pods.iter().map(|p| p.to_string()).collect(),
                        _ => vec![name],
                    })
                    .collect(),
            })
            .collect()
    }

    fn allows(&self, group: &str, resource: &str, verb: &str, name: Option<&str>) -> bool {
        let has = |list: &[String], item: &str| list.iter().any(|x| x == item || x == "*");
        has(&self.api_groups, group)
            && has(&self.resources, resource)
            && has(&self.verbs, verb)
            && (self.resource_names.is_empty()
                || name.is_some_and(|n| self.resource_names.iter().any(|r| r == n)))
    }
}

/// Whether any rule allows the request.
pub fn allowed(
    rules: &[Rule],
    group: &str,
    resource: &str,
    verb: &str,
    name: Option<&str>,
) -> bool {
    rules.iter().any(|r| r.allows(group, resource, verb, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_role_allows_exactly_the_failover_calls() {
        let rules = Rule::chart(
            "db-primary",
            "db-read",
            "db-primary",
            &["db-primary-0", "db-read-0"],
        );
        let lease = |verb, name| allowed(&rules, "coordination.k8s.io", "leases", verb, name);
        assert!(lease("create", None));
        assert!(lease("get", Some("db-primary")));
        assert!(lease("update", Some("db-primary")));
        assert!(!lease("get", Some("kube-scheduler")));
        assert!(!lease("delete", Some("db-primary")));
        assert!(!lease("list", None));
        let pod = |verb, name| allowed(&rules, "", "pods", verb, name);
        assert!(pod("patch", Some("db-read-0")));
        assert!(!pod("patch", Some("other-0")));
        assert!(pod("get", Some("db-read-0")));
        assert!(!pod("get", Some("other-0")));
        assert!(!pod("list", None));
        assert!(!pod("delete", Some("db-read-0")));
        let statefulset = |verb, name| allowed(&rules, "apps", "statefulsets", verb, name);
        assert!(statefulset("get", Some("db-read")));
        assert!(statefulset("get", Some("db-primary")));
        assert!(!statefulset("get", Some("other")));
        assert!(!statefulset("patch", Some("db-read")));
        assert!(!statefulset("list", None));
        assert!(!allowed(&rules, "", "secrets", "get", Some("db-auth")));
    }
}
