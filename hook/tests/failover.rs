//! Failover end to end: agents against immudb doubles and the Kubernetes API double, configured
//! as the chart configures them (`common::release`: the StatefulSet form, the write Service
//! following the pod labelled primary, a sampler that never sees two writable primaries).

mod common;

use std::time::Duration;

use common::release::*;
use common::*;
use immudb_hook::client::Client;

#[tokio::test]
async fn a_fresh_release_elects_the_primary_statefulsets_pod_and_labels_every_pod() {
    let release = Release::start("1h").await;
    assert!(
        eventually(WAIT, || release.settled_on(0)).await,
        "{:?}",
        release.kube.lease(NS, LEASE)
    );
    assert_eq!(release.transitions(), 0);
    assert_eq!(
        release.kube.pod_labels(NS, &pod_name(0))["immudb/role"],
        "primary"
    );
    for n in [1, 2] {
        assert_eq!(
            release.kube.pod_labels(NS, &pod_name(n))["immudb/role"],
            "replica"
        );
    }
    let tx = write(&release, "k1").await;
    assert!(
        eventually(WAIT, || async {
            release.nodes[1..].iter().all(|n| tx_count(n) >= tx)
        })
        .await
    );
    let primary_agent = release.agents[0].as_ref().unwrap();
    assert_eq!(
        primary_agent
            .metric("immudb_agent_role{agent_role=\"primary\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        primary_agent.metric("immudb_agent_failovers_total").await,
        Some(0.0)
    );
    let replica_agent = release.agents[1].as_ref().unwrap();
    assert_eq!(
        replica_agent
            .metric("immudb_agent_role{agent_role=\"replica\"}")
            .await,
        Some(1.0)
    );
    release.no_two_primaries();
}

#[tokio::test]
async fn losing_the_primary_elects_a_replica_that_holds_every_acknowledged_write() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let key = format!("before-{i}");
        write(&release, &key).await;
        acknowledged.push(key);
    }
    release.lose(0);
    let elected = new_primary_elected(&release).await;
    let other = 3 - elected;
    // Writes through the same Service name succeed again, on the new primary.
    for i in 0..5 {
        let key = format!("after-{i}");
        write(&release, &key).await;
        acknowledged.push(key);
    }
    let new_primary = &release.nodes[elected as usize];
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|k| !holds(new_primary, k))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes missing on the new primary: {lost:?}"
    );
    // The remaining replica follows the new primary with no action.
    assert!(
        eventually(WAIT, || release.settled_on(elected)).await,
        "{:?}",
        release.readyz(other).await
    );
    assert!(
        eventually(WAIT, || async {
            tx_count(&release.nodes[other as usize]) == tx_count(&release.nodes[elected as usize])
        })
        .await
    );
    assert_eq!(release.transitions(), 1);
    let agent = release.agents[elected as usize].as_ref().unwrap();
    assert_eq!(
        agent.metric("immudb_agent_failovers_total").await,
        Some(1.0)
    );
    assert_eq!(
        agent
            .metric("immudb_agent_failover_lost_transactions_total{db=\"appdb\"}")
            .await,
        Some(0.0),
        "sync acks: nothing lost"
    );
    assert_eq!(
        release.kube.pod_labels(NS, &pod_name(elected))["immudb/role"],
        "primary"
    );
    release.no_two_primaries();

    // The old primary returns: a replica of the new primary, Ready once replicating, and a
    // write sent straight to it is refused.
    release.bring_back(0);
    assert!(
        eventually(WAIT, || release.settled_on(elected)).await,
        "{:?}",
        release.readyz(0).await
    );
    assert!(
        eventually(WAIT, || async {
            tx_count(&release.nodes[0]) == tx_count(&release.nodes[elected as usize])
        })
        .await
    );
    assert_eq!(
        release.kube.pod_labels(NS, &pod_name(0))["immudb/role"],
        "replica"
    );
    let direct = Client::new(&target(&release.nodes[0]))
        .unwrap()
        .open_session(&admin(), "appdb")
        .await
        .unwrap();
    let refused = direct.set(b"direct", b"x").await.unwrap_err();
    assert_eq!(
        refused.message,
        "database is read-only because it's a replica"
    );
    let write_tx = write(&release, "after-return").await;
    assert!(eventually(WAIT, || async { tx_count(&release.nodes[0]) >= write_tx }).await);
    assert_eq!(release.transitions(), 1, "no second failover");
    release.no_two_primaries();
}

#[tokio::test]
async fn a_primary_cut_off_from_the_api_fences_itself_before_another_takes_over() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    write(&release, "before").await;
    // The primary's agent can no longer reach the API server; immudb still answers clients.
    release.kube.cut_off("token-0", true);
    let elected = new_primary_elected(&release).await;
    let fenced = release.nodes[0].with_state(|s| s.databases["appdb"].replication.clone());
    assert!(fenced.replica, "the old primary is read-only: {fenced:?}");
    write(&release, "after").await;
    release.no_two_primaries();
    // The API comes back: the old primary follows the new one.
    release.kube.cut_off("token-0", false);
    assert!(
        eventually(WAIT, || release.settled_on(elected)).await,
        "{:?}",
        release.readyz(0).await
    );
    assert!(holds(&release.nodes[0], "after"));
    drop(release.agents.drain(..));
}

#[tokio::test]
async fn a_primary_restart_within_the_lease_and_a_replica_restart_are_no_failover() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    // The primary pod restarts: its agent and immudb are gone for less than the lease.
    release.lose(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.bring_back(0);
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    // A replica restarts (rollout, scale down and up).
    release.lose(2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    release.bring_back(2);
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    write(&release, "k").await;
    assert_eq!(release.transitions(), 0);
    assert_eq!(release.holder(), Some(pod_host(0)));
    for agent in release.agents.iter().flatten() {
        assert_eq!(
            agent.metric("immudb_agent_failovers_total").await,
            Some(0.0)
        );
    }
    release.no_two_primaries();
}

#[tokio::test]
async fn a_failover_is_not_followed_by_another_within_the_cooldown() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    write(&release, "k").await;
    release.lose(0);
    let elected = new_primary_elected(&release).await;
    let other = 3 - elected;
    assert!(eventually(WAIT, || release.settled_on(elected)).await);
    // The new primary is lost too, within the cooldown: the last replica waits and says why.
    release.lose(elected);
    let agent = release.agents[other as usize].as_ref().unwrap();
    assert!(
        eventually(WAIT, || async {
            agent.metric("immudb_agent_primary_reachable").await == Some(0.0)
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        release.holder(),
        Some(pod_host(elected)),
        "no second failover"
    );
    assert_eq!(
        agent
            .metric("immudb_agent_role{agent_role=\"replica\"}")
            .await,
        Some(1.0)
    );
    // The cooldown counts from the Lease's acquireTime: once that is old enough, it takes over.
    let mut lease = release.kube.lease(NS, LEASE).unwrap();
    lease["spec"]["acquireTime"] = "2020-01-01T00:00:00.000000Z".into();
    release.kube.put_lease(NS, lease);
    // Quorum: with one ack among two remaining pods (itself and the old primary, still lost),
    // both must answer; bring the old primary back.
    release.bring_back(0);
    assert!(
        eventually(WAIT, || async { release.holder() == Some(pod_host(other)) }).await,
        "{:?}",
        release.readyz(other).await
    );
    assert_eq!(release.transitions(), 2);
    release.no_two_primaries();
}

#[tokio::test]
async fn an_asynchronous_failover_counts_what_it_lost_and_the_old_primary_is_kept_diverged() {
    let mut release = Release::start_with("1h", async_spec(), &["--allow-data-loss"]).await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    for i in 0..3 {
        write(&release, &format!("replicated-{i}")).await;
    }
    assert!(
        eventually(WAIT, || async {
            release.nodes[1..].iter().all(|n| tx_count(n) == 3)
        })
        .await
    );
    // The replicas stop receiving; the primary acknowledges two more writes, then is lost.
    release.nodes[0].with_state(|s| s.refuse_replication = true);
    write(&release, "only-on-the-old-primary-1").await;
    write(&release, "only-on-the-old-primary-2").await;
    let seen = |n: usize| {
        let agent = release.agents[n].as_ref().unwrap();
        async move {
            agent
                .metric("immudb_agent_lag_transactions{db=\"appdb\"}")
                .await
                == Some(2.0)
        }
    };
    assert!(eventually(WAIT, || seen(1)).await && eventually(WAIT, || seen(2)).await);
    release.lose(0);
    let elected = new_primary_elected(&release).await;
    let agent = release.agents[elected as usize].as_ref().unwrap();
    assert!(
        eventually(WAIT, || async {
            agent.metric("immudb_agent_failovers_total").await == Some(1.0)
        })
        .await
    );
    assert_eq!(
        agent
            .metric("immudb_agent_failover_lost_transactions_total{db=\"appdb\"}")
            .await,
        Some(2.0)
    );
    write(&release, "on-the-new-primary").await;

    // The old primary returns with two committed transactions the new one never had: it is
    // diverged, read-only, not Ready, and keeps them.
    release.nodes[0].with_state(|s| s.refuse_replication = false);
    release.bring_back(0);
    let old = release.agents[0].as_ref().unwrap();
    assert!(
        eventually(WAIT, || async {
            old.metric("immudb_agent_database_state{db=\"appdb\",state=\"diverged\"}")
                .await
                == Some(1.0)
        })
        .await,
        "{:?}",
        old.get("/readyz").await
    );
    let (status, body) = old.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains(
            "database 'appdb' is diverged: holds 5 committed transactions, the primary 4"
        ),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(holds(&release.nodes[0], "only-on-the-old-primary-2"));
    assert_eq!(tx_count(&release.nodes[0]), 5);
    assert!(release.nodes[0].with_state(|s| s.databases["appdb"].replication.replica));
    assert_eq!(
        release.kube.pod_labels(NS, &pod_name(0))["immudb/role"],
        "replica"
    );
    release.no_two_primaries();
}

#[tokio::test]
async fn a_primary_back_on_an_empty_volume_hands_the_lease_to_a_replica_and_copies_it_back() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    for i in 0..4 {
        write(&release, &format!("k{i}")).await;
    }
    assert!(
        eventually(WAIT, || async {
            release.nodes[1..].iter().all(|n| tx_count(n) == 4)
        })
        .await
    );
    // The primary pod restarts within the lease on a new, empty volume.
    release.agents[0] = None;
    drop(release.nodes.remove(0));
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.nodes.insert(0, release.cluster.start_node(0).await);
    release.agents[0] = Some(release.agent(0));
    let elected = new_primary_elected(&release).await;
    assert!(
        eventually(WAIT, || release.settled_on(elected)).await,
        "{:?}",
        release.readyz(0).await
    );
    assert!(eventually(WAIT, || async { tx_count(&release.nodes[0]) == 4 }).await);
    assert!(holds(&release.nodes[0], "k3"));
    write(&release, "after").await;
}

/// The hook binary (the Job, `helm test`) with the release's env and `--lease-name`.
async fn hook_binary(release: &Release, subcommand: &[&str]) -> (Option<i32>, String, String) {
    hook_binary_with(release, &[], subcommand).await
}

/// [`hook_binary`] with more env.
async fn hook_binary_with(
    release: &Release,
    env: &[(&str, &str)],
    subcommand: &[&str],
) -> (Option<i32>, String, String) {
    let cluster = &release.cluster;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_immudb-hook"))
        .envs(env.iter().copied())
        .env("IMMUDB_HOOK_PRIMARY_HOST", pod_host(0))
        .env("IMMUDB_HOOK_REPLICA_STATEFULSET", READ_STATEFULSET)
        .env("IMMUDB_HOOK_REPLICA_SERVICE", "db-immudb-read-hl")
        .env("IMMUDB_HOOK_REPLICA_COUNT", REPLICA_COUNT.to_string())
        .env("IMMUDB_HOOK_REPLICATION_PRIMARY_HOST", WRITE_SERVICE)
        .env("IMMUDB_HOOK_NAMESPACE", NS)
        .env("IMMUDB_HOOK_LEASE_NAME", LEASE)
        .env("IMMUDB_HOOK_KUBE_API_URL", release.kube.url())
        .env("IMMUDB_HOOK_KUBE_TOKEN_FILE", cluster.path("token-1"))
        .env("IMMUDB_HOOK_ADMIN_PASSWORD_FILE", cluster.path("admin"))
        .env(
            "IMMUDB_HOOK_REPLICATION_PASSWORD_FILE",
            cluster.path("replication"),
        )
        .env("IMMUDB_HOOK_SPEC_FILE", cluster.write_spec(&sync_spec()))
        .env("IMMUDB_HOOK_HOSTS_FILE", cluster.path("hosts"))
        .env("IMMUDB_HOOK_RESOLV_CONF", cluster.path("resolv.conf"))
        .env("IMMUDB_HOOK_TIMEOUT_SECONDS", "20")
        .args(subcommand)
        .output()
        .await
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

#[tokio::test]
async fn after_a_failover_the_job_and_helm_test_find_the_primary_through_the_lease() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    write(&release, "k").await;
    release.lose(0);
    let elected = new_primary_elected(&release).await;
    assert!(eventually(WAIT, || release.settled_on(elected)).await);
    let primary = pod_host(elected);
    let named = format!("primary: {primary} (holder of Lease {LEASE})\n");
    // helm test while the old primary's pod is Pending on its lost node: it is one of the
    // replicas the Lease implies and never answers; the test passes and names it.
    let (code, stdout, stderr) = hook_binary_with(
        &release,
        &[("IMMUDB_HOOK_VERIFY_SKIP_AFTER_SECONDS", "2")],
        &["verify", "--database=appdb"],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.starts_with(&named), "{stdout}");
    let lost = pod_host(0);
    let line = stdout
        .lines()
        .find(|l| l.contains(&lost))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("skipped, not running: no answer in 2 s"),
        "{line}"
    );
    assert!(
        stdout.contains(&format!(
            "1 replica(s) returned the probe key; 1 not running, skipped: {lost}"
        )),
        "{stdout}"
    );
    // helm upgrade's Job: the lost pod is a replica now that cannot be reached; the new
    // primary and the other replica are converged already.
    release.bring_back(0);
    assert!(eventually(WAIT, || release.settled_on(elected)).await);
    let (code, stdout, stderr) = hook_binary(&release, &["converge"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.starts_with(&named), "{stdout}");
    assert!(stdout.contains("already converged"), "{stdout}");
    let (code, stdout, stderr) = hook_binary(&release, &["verify", "--database=appdb"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.starts_with(&named), "{stdout}");
    assert!(
        stdout.contains("2 replica(s) returned the probe key"),
        "{stdout}"
    );
    release.no_two_primaries();
}

#[tokio::test]
async fn a_pod_added_by_kubectl_scale_up_to_max_replicas_labels_itself_and_serves_reads() {
    let mut release = Release::start_bounded("1h", sync_spec(), &[], REPLICA_COUNT + 1).await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    let tx = write(&release, "before-scale").await;
    // kubectl scale --replicas=3: read-2 is beyond replicaCount, within maxReplicas.
    let added = release.scale_up().await;
    assert!(
        eventually(WAIT, || release.settled_on(0)).await,
        "{:?}",
        release.readyz(added).await
    );
    assert_eq!(
        release
            .kube
            .pod_labels(NS, &pod_name(added))
            .get("immudb/role"),
        Some(&"replica".to_string())
    );
    let ip = release.cluster.host(added);
    assert!(
        eventually(WAIT, || async {
            release
                .kube
                .selected_ips(NS, "immudb/role", "replica")
                .contains(&ip)
        })
        .await,
        "the read Service routes to it"
    );
    assert!(tx_count(&release.nodes[added as usize]) >= tx);
    // One more, beyond maxReplicas: it replicates, but may not label itself, so no Service
    // routes to it.
    let beyond = release.scale_up().await;
    let agent = release.agents[beyond as usize].as_ref().unwrap();
    assert!(
        eventually(WAIT, || agent.ready()).await,
        "{:?}",
        agent.get("/readyz").await
    );
    assert!(holds(&release.nodes[beyond as usize], "before-scale"));
    assert_eq!(
        release
            .kube
            .pod_labels(NS, &pod_name(beyond))
            .get("immudb/role"),
        None
    );
    assert!(!release
        .kube
        .selected_ips(NS, "immudb/role", "replica")
        .contains(&release.cluster.host(beyond)));
    release.no_two_primaries();
}

#[tokio::test]
async fn a_pod_added_by_kubectl_scale_counts_in_the_election_it_may_hold_acknowledged_writes() {
    let mut release = Release::start("1h").await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    let added = release.scale_up().await;
    assert!(eventually(WAIT, || release.settled_on(0)).await);
    // The declared replicas are cut off; the added pod alone acknowledges the next write.
    release.nodes[1].isolate(true);
    release.nodes[2].isolate(true);
    write(&release, "acknowledged-by-the-added-pod").await;
    assert!(holds(
        &release.nodes[added as usize],
        "acknowledged-by-the-added-pod"
    ));
    // The primary's node and the added pod's are lost; the declared replicas come back.
    release.lose(0);
    release.lose(added);
    release.nodes[1].isolate(false);
    release.nodes[2].isolate(false);
    // With 1 ack among 3 pods that may hold acknowledged writes, all 3 must answer: electing
    // read-0 or read-1 would lose the write. The Lease expires after 1 s; they keep waiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(release.holder(), Some(pod_host(0)), "nobody took the Lease");
    for n in [1, 2] {
        assert!(!holds(&release.nodes[n], "acknowledged-by-the-added-pod"));
    }
    // The added pod returns: it holds the write and is elected.
    release.bring_back(added);
    assert!(
        eventually(WAIT, || release.settled_on(added)).await,
        "{:?}",
        release.kube.lease(NS, LEASE)
    );
    assert!(holds(
        &release.nodes[added as usize],
        "acknowledged-by-the-added-pod"
    ));
    write(&release, "after").await;
    release.no_two_primaries();
}
