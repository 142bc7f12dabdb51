//! The `sluice` broker binary. With no arguments it serves one node on
//! 127.0.0.1:9092 with data in ./sluice-data.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use sluice::{Broker, BrokerConfig};

/// Sluice: a thread-per-core Kafka-protocol broker.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    /// Administer a running broker instead of starting one (any
    /// Kafka-protocol broker; `--brokers` or `SLUICE_BROKERS`).
    #[command(subcommand)]
    command: Option<sluice::cli::Command>,
    /// TOML file of Kafka-named settings (`num.partitions = 3`, ...).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Address to listen on (`listeners`).
    #[arg(long)]
    listen: Option<String>,
    /// host:port given to clients in Metadata (`advertised.listeners`).
    #[arg(long)]
    advertised: Option<String>,
    /// Data directory (`log.dirs`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Shards, one pinned thread per core (default: all cores).
    #[arg(long)]
    cores: Option<usize>,
    /// Any setting as KEY=VALUE, e.g. `-o num.partitions=6`; repeatable.
    /// Precedence, lowest first: defaults, the config file, `SLUICE_*`
    /// environment variables (`SLUICE_NUM_PARTITIONS=6`), `-o`, the flags.
    #[arg(long = "override", short = 'o', value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// List the settings `-o` and the config file accept, and exit.
    #[arg(long)]
    help_settings: bool,
    /// Print every setting with its value and where it came from (the
    /// file, the environment, `-o`, a flag, or the documented default),
    /// and exit.
    #[arg(long)]
    print_config: bool,
    /// Log lines as text, or as one JSON object per line (for log
    /// collectors). The level filter is `RUST_LOG` (default
    /// `info,openraft=warn`).
    #[arg(long, value_enum, env = "SLUICE_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where each setting given came from: name -> (value, source).
type Sources = BTreeMap<String, (String, String)>;

fn build_config(args: &Args, sources: &mut Sources) -> Result<BrokerConfig, String> {
    let mut c = BrokerConfig::default();
    if let Some(path) = &args.config {
        for (k, v) in c.load_toml(path).map_err(|e| e.to_string())? {
            sources.insert(k, (v, format!("file {}", path.display())));
        }
    }
    // The environment over the file, `-o` and the flags over both.
    for (k, v) in c.load_env(std::env::vars()).map_err(|e| e.to_string())? {
        let var = sluice::config::env_name(&k);
        sources.insert(k, (v, format!("environment {var}")));
    }
    for o in &args.overrides {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| format!("override `{o}`: expected KEY=VALUE"))?;
        c.set(k.trim(), v).map_err(|e| e.to_string())?;
        sources.insert(k.trim().to_string(), (v.to_string(), "-o".into()));
    }
    let flags = [
        ("listeners", args.listen.clone()),
        ("advertised.listeners", args.advertised.clone()),
        ("log.dirs", args.data_dir.as_ref().map(|p| p.display().to_string())),
        ("num.cores", args.cores.map(|n| n.to_string())),
    ];
    for (k, v) in flags {
        if let Some(v) = v {
            c.set(k, &v).map_err(|e| e.to_string())?;
            sources.insert(k.to_string(), (v, "flag".into()));
        }
    }
    c.finish().map_err(|e| e.to_string())?;
    Ok(c)
}

/// `--print-config`: each documented setting, then any other name given
/// (an alias such as `listen`), as `name = value  # source`.
fn print_config(sources: &Sources) {
    let mut shown = std::collections::BTreeSet::new();
    for sluice::config::Setting { name: k, doc, .. } in sluice::config::SETTINGS {
        shown.insert(*k);
        match sources.get(*k) {
            Some((v, from)) => println!("{k} = {v}  # {from}"),
            None => {
                let v = sluice::config::documented_default(doc).unwrap_or("(none)");
                println!("{k} = {v}  # default");
            }
        }
    }
    for (k, (v, from)) in sources {
        if !shown.contains(k.as_str()) {
            // A JAAS line holds passwords.
            let v = if k.ends_with("sasl.jaas.config") { "[hidden]" } else { v };
            println!("{k} = {v}  # {from}");
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(cmd) = args.command {
        if let sluice::cli::Command::Completions { shell } = cmd {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Args::command(), "sluice", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        return sluice::cli::run(cmd);
    }
    if args.help_settings {
        for sluice::config::Setting { name: k, doc, .. } in sluice::config::SETTINGS {
            println!("{k:40} {doc}");
        }
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let mut sources = Sources::new();
    let config = match build_config(&args, &mut sources) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        print_config(&sources);
        return ExitCode::SUCCESS;
    }
    // Block SIGINT and SIGTERM before any thread starts, so every shard
    // inherits the mask and this thread alone receives them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if let Err(e) = signals.thread_block() {
        eprintln!("sluice: blocking signals: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(ip) = config.outbound_address {
        sluice::base::sockets::set_outbound_address(ip);
    }
    let shards = config.shard_count();
    let data_dir = config.data_dir.clone();
    let broker = match Broker::start(config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    let c = broker.config();
    let listeners: Vec<String> = c
        .listeners
        .iter()
        .map(|l| {
            format!(
                "{}://{} ({}, advertised {}:{})",
                l.name,
                l.addr,
                l.protocol.name(),
                l.advertised_host,
                l.advertised_port
            )
        })
        .collect();
    println!(
        "sluice {} listening on {}, data in {}, {shards} shard(s)",
        env!("CARGO_PKG_VERSION"),
        listeners.join(", "),
        data_dir.display(),
    );
    let signal = signals.wait();
    println!(
        "sluice: {} received; shutting down",
        signal.map_or("signal".into(), |s| s.to_string())
    );
    match broker.shutdown() {
        sluice::Stopped::Clean => {
            println!("sluice: stopped");
            ExitCode::SUCCESS
        }
        sluice::Stopped::Abandoned => {
            // Returning from main ends the process, and with it the shard
            // that did not stop; its listener was closed first.
            eprintln!("sluice: a shard did not stop in time; exiting without it");
            ExitCode::FAILURE
        }
    }
}
