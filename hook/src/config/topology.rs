//! Where the nodes are and how to reach them: the flags every subcommand shares. They are global
//! (accepted before or after the subcommand), so clap cannot require them: a subcommand asks for
//! the primary and the admin password only when it will dial a server, and a missing one is
//! named with its env variable.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::rules::{check_user_name, read_password, reject, ConfigError};
use crate::tls::TrustedCa;
use crate::types::Credentials;

#[derive(Args, Debug)]
pub struct TopologyArgs {
    /// Address the hook dials for the primary.
    #[arg(long, env = "IMMUDB_HOOK_PRIMARY_HOST", global = true)]
    pub primary_host: Option<String>,
    /// Host the replicas replicate from (e.g. the primary Service); defaults to --primary-host.
    #[arg(long, env = "IMMUDB_HOOK_REPLICATION_PRIMARY_HOST", global = true)]
    pub replication_primary_host: Option<String>,
    /// Replica addresses, comma separated (instead of the StatefulSet form).
    #[arg(
        long,
        env = "IMMUDB_HOOK_REPLICAS",
        value_delimiter = ',',
        global = true
    )]
    pub replicas: Vec<String>,
    /// StatefulSet form: the replica StatefulSet's name (pods are NAME-0 … NAME-{count-1}).
    #[arg(long, env = "IMMUDB_HOOK_REPLICA_STATEFULSET", global = true)]
    pub replica_statefulset: Option<String>,
    /// StatefulSet form: the headless Service that gives the replica pods their DNS names.
    #[arg(long, env = "IMMUDB_HOOK_REPLICA_SERVICE", global = true)]
    pub replica_service: Option<String>,
    /// StatefulSet form: the namespace of the replica pods.
    #[arg(long, env = "IMMUDB_HOOK_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// StatefulSet form: how many replica pods there are.
    #[arg(long, env = "IMMUDB_HOOK_REPLICA_COUNT", global = true)]
    pub replica_count: Option<u32>,
    /// StatefulSet form: the cluster's DNS domain.
    #[arg(
        long,
        env = "IMMUDB_HOOK_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        global = true
    )]
    pub cluster_domain: String,
    /// immudb's gRPC port on every node.
    #[arg(
        long,
        env = "IMMUDB_HOOK_GRPC_PORT",
        default_value_t = 3322,
        global = true
    )]
    pub grpc_port: u16,
    /// immudb's metrics and health port on every node.
    #[arg(
        long,
        env = "IMMUDB_HOOK_METRICS_PORT",
        default_value_t = 9497,
        global = true
    )]
    pub metrics_port: u16,
    /// The system administrator's user name.
    #[arg(
        long,
        env = "IMMUDB_HOOK_ADMIN_USER",
        default_value = "immudb",
        global = true
    )]
    pub admin_user: String,
    /// File holding the administrator's password (a mounted Secret).
    #[arg(long, env = "IMMUDB_HOOK_ADMIN_PASSWORD_FILE", global = true)]
    pub admin_password_file: Option<PathBuf>,
    /// Overall deadline, in seconds, for waiting and converging.
    #[arg(
        long,
        env = "IMMUDB_HOOK_TIMEOUT_SECONDS",
        default_value_t = 300,
        global = true
    )]
    pub timeout_seconds: u64,
    /// CA certificate (PEM) of the immudb servers, when they serve TLS; plaintext without it.
    #[arg(long, env = "IMMUDB_HOOK_TLS_CA_FILE", global = true)]
    pub tls_ca_file: Option<PathBuf>,
    /// The port of the agent beside every immudb (its /readyz). With it, `backup` and
    /// `rebuild-primary` read only from a replica whose agent says it is Ready: replicating,
    /// within its lag bound, not fenced or diverged (immudb's own /readyz says only "up").
    #[arg(long, env = "IMMUDB_HOOK_AGENT_PORT", global = true)]
    pub agent_port: Option<u16>,
    /// The hosts file the resolver reads first.
    #[arg(
        long,
        env = "IMMUDB_HOOK_HOSTS_FILE",
        default_value = "/etc/hosts",
        hide = true,
        global = true
    )]
    pub hosts_file: PathBuf,
    /// The resolver configuration (nameservers, search domains, ndots).
    #[arg(
        long,
        env = "IMMUDB_HOOK_RESOLV_CONF",
        default_value = "/etc/resolv.conf",
        hide = true,
        global = true
    )]
    pub resolv_conf: PathBuf,
}

/// Where the nodes are and how to reach them.
#[derive(Clone, Debug)]
pub struct Topology {
    pub primary: String,
    pub replicas: Vec<String>,
    pub grpc_port: u16,
    pub metrics_port: u16,
    pub hosts_file: PathBuf,
    pub resolv_conf: PathBuf,
    /// Set when the servers speak TLS on gRPC and on the metrics port.
    pub tls: Option<TrustedCa>,
    /// The agents' port, when every node runs one (plain HTTP).
    pub agent_port: Option<u16>,
    /// Set in the StatefulSet form: how replica pods are named, so that a pod count read later
    /// (pods added by `kubectl scale` or an HPA) gives their addresses.
    pub replica_pods: Option<ReplicaPods>,
}

/// The replica StatefulSet's pods: `NAME-i.SERVICE.NAMESPACE.svc.DOMAIN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaPods {
    pub statefulset: String,
    pub service: String,
    pub namespace: String,
    pub cluster_domain: String,
}

impl ReplicaPods {
    /// The DNS names of pods `0..count`.
    pub fn hosts(&self, count: u32) -> Vec<String> {
        (0..count)
            .map(|i| {
                format!(
                    "{}-{i}.{}.{}.svc.{}",
                    self.statefulset, self.service, self.namespace, self.cluster_domain
                )
            })
            .collect()
    }
}

/// A DNS name as Kubernetes gives them: dot-separated RFC 1123 labels, or an IP address.
pub fn check_host(flag: &'static str, host: &str) -> Result<(), ConfigError> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
        return reject(
            flag,
            host,
            "must be an IP address or a DNS name of letters, digits, '-' and '.'",
        );
    }
    Ok(())
}

impl TopologyArgs {
    fn statefulset_form(&self) -> bool {
        self.replica_statefulset.is_some() || self.replica_count.is_some()
    }

    /// The StatefulSet form's naming, when the replicas are given that way.
    fn replica_pods(&self) -> Result<Option<ReplicaPods>, ConfigError> {
        if !self.statefulset_form() {
            return Ok(None);
        }
        let Some(statefulset) = &self.replica_statefulset else {
            return reject(
                "--replica-statefulset",
                "",
                "is required with --replica-count",
            );
        };
        let Some(service) = &self.replica_service else {
            return reject(
                "--replica-service",
                "",
                "is required with --replica-statefulset",
            );
        };
        let Some(namespace) = &self.namespace else {
            return reject("--namespace", "", "is required with --replica-statefulset");
        };
        Ok(Some(ReplicaPods {
            statefulset: statefulset.clone(),
            service: service.clone(),
            namespace: namespace.clone(),
            cluster_domain: self.cluster_domain.clone(),
        }))
    }

    fn replica_hosts(&self) -> Result<Vec<String>, ConfigError> {
        // An empty value (IMMUDB_HOOK_REPLICAS="" with no replicas) means no replicas.
        let listed: Vec<String> = self
            .replicas
            .iter()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        if !listed.is_empty() && self.statefulset_form() {
            return reject(
                "--replicas",
                self.replicas.join(","),
                "give replicas either as a list or in the StatefulSet form (--replica-statefulset, --replica-count), not both",
            );
        }
        Ok(match self.replica_pods()? {
            Some(pods) => pods.hosts(self.replica_count.unwrap_or(0)),
            None => listed,
        })
    }

    /// The primary's address, for a subcommand that dials it.
    pub fn primary_host(&self) -> Result<&str, ConfigError> {
        let host = self.primary_host.as_deref().ok_or(ConfigError::Missing {
            flag: "--primary-host",
            env: "IMMUDB_HOOK_PRIMARY_HOST",
        })?;
        check_host("--primary-host", host)?;
        Ok(host)
    }

    /// The replicas' addresses, each valid and listed once (and not the primary, when given).
    pub fn replicas(&self) -> Result<Vec<String>, ConfigError> {
        let replicas = self.replica_hosts()?;
        let mut seen: BTreeSet<&str> = self.primary_host.as_deref().into_iter().collect();
        for host in &replicas {
            check_host("--replicas", host)?;
            if !seen.insert(host) {
                return reject(
                    "--replicas",
                    host,
                    "each node must appear once (and not be the primary)",
                );
            }
        }
        Ok(replicas)
    }

    pub fn topology(&self) -> Result<Topology, ConfigError> {
        let primary = self.primary_host()?.to_string();
        let replicas = self.replicas()?;
        if self.grpc_port == 0 {
            return reject("--grpc-port", 0, "ports are 1 to 65535");
        }
        if self.metrics_port == 0 {
            return reject("--metrics-port", 0, "ports are 1 to 65535");
        }
        if self.agent_port == Some(0) {
            return reject("--agent-port", 0, "ports are 1 to 65535");
        }
        Ok(Topology {
            primary,
            replicas,
            grpc_port: self.grpc_port,
            metrics_port: self.metrics_port,
            hosts_file: self.hosts_file.clone(),
            resolv_conf: self.resolv_conf.clone(),
            tls: self.trusted_ca()?,
            agent_port: self.agent_port,
            replica_pods: self.replica_pods()?,
        })
    }

    /// The host written into replica databases: --replication-primary-host or the primary.
    pub fn primary_host_for_replicas(&self) -> Result<String, ConfigError> {
        let Some(host) = &self.replication_primary_host else {
            return self.primary_host().map(str::to_string);
        };
        check_host("--replication-primary-host", host)?;
        Ok(host.clone())
    }

    fn trusted_ca(&self) -> Result<Option<TrustedCa>, ConfigError> {
        let Some(path) = &self.tls_ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path).or_else(|e| {
            reject(
                "--tls-ca-file",
                path.display(),
                format!("cannot read the CA file: {e}"),
            )
        })?;
        TrustedCa::from_pem(&pem)
            .map(Some)
            .or_else(|rule| reject("--tls-ca-file", path.display(), rule))
    }

    pub fn admin(&self) -> Result<Credentials, ConfigError> {
        check_user_name("--admin-user", &self.admin_user)?;
        Ok(Credentials {
            user: self.admin_user.clone(),
            password: read_password("--admin-password-file", self.admin_password_file()?)?,
        })
    }

    fn admin_password_file(&self) -> Result<&Path, ConfigError> {
        self.admin_password_file
            .as_deref()
            .ok_or(ConfigError::Missing {
                flag: "--admin-password-file",
                env: "IMMUDB_HOOK_ADMIN_PASSWORD_FILE",
            })
    }

    pub fn timeout(&self) -> Result<Duration, ConfigError> {
        if self.timeout_seconds == 0 {
            return reject("--timeout-seconds", 0, "must be at least 1");
        }
        Ok(Duration::from_secs(self.timeout_seconds))
    }
}
