//! The hook's Kubernetes client against the in-process API double: Leases with optimistic
//! concurrency, the chart's Role enforced, pod labels by merge patch.

use std::time::{Duration, SystemTime};

use immudb_hook::kube::{
    micro_time, Kube, KubeConfig, KubeError, Lease, LeaseSpec, ObjectMeta, PodView,
};
use kube_double::{KubeDouble, Rule};

const NS: &str = "db";
const LEASE: &str = "db-immudb-primary";

async fn setup() -> (KubeDouble, Kube, tempfile::TempDir) {
    let double = KubeDouble::start(Rule::chart(
        LEASE,
        "db-immudb-read",
        LEASE,
        &["db-immudb-primary-0", "db-immudb-read-0"],
    ))
    .await
    .unwrap();
    double.add_token("token-1");
    double.add_pod(
        NS,
        "db-immudb-read-0",
        &[("app.kubernetes.io/component", "read")],
        "10.0.0.2",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "token-1\n").unwrap();
    let kube = Kube::new(KubeConfig {
        url: double.url(),
        token_file: dir.path().join("token"),
        ca: None,
        namespace: NS.into(),
        call_timeout: Duration::from_secs(2),
    });
    (double, kube, dir)
}

fn lease(holder: &str, version: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: LEASE.into(),
            resource_version: version.into(),
            ..Default::default()
        },
        spec: LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(micro_time(SystemTime::now())),
            renew_time: Some(micro_time(SystemTime::now())),
            lease_transitions: Some(0),
        },
    }
}

#[tokio::test]
async fn a_lease_is_created_once_and_replaced_only_from_its_current_version() {
    let (_double, kube, _dir) = setup().await;
    assert_eq!(kube.get_lease(LEASE).await.unwrap(), None);
    let created = kube.create_lease(&lease("a", "")).await.unwrap();
    assert_eq!(created.holder(), Some("a"));
    assert!(matches!(
        kube.create_lease(&lease("b", "")).await,
        Err(KubeError::Conflict(_))
    ));
    let version = created.metadata.resource_version.clone();
    let renewed = kube.replace_lease(&lease("a", &version)).await.unwrap();
    assert_ne!(renewed.metadata.resource_version, version);
    // A writer that read the old version loses: someone else won.
    assert!(matches!(
        kube.replace_lease(&lease("b", &version)).await,
        Err(KubeError::Conflict(_))
    ));
    let read = kube.get_lease(LEASE).await.unwrap().unwrap();
    assert_eq!(read.holder(), Some("a"));
    assert_eq!(read.record().version, renewed.metadata.resource_version);
}

#[tokio::test]
async fn the_role_allows_only_the_release_lease_and_its_pods() {
    let (_double, kube, dir) = setup().await;
    let other = Lease {
        metadata: ObjectMeta {
            name: "kube-scheduler".into(),
            ..Default::default()
        },
        ..lease("a", "")
    };
    assert!(matches!(
        kube.get_lease("kube-scheduler").await,
        Err(KubeError::Forbidden { status: 403, .. })
    ));
    // create cannot be limited by name: the Role allows it, then update is refused.
    kube.create_lease(&other).await.unwrap();
    assert!(matches!(
        kube.replace_lease(&other).await,
        Err(KubeError::Forbidden { status: 403, .. })
    ));
    assert!(matches!(
        kube.label_pod("some-other-pod", "immudb/role", Some("primary"))
            .await,
        Err(KubeError::Forbidden { status: 403, .. })
    ));
    std::fs::write(dir.path().join("token"), "stolen").unwrap();
    assert!(matches!(
        kube.get_lease(LEASE).await,
        Err(KubeError::Forbidden { status: 401, .. })
    ));
}

#[tokio::test]
async fn a_label_is_set_and_removed_by_merge_patch_leaving_the_others() {
    let (double, kube, _dir) = setup().await;
    kube.label_pod("db-immudb-read-0", "immudb/role", Some("primary"))
        .await
        .unwrap();
    let labels = double.pod_labels(NS, "db-immudb-read-0");
    assert_eq!(labels["immudb/role"], "primary");
    assert_eq!(labels["app.kubernetes.io/component"], "read");
    assert!(
        double.selected_ips(NS, "immudb/role", "primary").is_empty(),
        "not Ready yet"
    );
    double.set_ready(NS, "db-immudb-read-0", true);
    assert_eq!(
        double.selected_ips(NS, "immudb/role", "primary"),
        vec!["10.0.0.2"]
    );
    kube.label_pod("db-immudb-read-0", "immudb/role", None)
        .await
        .unwrap();
    assert!(!double
        .pod_labels(NS, "db-immudb-read-0")
        .contains_key("immudb/role"));
    // A pod of the Role's list that does not exist (yet).
    assert!(matches!(
        kube.label_pod("db-immudb-primary-0", "immudb/role", Some("primary"))
            .await,
        Err(KubeError::NotFound(_))
    ));
}

#[tokio::test]
async fn the_replica_statefulset_counts_the_pods_it_wants_and_those_still_there() {
    let (double, kube, _dir) = setup().await;
    assert!(matches!(
        kube.statefulset_pods("db-immudb-read").await,
        Err(KubeError::NotFound(_))
    ));
    // Scaled up by an HPA: the new pod counts before the controller has created it.
    double.scale_statefulset(NS, "db-immudb-read", 3, 2);
    assert_eq!(kube.statefulset_pods("db-immudb-read").await, Ok(3));
    // Scaled down: the pod being removed counts until it is gone.
    double.scale_statefulset(NS, "db-immudb-read", 1, 3);
    assert_eq!(kube.statefulset_pods("db-immudb-read").await, Ok(3));
    double.scale_statefulset(NS, "db-immudb-read", 1, 1);
    assert_eq!(kube.statefulset_pods("db-immudb-read").await, Ok(1));
    // Only the release's StatefulSets, and only read.
    double.scale_statefulset(NS, "other", 1, 1);
    assert!(matches!(
        kube.statefulset_pods("other").await,
        Err(KubeError::Forbidden { status: 403, .. })
    ));
}

#[tokio::test]
async fn a_rolling_update_shows_in_the_statefulset_s_revisions_and_each_pod_s_label() {
    let (double, kube, _dir) = setup().await;
    double.scale_statefulset(NS, "db-immudb-primary", 1, 1);
    double.set_revisions(NS, "db-immudb-primary", "primary-1", "primary-1");
    let primary = kube.statefulset(LEASE).await.unwrap();
    assert_eq!(primary.update_revision.as_deref(), Some("primary-1"));
    assert!(!primary.rolling());
    // helm upgrade: a new template; the pod not rolled yet still runs the old revision.
    double.set_revisions(NS, "db-immudb-primary", "primary-2", "primary-1");
    assert!(kube.statefulset(LEASE).await.unwrap().rolling());
    double.add_pod(
        NS,
        "db-immudb-primary-0",
        &[("controller-revision-hash", "primary-1")],
        "10.0.0.1",
    );
    let pod = kube.pod("db-immudb-primary-0").await.unwrap().unwrap();
    assert_eq!(
        pod,
        PodView {
            labels: [(
                "controller-revision-hash".to_string(),
                "primary-1".to_string()
            )]
            .into(),
            revision: Some("primary-1".into()),
            terminating: false,
            ready: false
        }
    );
    double.set_ready(NS, "db-immudb-primary-0", true);
    double.terminate_pod(NS, "db-immudb-primary-0");
    let pod = kube.pod("db-immudb-primary-0").await.unwrap().unwrap();
    assert!(pod.terminating && pod.ready);
    // A pod of the Role's list that does not exist (being recreated); one beyond it: refused.
    assert_eq!(kube.pod("db-immudb-read-5").await, Err(KubeError::Forbidden {
        what: "get pod db-immudb-read-5".into(),
        status: 403,
        message: "pods \"db-immudb-read-5\" is forbidden: User \"system:serviceaccount:db:immudb\" cannot get resource \"pods\" in API group \"\" in the namespace \"db\"".into(),
    }));
    double.remove_pod(NS, "db-immudb-read-0");
    assert_eq!(kube.pod("db-immudb-read-0").await, Ok(None));
}

#[tokio::test]
async fn a_service_keeps_its_terminating_pod_until_another_is_ready() {
    let (double, _kube, _dir) = setup().await;
    for (pod, ip) in [
        ("db-immudb-primary-0", "10.0.0.1"),
        ("db-immudb-read-0", "10.0.0.2"),
    ] {
        double.add_pod(NS, pod, &[("immudb/role", "primary")], ip);
    }
    double.set_ready(NS, "db-immudb-primary-0", true);
    double.terminate_pod(NS, "db-immudb-primary-0");
    assert_eq!(
        double.selected_ips(NS, "immudb/role", "primary"),
        vec!["10.0.0.1"],
        "the only serving endpoint, terminating"
    );
    double.set_ready(NS, "db-immudb-read-0", true);
    assert_eq!(
        double.selected_ips(NS, "immudb/role", "primary"),
        vec!["10.0.0.2"]
    );
    double.set_ready(NS, "db-immudb-read-0", false);
    double.set_ready(NS, "db-immudb-primary-0", false);
    assert!(double.selected_ips(NS, "immudb/role", "primary").is_empty());
}

#[tokio::test]
async fn an_unreachable_api_server_is_a_transient_failure_after_the_call_timeout() {
    use immudb_hook::retry::Transient;
    let (double, _, dir) = setup().await;
    let kube = Kube::new(KubeConfig {
        url: double.url(),
        token_file: dir.path().join("token"),
        ca: None,
        namespace: NS.into(),
        call_timeout: Duration::from_millis(100),
    });
    double.cut_off("token-1", true);
    let error = kube.get_lease(LEASE).await.unwrap_err();
    assert!(matches!(error, KubeError::Unreachable { .. }), "{error}");
    assert!(error.is_transient());
    double.cut_off("token-1", false);
    assert_eq!(kube.get_lease(LEASE).await.unwrap(), None);
}
