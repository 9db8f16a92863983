//! `agent`'s command line: its flags, validated with the shared ones into an [`AgentConfig`]
//! before the agent starts serving.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::config::{
    check_host, read_password, reject, spec, ConfigError, Desired, Spec, Topology, TopologyArgs,
};
use crate::kube::{KubeConfig, LeaseArgs, LeaseLookup};
use crate::plan::failover::Timing;
use crate::plan::health::Limits;
use crate::plan::progress::Bounds;
use crate::types::settings::duration_flag;
use crate::types::Credentials;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum AgentRole {
    Primary,
    Replica,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The role of the pod the agent runs in.
    #[arg(long, env = "IMMUDB_AGENT_ROLE", value_enum)]
    pub role: AgentRole,
    /// The desired state (JSON), re-read every poll.
    #[arg(long, env = "IMMUDB_HOOK_SPEC_FILE")]
    pub spec_file: PathBuf,
    /// File holding the replication user's password.
    #[arg(long, env = "IMMUDB_HOOK_REPLICATION_PASSWORD_FILE")]
    pub replication_password_file: PathBuf,
    /// Address of the agent's HTTP port (/readyz, /livez, /metrics).
    #[arg(long, env = "IMMUDB_AGENT_LISTEN", default_value = "0.0.0.0:9498")]
    pub listen: SocketAddr,
    /// Where the local immudb listens (the pod's own loopback).
    #[arg(long, env = "IMMUDB_AGENT_LOCAL_ADDRESS", default_value = "127.0.0.1")]
    pub local_address: IpAddr,
    /// Time between polls.
    #[arg(long, env = "IMMUDB_AGENT_POLL_INTERVAL", default_value = "5s", value_parser = duration_flag)]
    pub poll_interval: Duration,
    /// Between polls, a replica's agent looks this often at what it and the primary hold: lag is
    /// measured, and an idle replicator woken, at this rate (from --poll-interval on, the polls
    /// alone do it).
    #[arg(long, env = "IMMUDB_AGENT_WATCH_INTERVAL", default_value = "1s", value_parser = duration_flag)]
    pub watch_interval: Duration,
    /// A replica is Ready only while it holds everything the primary had this long ago (a
    /// replica that advances, such as one catching up).
    #[arg(long, env = "IMMUDB_AGENT_MAX_LAG", default_value = "180s", value_parser = duration_flag)]
    pub max_lag: Duration,
    /// A replica database that lacks transactions and has not advanced this long is `stalled`
    /// and the pod not Ready (an asynchronous one was woken and did not move).
    #[arg(long, env = "IMMUDB_AGENT_STALL_AFTER", default_value = "10s", value_parser = duration_flag)]
    pub stall_after: Duration,
    /// An asynchronous replica database that lacks transactions and has not advanced this long
    /// gets its replicator woken; immudb's replicator fetches again within 2 s of an empty fetch.
    #[arg(long, env = "IMMUDB_AGENT_WAKE_AFTER", default_value = "2s", value_parser = duration_flag)]
    pub wake_after: Duration,
    /// Settings that differ from the spec this long are updated; longer than the kubelet takes to
    /// refresh a mounted ConfigMap, so a newer release's change is never undone.
    #[arg(long, env = "IMMUDB_AGENT_DRIFT_GRACE", default_value = "300s", value_parser = duration_flag)]
    pub drift_grace: Duration,
    /// When the pod is stopped (GET /prestop, the immudb container's preStop hook), a replica
    /// reports not Ready at once and answers after this long, so clients' new connections go to
    /// the other replicas before immudb stops (endpoints propagate in about a second).
    #[arg(long, env = "IMMUDB_AGENT_DRAIN", default_value = "2s", value_parser = duration_flag)]
    pub drain: Duration,
    #[command(flatten)]
    pub failover: FailoverArgs,
}

/// Failover (with --lease-name): the pod's identity and the Lease's timing.
#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// This pod's name, which the agent labels with its role.
    #[arg(long, env = "IMMUDB_AGENT_POD_NAME")]
    pub pod_name: Option<String>,
    /// This pod's address (its DNS name): its identity in the Lease, what the others dial.
    #[arg(long, env = "IMMUDB_AGENT_POD_HOST")]
    pub pod_host: Option<String>,
    /// A Lease not renewed for this long has expired; its holder stops serving writes before.
    #[arg(long, env = "IMMUDB_AGENT_LEASE_DURATION", default_value = "15s", value_parser = duration_flag)]
    pub lease_duration: Duration,
    /// After a failover, no other for this long.
    #[arg(long, env = "IMMUDB_AGENT_FAILOVER_COOLDOWN", default_value = "2m", value_parser = duration_flag)]
    pub failover_cooldown: Duration,
    /// Fail over without synchronous acknowledgements (or with too few pods answering): the
    /// new primary may lack the last transactions.
    #[arg(long, env = "IMMUDB_AGENT_ALLOW_DATA_LOSS")]
    pub allow_data_loss: bool,
    /// Replica pods NAME-0 … NAME-{n-1} may label themselves (the chart's Role names them) and
    /// be elected primary; pods beyond, added by `kubectl scale` or an HPA, still count in
    /// elections but get no label. Defaults to --replica-count; StatefulSet form only.
    #[arg(long, env = "IMMUDB_AGENT_MAX_REPLICAS")]
    pub max_replicas: Option<u32>,
    /// The primary StatefulSet (its pod is --primary-host): the hand-over reads its revision to
    /// order a rollout. Without it, that pod counts as never rolled.
    #[arg(long, env = "IMMUDB_AGENT_PRIMARY_STATEFULSET")]
    pub primary_statefulset: Option<String>,
    /// A stopping primary waits this long at most until every other pod runs its StatefulSet's
    /// new revision and is Ready, so that it hands the role over once per rollout.
    #[arg(long, env = "IMMUDB_AGENT_ROLLOUT_WAIT", default_value = "40s", value_parser = duration_flag)]
    pub rollout_wait: Duration,
    /// The hand-over (fence, copy what the chosen replica lacks, move the Lease, the new primary
    /// serving writes) must finish within this, else the primary keeps the Lease through its
    /// restart. At most --lease-duration minus two API calls, so nobody sees the Lease expire
    /// meanwhile; by default 10s or that, whichever is shorter.
    #[arg(long, env = "IMMUDB_AGENT_SWITCHOVER_TIMEOUT", value_parser = duration_flag)]
    pub switchover_timeout: Option<Duration>,
}

impl FailoverArgs {
    /// The failover settings, when `lease` names a Lease.
    fn config(
        &self,
        lease: Option<LeaseLookup>,
        poll_interval: Duration,
        topology: &Topology,
    ) -> Result<Option<FailoverConfig>, ConfigError> {
        let Some(lookup) = lease else {
            return Ok(None);
        };
        let Some(pod_name) = self.pod_name.clone() else {
            return reject(
                "--pod-name (IMMUDB_AGENT_POD_NAME)",
                "",
                "is required with --lease-name",
            );
        };
        let Some(me) = self.pod_host.clone() else {
            return reject(
                "--pod-host (IMMUDB_AGENT_POD_HOST)",
                "",
                "is required with --lease-name",
            );
        };
        check_host("--pod-host", &me)?;
        if self.lease_duration < poll_interval * 3 {
            return reject(
                "--lease-duration",
                format!("{:?}", self.lease_duration),
                "must be at least 3 poll intervals: a primary gets a second chance to renew before it fences itself",
            );
        }
        let call_timeout = lease_call_timeout(poll_interval);
        let longest_switchover = self.lease_duration.saturating_sub(call_timeout * 2);
        let switchover_timeout = self
            .switchover_timeout
            .unwrap_or_else(|| DEFAULT_SWITCHOVER_TIMEOUT.min(longest_switchover));
        if switchover_timeout > longest_switchover {
            return reject(
                "--switchover-timeout",
                format!("{switchover_timeout:?}"),
                format!(
                    "must leave two API calls ({:?}) of --lease-duration ({:?}): the other pods must not see the Lease expire during a hand-over",
                    call_timeout * 2,
                    self.lease_duration
                ),
            );
        }
        if switchover_timeout.is_zero() {
            return reject("--switchover-timeout", "0", "must be at least 1ms");
        }
        if let Some(statefulset) = &self.primary_statefulset {
            check_host("--primary-statefulset", statefulset)?;
        }
        let eligible = self.eligible(topology)?;
        Ok(Some(FailoverConfig {
            kube: lookup.kube,
            lease: lookup.lease,
            pod_name,
            me,
            timing: Timing {
                lease_duration: self.lease_duration,
                poll_interval,
                call_timeout,
                cooldown: self.failover_cooldown,
            },
            allow_data_loss: self.allow_data_loss,
            eligible,
            primary_statefulset: self.primary_statefulset.clone(),
            rollout_wait: self.rollout_wait,
            switchover_timeout,
        }))
    }

    /// The pods that may label themselves and so be elected: the primary StatefulSet's pod and
    /// the replica pods up to --max-replicas (every listed replica in the list form).
    fn eligible(&self, topology: &Topology) -> Result<BTreeSet<String>, ConfigError> {
        let declared = topology.replicas.len() as u32;
        let replicas = match (&topology.replica_pods, self.max_replicas) {
            (None, Some(max)) => {
                return reject(
                    "--max-replicas",
                    max,
                    "needs the StatefulSet form (--replica-statefulset): a list of replicas names every pod already",
                )
            }
            (None, None) => topology.replicas.clone(),
            (Some(_), Some(max)) if max < declared => {
                return reject(
                    "--max-replicas",
                    max,
                    format!("must be at least --replica-count ({declared}): those pods must be able to label themselves"),
                )
            }
            (Some(pods), max) => pods.hosts(max.unwrap_or(declared)),
        };
        Ok(std::iter::once(topology.primary.clone())
            .chain(replicas)
            .collect())
    }
}

/// The hand-over's bound unless --switchover-timeout says otherwise.
const DEFAULT_SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits before waking again a replicator the last wake did not move: each wake costs immudb a
/// write into systemdb and a login on the primary.
const WAKE_BACKOFF: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(300));

/// How long the agent waits for another pod (the primary, a peer in an election) in one call,
/// all its RPCs together: a poll interval, 1 to 10 s. A pod that stopped (SIGSTOP, a long GC
/// pause, a frozen VM, a node whose packets are dropped) neither fails nor answers, and waiting
/// longer would hold up the agent's next look at the Lease.
pub fn other_pod_limit(poll_interval: Duration) -> Duration {
    poll_interval.clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// A Kubernetes call's deadline: half a poll, at most 2 s.
pub fn lease_call_timeout(poll_interval: Duration) -> Duration {
    (poll_interval / 2).min(Duration::from_secs(2))
}

/// The agent's failover settings, when `--lease` names a Lease.
#[derive(Clone, Debug)]
pub struct FailoverConfig {
    pub kube: KubeConfig,
    pub lease: String,
    /// This pod's name, for its label.
    pub pod_name: String,
    /// This pod's address: its identity in the Lease and what the others dial.
    pub me: String,
    pub timing: Timing,
    pub allow_data_loss: bool,
    /// The pods that may label themselves and so be elected (`ElectionRules::eligible`).
    pub eligible: BTreeSet<String>,
    /// The primary StatefulSet, whose revision orders a rollout (`switchover`).
    pub primary_statefulset: Option<String>,
    /// How long a stopping primary waits for the rollout to reach every other pod.
    pub rollout_wait: Duration,
    /// The bound of a hand-over, after which the primary keeps the Lease through its restart.
    pub switchover_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub role: AgentRole,
    pub topology: Topology,
    pub admin: Credentials,
    pub spec_file: PathBuf,
    pub replication_password_file: PathBuf,
    pub primary_host_for_replicas: String,
    pub listen: SocketAddr,
    pub local_address: IpAddr,
    pub poll_interval: Duration,
    pub watch_interval: Duration,
    /// How long a stopping replica keeps serving after it reports not Ready.
    pub drain: Duration,
    pub limits: Limits,
    /// Set with --lease-name: the role follows the Lease.
    pub failover: Option<FailoverConfig>,
}

impl AgentArgs {
    pub fn config(
        &self,
        topology_args: &TopologyArgs,
        lease_args: &LeaseArgs,
    ) -> Result<AgentConfig, ConfigError> {
        if self.poll_interval.is_zero() {
            return reject("--poll-interval", "0", "must be at least 1ms");
        }
        if self.max_lag <= self.poll_interval {
            return reject(
                "--max-lag",
                format!("{:?}", self.max_lag),
                "must be longer than --poll-interval: lag is measured once per poll",
            );
        }
        let topology = topology_args.topology()?;
        if self.watch_interval.is_zero() {
            return reject("--watch-interval", "0", "must be at least 1ms");
        }
        if self.wake_after.is_zero() {
            return reject("--wake-after", "0", "must be at least 1ms");
        }
        if self.stall_after <= self.wake_after {
            return reject(
                "--stall-after",
                format!("{:?}", self.stall_after),
                "must be longer than --wake-after: a replicator is woken before it counts as stalled",
            );
        }
        let config = AgentConfig {
            role: self.role,
            admin: topology_args.admin()?,
            spec_file: self.spec_file.clone(),
            replication_password_file: self.replication_password_file.clone(),
            primary_host_for_replicas: topology_args.primary_host_for_replicas()?,
            listen: self.listen,
            local_address: self.local_address,
            poll_interval: self.poll_interval,
            watch_interval: self.watch_interval,
            drain: self.drain,
            limits: Limits {
                progress: Bounds {
                    max_lag: self.max_lag,
                    stall_after: self.stall_after,
                    wake_after: self.wake_after,
                    wake_backoff: WAKE_BACKOFF,
                },
                drift_grace: self.drift_grace,
                restart_backoff: (Duration::from_secs(10), Duration::from_secs(300)),
            },
            failover: self.failover.config(
                lease_args.lookup(
                    topology_args.namespace.as_deref(),
                    lease_call_timeout(self.poll_interval),
                )?,
                self.poll_interval,
                &topology,
            )?,
            topology,
        };
        // A bad spec or password file fails now, before the agent starts serving.
        config.desired()?;
        read_password(
            "--replication-password-file",
            &self.replication_password_file,
        )?;
        Ok(config)
    }
}

impl AgentConfig {
    /// The spec as the file says now; with failover, it must replicate per database, with
    /// synchronous acknowledgements (unless data loss is allowed) and tx discarding.
    pub fn desired(&self) -> Result<Desired, ConfigError> {
        let desired = Spec::read(&self.spec_file)?.desired(spec::Context {
            replica_count: self.topology.replicas.len(),
            primary_host_for_replicas: self.primary_host_for_replicas.clone(),
            replication_password_file: Some(&self.replication_password_file),
            dials: true,
        })?;
        let Some(failover) = &self.failover else {
            return Ok(desired);
        };
        let Desired::Database(spec) = &desired else {
            return reject(
                "mode",
                "systemdb",
                "failover needs mode database: systemdb replication is set by each pod's env, which the agent cannot change when the primary moves",
            );
        };
        if spec.sync_acks.is_none() && !failover.allow_data_loss {
            return reject(
                "replication.sync.enabled",
                "false",
                "failover without synchronous acknowledgements may lose the last transactions; enable sync or pass --allow-data-loss",
            );
        }
        if !spec.options.allow_tx_discarding {
            return reject(
                "replication.allowTxDiscarding",
                "false",
                "failover needs it: a returning primary drops the transactions nobody acknowledged",
            );
        }
        Ok(desired)
    }
}
