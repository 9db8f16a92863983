//! Command-line edge: parse, validate, run, print the summary, exit with the report's code.

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use immudb_hook::backup::{rebuild, restore, run as backup};
use immudb_hook::cli::{Cli, Command, LogFormat};
use immudb_hook::config::Topology;
use immudb_hook::kube::Kube;
use immudb_hook::report::{Report, EXIT_CONFIG};
use immudb_hook::{agent, locate, reconcile, session, verify};

/// Colours only on a terminal (a Job's log is a file), and never when `NO_COLOR` is set and not
/// empty (no-color.org).
fn log_colours(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMMUDB_HOOK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colours = log_colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// With failover (--lease-name), the primary is the Lease's holder: `topology` is rearranged
/// around it and the summary names it. With `every_pod`, the replicas are every pod the replica
/// StatefulSet has (`kubectl scale` and an HPA change how many), not only the declared ones.
async fn follow_lease(
    cli: &Cli,
    topology: &mut Topology,
    timeout: Duration,
    every_pod: bool,
) -> anyhow::Result<Option<(String, String)>> {
    let call_timeout = Duration::from_secs(2).min(timeout);
    let Some(lookup) = cli
        .lease
        .lookup(cli.topology.namespace.as_deref(), call_timeout)?
    else {
        return Ok(None);
    };
    let deadline = tokio::time::Instant::now() + timeout;
    if every_pod {
        match locate::every_pod(topology, &Kube::new(lookup.kube.clone())).await {
            Ok(every) => *topology = every,
            Err(error) => {
                tracing::warn!(%error, "cannot count the replica pods; checking the declared ones")
            }
        }
    }
    *topology = locate::from_lease(topology, &lookup, deadline)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(Some((lookup.lease, topology.primary.clone())))
}

async fn run(cli: Cli) -> anyhow::Result<Report> {
    let report = match &cli.command {
        Command::Converge(args) if args.check => {
            println!("{}", args.check(&cli.topology)?.describe());
            Report::checked()
        }
        Command::Converge(args) => {
            let mut config = args.config(&cli.topology)?;
            let lease = follow_lease(&cli, &mut config.topology, config.timeout, false).await?;
            tracing::info!(
                primary = %config.topology.primary,
                replicas = config.topology.replicas.len(),
                timeout_s = config.timeout.as_secs(),
                "converging"
            );
            reconcile::converge(&config).await.from_lease(lease)
        }
        Command::Verify(args) => {
            let mut config = args.config(&cli.topology)?;
            let lease = follow_lease(&cli, &mut config.topology, config.timeout, true).await?;
            tracing::info!(database = %config.database, "verifying replication");
            verify::verify(&config).await.from_lease(lease)
        }
        Command::Backup(args) => {
            let mut config = args.config(&cli.topology)?;
            let lease = follow_lease(&cli, &mut config.topology, config.timeout, false).await?;
            tracing::info!(databases = ?config.databases, "backing up");
            backup::backup(&config).await.from_lease(lease)
        }
        Command::Restore(args) => {
            let mut config = args.config(&cli.topology)?;
            let timeout = config.timeout;
            let lease = match &mut config.target {
                Some(target) => follow_lease(&cli, &mut target.topology, timeout, false).await?,
                None => None,
            };
            tracing::info!(databases = ?config.databases, "restoring");
            restore::restore(&config).await.from_lease(lease)
        }
        Command::RebuildPrimary(args) => {
            let config = args.config(&cli.topology)?;
            tracing::info!(databases = ?config.databases, "rebuilding the primary");
            rebuild::rebuild_primary(&config).await
        }
        Command::Agent(args) => match agent::run(args.config(&cli.topology, &cli.lease)?).await? {},
    };
    Ok(report)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let command = cli.command.name();
    let (mut terminate, mut interrupt) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            eprintln!("error: cannot install signal handlers");
            return ExitCode::from(1);
        }
    };
    let outcome = tokio::select! {
        outcome = run(cli) => outcome,
        _ = terminate.recv() => {
            tracing::warn!("terminated (SIGTERM); stopping without finishing");
            session::closes_finished().await;
            return ExitCode::from(143);
        }
        _ = interrupt.recv() => {
            tracing::warn!("interrupted (SIGINT); stopping without finishing");
            session::closes_finished().await;
            return ExitCode::from(130);
        }
    };
    match outcome.with_context(|| format!("invalid configuration for {command}")) {
        Ok(report) => {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "{report}");
            let code = report.exit_code();
            if code != 0 {
                for (line, _) in report.failures() {
                    tracing::error!(role = %line.role, host = %line.host, database = line.database.as_deref().unwrap_or("-"), "{}", line.outcome);
                }
            }
            ExitCode::from(code)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some(OsStr::new(""))));
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(!log_colours(false, None));
        assert!(!log_colours(false, Some(OsStr::new("1"))));
    }
}
