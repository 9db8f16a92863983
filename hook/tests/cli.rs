//! The command line as a user types it: the shared flags before or after any subcommand, a
//! missing one named with its env variable when the subcommand needs it, and `converge --check`
//! with neither a server address nor a password file.

use clap::{CommandFactory, Parser};
use immudb_hook::cli::{Cli, Command};
use immudb_hook::config::ConfigError;

/// Every shared flag (`TopologyArgs`), each with a value other than its default.
const SHARED: &[&str] = &[
    "--primary-host=db-0",
    "--replication-primary-host=db-svc",
    "--replicas=r0,r1",
    "--replica-statefulset=db-read",
    "--replica-service=db-read-headless",
    "--namespace=ns",
    "--replica-count=2",
    "--cluster-domain=example.local",
    "--grpc-port=3323",
    "--metrics-port=9999",
    "--admin-user=admin",
    "--admin-password-file=/run/admin/password",
    "--timeout-seconds=7",
    "--tls-ca-file=/run/ca.pem",
    "--hosts-file=/run/hosts",
    "--resolv-conf=/run/resolv.conf",
    "--log-format=json",
];

/// Every subcommand with the flags of its own it needs to parse.
const SUBCOMMANDS: &[(&str, &[&str])] = &[
    ("converge", &["--spec-file=/run/spec.json"]),
    ("verify", &["--database=chart_canary"]),
    ("backup", &["--dir=/backups", "--databases=appdb"]),
    ("restore", &["--dir=/backups", "--databases=appdb"]),
    ("rebuild-primary", &["--databases=appdb"]),
    (
        "agent",
        &[
            "--role=replica",
            "--spec-file=/run/spec.json",
            "--replication-password-file=/run/replication/password",
        ],
    ),
];

fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Cli {
    let args: Vec<&str> = std::iter::once("immudb-hook").chain(args).collect();
    Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn the_command_tree_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn the_table_names_every_subcommand() {
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let table: Vec<&str> = SUBCOMMANDS.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, table);
}

#[test]
fn shared_flags_are_accepted_before_and_after_every_subcommand() {
    for (name, own) in SUBCOMMANDS {
        let before = parse(
            SHARED
                .iter()
                .copied()
                .chain([*name])
                .chain(own.iter().copied()),
        );
        let after = parse(
            [*name]
                .into_iter()
                .chain(own.iter().copied())
                .chain(SHARED.iter().copied()),
        );
        let (half_before, half_after) = SHARED.split_at(SHARED.len() / 2);
        let mixed = parse(
            half_before
                .iter()
                .copied()
                .chain([*name])
                .chain(half_after.iter().copied())
                .chain(own.iter().copied()),
        );
        assert_eq!(after.command.name(), *name);
        let t = &after.topology;
        assert_eq!(t.primary_host.as_deref(), Some("db-0"), "{name}");
        assert_eq!(t.replicas, ["r0", "r1"], "{name}");
        assert_eq!(t.timeout_seconds, 7, "{name}");
        assert_eq!(t.grpc_port, 3323, "{name}");
        assert_eq!(
            t.admin_password_file.as_deref(),
            Some(std::path::Path::new("/run/admin/password")),
            "{name}"
        );
        for other in [&before, &mixed] {
            assert_eq!(
                format!("{:?}", other.topology),
                format!("{:?}", after.topology),
                "{name}"
            );
            assert_eq!(other.log_format, after.log_format, "{name}");
        }
    }
}

/// The config step of whichever subcommand `cli` holds, as an error text.
fn config_error(cli: &Cli) -> String {
    let topology = &cli.topology;
    let result = match &cli.command {
        Command::Converge(args) => args.config(topology).map(drop),
        Command::Verify(args) => args.config(topology).map(drop),
        Command::Backup(args) => args.config(topology).map(drop),
        Command::Restore(args) => args.config(topology).map(drop),
        Command::RebuildPrimary(args) => args.config(topology).map(drop),
        Command::Agent(args) => args.config(topology, &cli.lease).map(drop),
    };
    result.expect_err("must be rejected").to_string()
}

#[test]
fn a_subcommand_that_dials_names_a_missing_primary_host_and_its_env() {
    for (name, own) in SUBCOMMANDS {
        let cli = parse([*name].into_iter().chain(own.iter().copied()));
        assert_eq!(
            config_error(&cli),
            "--primary-host (IMMUDB_HOOK_PRIMARY_HOST) is required",
            "{name}"
        );
    }
    let cli = parse(["verify", "--database=chart_canary", "--primary-host=db-0"]);
    assert_eq!(
        config_error(&cli),
        "--admin-password-file (IMMUDB_HOOK_ADMIN_PASSWORD_FILE) is required"
    );
}

fn check(spec: serde_json::Value, args: &[&str]) -> Result<String, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let spec_file = dir.path().join("spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let spec_flag = format!("--spec-file={}", spec_file.display());
    let cli = parse(
        ["converge", "--check", spec_flag.as_str()]
            .into_iter()
            .chain(args.iter().copied()),
    );
    let Command::Converge(converge) = &cli.command else {
        unreachable!()
    };
    converge.check(&cli.topology).map(|d| d.describe())
}

#[test]
fn converge_check_needs_no_server_address_nor_password() {
    let spec = serde_json::json!({
        "databases": ["appdb"],
        "replication": {"sync": {"enabled": true, "acks": 2}},
    });
    let described = check(spec.clone(), &["--replicas=r0,r1"]).unwrap();
    assert!(
        described.contains("replicate from <--primary-host> as 'replicator' (sync, 2 ack(s)"),
        "{described}"
    );
    assert!(described.contains("database appdb"), "{described}");
    let described = check(
        spec.clone(),
        &["--replicas=r0,r1", "--replication-primary-host=db-svc"],
    )
    .unwrap();
    assert!(described.contains("replicate from db-svc"), "{described}");
    // Still checked: the spec against the replica count, and the flags that are given.
    let error = check(spec.clone(), &["--replicas=r0"])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot exceed the number of replicas (1)"),
        "{error}"
    );
    let error = check(
        spec.clone(),
        &["--replicas=r0,r1", "--primary-host=bad_host!"],
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("--primary-host"), "{error}");
    let error = check(
        spec,
        &[
            "--replicas=r0,r1",
            "--replication-password-file=/nonexistent",
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("--replication-password-file"), "{error}");
}
