//! A cluster of immudb doubles on loopback addresses of their own (127.X.Y.N, one Y per test) so
//! that every node uses the same gRPC and metrics ports, as in Kubernetes.

#![allow(dead_code)]

pub mod backups;
pub mod release;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use immudb_double::{Network, Node, NodeOptions};
use immudb_hook::cli::{Cli, Command};
use immudb_hook::client::Target;
use immudb_hook::converge::Config;
use immudb_hook::verify::VerifyConfig;

pub const GRPC_PORT: u16 = 3322;
pub const METRICS_PORT: u16 = 9497;
pub const ADMIN_PASSWORD: &str = "admin-Secret-1";

/// The admin every double node is set up with.
pub fn admin() -> immudb_hook::types::Credentials {
    immudb_hook::types::Credentials {
        user: "immudb".into(),
        password: immudb_hook::types::Secret::new(ADMIN_PASSWORD),
    }
}
pub const REPLICATION_PASSWORD: &str = "repl-Secret-2";

static NEXT_SUBNET: AtomicU8 = AtomicU8::new(1);
static NEXT_SPEC: AtomicUsize = AtomicUsize::new(0);

/// A spec that replicates these databases with every other value at its default.
pub fn databases(names: &[&str]) -> serde_json::Value {
    serde_json::json!({ "databases": names })
}

pub struct Cluster {
    pub network: Network,
    subnet: (u8, u8),
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn new() -> Cluster {
        let second = (std::process::id() % 200) as u8 + 20;
        let third = NEXT_SUBNET.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("admin"), format!("{ADMIN_PASSWORD}\n")).unwrap();
        std::fs::write(dir.path().join("replication"), REPLICATION_PASSWORD).unwrap();
        std::fs::write(dir.path().join("hosts"), "127.0.0.1 localhost\n").unwrap();
        // No nameserver answers here: names resolve through the hosts file only.
        std::fs::write(
            dir.path().join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        Cluster {
            network: Network::default(),
            subnet: (second, third),
            dir,
        }
    }

    /// Node 0 is the primary, nodes 1.. the replicas.
    pub fn ip(&self, node: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.subnet.0, self.subnet.1, node + 1))
    }

    pub fn host(&self, node: u8) -> String {
        self.ip(node).to_string()
    }

    pub fn options(&self, node: u8) -> NodeOptions {
        let mut options = NodeOptions::new(
            SocketAddr::new(self.ip(node), GRPC_PORT),
            SocketAddr::new(self.ip(node), METRICS_PORT),
        );
        options.admin_password = ADMIN_PASSWORD.to_string();
        options
    }

    pub async fn start(&self, options: NodeOptions) -> Node {
        Node::start(options, &self.network)
            .await
            .expect("start double")
    }

    pub async fn start_node(&self, node: u8) -> Node {
        self.start(self.options(node)).await
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Writes a spec file and returns its path.
    pub fn write_spec(&self, spec: &serde_json::Value) -> String {
        let name = format!("spec-{}.json", NEXT_SPEC.fetch_add(1, Ordering::SeqCst));
        std::fs::write(self.dir.path().join(&name), spec.to_string()).unwrap();
        self.path(&name)
    }

    /// The hook's command line with the cluster's files; `extra` goes after the subcommand.
    pub fn cli(
        &self,
        replicas: &[String],
        timeout_s: u64,
        subcommand: &str,
        extra: &[&str],
    ) -> Cli {
        let args = self.args_with(replicas, timeout_s, &[], subcommand, extra);
        Cli::try_parse_from(args).expect("valid command line")
    }

    /// The hook's command line, program name first, with `global` flags before the subcommand
    /// (`--primary-host` among them replaces node 0's address).
    pub fn args_with(
        &self,
        replicas: &[String],
        timeout_s: u64,
        global: &[&str],
        subcommand: &str,
        extra: &[&str],
    ) -> Vec<String> {
        let mut args: Vec<String> = vec!["immudb-hook".into()];
        // A test that names the primary by its pod's DNS name gives --primary-host itself.
        if !global
            .iter()
            .any(|flag| flag.starts_with("--primary-host="))
        {
            args.push(format!("--primary-host={}", self.host(0)));
        }
        args.extend([
            format!("--grpc-port={GRPC_PORT}"),
            format!("--metrics-port={METRICS_PORT}"),
            format!("--admin-password-file={}", self.path("admin")),
            format!("--timeout-seconds={timeout_s}"),
            format!("--hosts-file={}", self.path("hosts")),
            format!("--resolv-conf={}", self.path("resolv.conf")),
        ]);
        if !replicas.is_empty() {
            args.push(format!("--replicas={}", replicas.join(",")));
        }
        args.extend(global.iter().map(|s| s.to_string()));
        args.push(subcommand.into());
        if subcommand == "converge" {
            args.push(format!(
                "--replication-password-file={}",
                self.path("replication")
            ));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `converge` with `spec` and `extra` flags.
    pub fn converge_cli(
        &self,
        replicas: &[String],
        timeout_s: u64,
        spec: serde_json::Value,
        extra: &[&str],
    ) -> Cli {
        let spec_flag = format!("--spec-file={}", self.write_spec(&spec));
        let mut flags = vec![spec_flag.as_str()];
        flags.extend(extra);
        self.cli(replicas, timeout_s, "converge", &flags)
    }

    pub fn converge_config(
        &self,
        replicas: &[String],
        timeout_s: u64,
        spec: serde_json::Value,
        extra: &[&str],
    ) -> Config {
        let cli = self.converge_cli(replicas, timeout_s, spec, extra);
        let Command::Converge(args) = &cli.command else {
            unreachable!()
        };
        args.config(&cli.topology).expect("valid config")
    }

    pub fn verify_config(&self, replicas: &[String], extra: &[&str]) -> VerifyConfig {
        let cli = self.cli(replicas, 20, "verify", extra);
        let Command::Verify(args) = &cli.command else {
            unreachable!()
        };
        args.config(&cli.topology).expect("valid config")
    }

    pub fn replica_hosts(&self, count: u8) -> Vec<String> {
        (1..=count).map(|n| self.host(n)).collect()
    }
}

pub async fn start_all(cluster: &Cluster, replicas: u8) -> Vec<Node> {
    let mut nodes = Vec::new();
    for n in 0..=replicas {
        nodes.push(cluster.start_node(n).await);
    }
    nodes
}

pub const SHORT: Duration = Duration::from_secs(2);

/// A plaintext gRPC target for a node, for tests that drive the client directly.
pub fn target(node: &Node) -> Target {
    Target {
        host: node.options.grpc.ip().to_string(),
        address: node.options.grpc,
        tls: None,
    }
}

pub const AGENT_PORT: u16 = 9498;

/// A running agent; dropping it stops it.
pub struct RunningAgent {
    pub address: SocketAddr,
    run: Run,
}

/// An agent in the test's runtime, or the hook binary as a child process (which a test can
/// stop and resume with signals).
enum Run {
    Task(tokio::task::JoinHandle<()>),
    Process(tokio::process::Child),
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Run::Task(task) = &self.run {
            task.abort();
        }
        // A child is killed on drop.
    }
}

impl RunningAgent {
    /// Sends `signal` (`"STOP"`, `"CONT"`, ...) to the agent's process.
    pub fn signal(&self, signal: &str) {
        let Run::Process(child) = &self.run else {
            panic!("only an agent run as a process takes signals");
        };
        let pid = child.id().expect("the agent runs").to_string();
        let sent = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal}");
    }

    /// GET `path` on the agent's port: (status code, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.address);
        let http = immudb_hook::tls::http_client_builder(None, Duration::from_secs(2))
            .build()
            .unwrap();
        match http.get(&url).send().await {
            Ok(response) => (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    pub async fn ready(&self) -> bool {
        self.get("/readyz").await.0 == 200
    }

    /// The value of one metric line (`name{labels}` exactly as rendered), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

impl Cluster {
    /// An agent for node `node` (0 is the primary) with fast test timings; a flag in `extra`
    /// replaces the timing of the same name.
    pub fn agent(
        &self,
        node: u8,
        replicas: &[String],
        spec: serde_json::Value,
        extra: &[&str],
    ) -> RunningAgent {
        let args = self.agent_args(node, replicas, spec, &[], extra);
        self.agent_task(node, &args)
    }

    /// The agent of node `node` with the command line `args` ([`Cluster::agent_args`]) in the
    /// test's runtime.
    pub fn agent_task(&self, node: u8, args: &[String]) -> RunningAgent {
        let cli = Cli::try_parse_from(args).expect("valid command line");
        let Command::Agent(args) = &cli.command else {
            unreachable!()
        };
        let config = args
            .config(&cli.topology, &cli.lease)
            .expect("valid agent config");
        let task = tokio::spawn(async move {
            let _ = immudb_hook::agent::run(config).await;
        });
        RunningAgent {
            address: self.agent_address(node),
            run: Run::Task(task),
        }
    }

    /// The agent of node `node` with the command line `args` ([`Cluster::agent_args`]) as the
    /// hook binary in a child process; its log goes to the test's stderr when TEST_LOG sets a
    /// filter.
    pub fn agent_process(&self, node: u8, args: &[String]) -> RunningAgent {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_immudb-hook"));
        command.args(&args[1..]).kill_on_drop(true);
        match std::env::var("TEST_LOG") {
            Ok(filter) => command.env("IMMUDB_HOOK_LOG", filter),
            Err(_) => command.stderr(std::process::Stdio::null()),
        };
        let child = command
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the hook binary starts");
        RunningAgent {
            address: self.agent_address(node),
            run: Run::Process(child),
        }
    }

    fn agent_address(&self, node: u8) -> SocketAddr {
        SocketAddr::new(self.ip(node), AGENT_PORT)
    }

    /// The agent's command line with fast test timings (a flag in `extra` replaces the timing
    /// of the same name), program name first.
    pub fn agent_args(
        &self,
        node: u8,
        replicas: &[String],
        spec: serde_json::Value,
        global: &[&str],
        extra: &[&str],
    ) -> Vec<String> {
        let role = if node == 0 { "primary" } else { "replica" };
        let address = self.agent_address(node);
        let spec_flag = format!("--spec-file={}", self.write_spec(&spec));
        let mut flags = vec![
            format!("--role={role}"),
            spec_flag,
            format!("--replication-password-file={}", self.path("replication")),
            format!("--listen={address}"),
            format!("--local-address={}", self.ip(node)),
        ];
        // The test timings, unless `extra` sets them.
        for timing in ["--poll-interval=100ms", "--max-lag=2s", "--drift-grace=1s"] {
            let name = timing.split('=').next().expect("a flag");
            if !extra.iter().any(|e| e.starts_with(&format!("{name}="))) {
                flags.push(timing.into());
            }
        }
        flags.extend(extra.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        self.args_with(replicas, 20, global, "agent", &flags)
    }
}

/// An agent's /readyz and nothing else, on node `node`'s agent port: 200 when `ready`, else 503
/// with a reason, as the real agent answers. Dropping the handle stops it.
pub struct FakeAgent(tokio::task::JoinHandle<()>);

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Cluster {
    pub async fn fake_agent(&self, node: u8, ready: bool) -> FakeAgent {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(self.ip(node), AGENT_PORT))
            .await
            .expect("the agent port is free");
        let answer = if ready {
            "HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nready\n"
        } else {
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 32\r\nconnection: close\r\n\r\ndatabase 'appdb' is diverged   \n"
        };
        FakeAgent(tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        }))
    }
}

/// The sessions each node holds now: a command of the hook leaves none open when it finishes.
pub fn open_sessions<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<usize> {
    nodes
        .into_iter()
        .map(|n| n.with_state(|s| s.session_count()))
        .collect()
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The Job converging `replicas` to `databases` with a 20 s deadline.
pub async fn converge_databases(
    cluster: &Cluster,
    replicas: &[String],
    names: &[&str],
) -> immudb_hook::report::Report {
    immudb_hook::reconcile::converge(&cluster.converge_config(replicas, 20, databases(names), &[]))
        .await
}

/// The outcomes the report gives `host`, in order.
pub fn outcomes(
    report: &immudb_hook::report::Report,
    host: &str,
) -> Vec<immudb_hook::report::Outcome> {
    report
        .lines
        .iter()
        .filter(|l| l.host == host)
        .map(|l| l.outcome.clone())
        .collect()
}
