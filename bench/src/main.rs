//! `sluice-bench`: run workloads against a Kafka-protocol broker, write
//! JSON reports, and compare two reports as a CI gate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_bench::report::{self, Host, Report, Target};
use sluice_bench::run::{RunOptions, WorkloadResult, run_workload};
use sluice_bench::spawn;
use sluice_bench::workload::Workload;

#[derive(Parser, Debug)]
#[command(
    name = "sluice-bench",
    version,
    about = "OpenMessaging-style workloads against any Kafka-protocol broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run workload files and print (and optionally save) the figures.
    Run(RunArgs),
    /// Compare two reports; exit 1 when NEW is worse than BASE beyond the limit.
    Compare {
        base: PathBuf,
        new: PathBuf,
        /// Largest tolerated fall in throughput or rise in p99 latency
        /// (`5%` or `0.05`).
        #[arg(long, default_value = "5%")]
        max_regression: String,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Workload files (OMB YAML or JSON).
    #[arg(required = true)]
    workloads: Vec<PathBuf>,
    /// The broker to drive.
    #[arg(long, default_value = "127.0.0.1:9092", conflicts_with = "spawn")]
    bootstrap: String,
    /// Start a local Sluice on a temporary data directory instead, and
    /// remove it afterwards.
    #[arg(long)]
    spawn: bool,
    /// The `sluice` binary for --spawn (default: $SLUICE_BIN, next to this
    /// program, or on the PATH).
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// Shards of the spawned broker; it pins them to cores 0..N.
    #[arg(long, default_value_t = 1)]
    broker_cores: usize,
    /// Extra arguments for the spawned broker, e.g. `--broker-arg=-o --broker-arg=log.flush.interval.ms=1000`.
    #[arg(long, allow_hyphen_values = true)]
    broker_arg: Vec<String>,
    /// A second broker: every workload runs on both in turn (A B A B …)
    /// and the per-pair ratios B / A are printed.
    #[arg(long)]
    vs: Option<String>,
    /// Runs of each workload (A/B pairs with --vs); reports and `compare`
    /// use the median.
    #[arg(long, alias = "pairs", default_value_t = 1)]
    repeat: usize,
    /// Write the report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Processes of the broker (or of every broker of a cluster) at
    /// --bootstrap whose CPU time to report, e.g. `4101,4102,4103`.
    #[arg(long, value_delimiter = ',', conflicts_with = "spawn")]
    broker_pids: Vec<u32>,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Cores to pin the generator threads to, e.g. `1` or `2,3`. With
    /// --spawn the default is every core the broker does not use.
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Override every workload's test duration.
    #[arg(long)]
    test_secs: Option<f64>,
    /// Override every workload's warm-up.
    #[arg(long)]
    warmup_secs: Option<f64>,
    /// Seconds between progress lines (0: none).
    #[arg(long, default_value_t = 5.0)]
    progress_secs: f64,
    /// Leave the benchmark topics on the broker.
    #[arg(long)]
    keep_topics: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run(args) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice-bench: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Compare {
            base,
            new,
            max_regression,
        } => match compare(&base, &new, &max_regression) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("sluice-bench: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn compare(base: &PathBuf, new: &PathBuf, limit: &str) -> Result<bool, String> {
    let limit = report::parse_fraction(limit)?;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p)
            .map_err(|e| format!("{}: {e}", p.display()))
            .and_then(|t| Report::from_json(&t).map_err(|e| format!("{}: {e}", p.display())))
    };
    let (b, n) = (read(base)?, read(new)?);
    let (rows, regressed) = report::compare(&b, &n, limit);
    print!("{}", report::compare_table(&rows, limit));
    if regressed {
        println!("regression beyond {:.1}%", limit * 100.0);
    } else {
        println!("no regression beyond {:.1}%", limit * 100.0);
    }
    Ok(!regressed)
}

fn run(args: RunArgs) -> Result<(), String> {
    let workloads = args
        .workloads
        .iter()
        .map(|p| Workload::load(p).map_err(|e| format!("{}: {e}", p.display())))
        .collect::<Result<Vec<_>, _>>()?;
    let spawned = if args.spawn {
        let bin = spawn::find_binary(args.broker_bin.clone());
        let s = spawn::spawn(bin, args.broker_cores, &args.broker_arg)?;
        eprintln!("started {} ({}) on {}", s.binary.display(), s.version, s.addr);
        Some(s)
    } else {
        None
    };
    let a = spawned.as_ref().map_or(args.bootstrap.clone(), |s| s.addr.clone());
    let mut cores = args.cores.clone();
    if cores.is_empty() && args.spawn {
        let n = std::thread::available_parallelism().map_or(1, usize::from);
        cores = (args.broker_cores..n).collect();
    }
    let opts = RunOptions {
        threads: args.threads,
        cores,
        progress_secs: args.progress_secs,
        keep_topics: args.keep_topics,
        test_secs: args.test_secs,
        warmup_secs: args.warmup_secs,
        broker_pids: match &spawned {
            Some(s) => vec![s.pid()],
            None => args.broker_pids.clone(),
        },
    };
    let mut targets = vec![Target {
        label: "A".into(),
        bootstrap: a.clone(),
        spawned_version: spawned.as_ref().map(|s| s.version.clone()),
    }];
    if let Some(b) = &args.vs {
        targets.push(Target {
            label: "B".into(),
            bootstrap: b.clone(),
            spawned_version: None,
        });
    }
    let mut results: Vec<WorkloadResult> = Vec::new();
    let pairs = args.repeat.max(1);
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut progress = |line: &str| eprintln!("{line}");
    for w in &workloads {
        for pair in 0..pairs {
            for t in &targets {
                let mut o = opts.clone();
                if t.label != "A" {
                    o.broker_pids.clear();
                }
                let r = run_workload(w, &t.bootstrap, &t.label, pair, &o, &mut progress)
                    .map_err(|e| format!("{} on {}: {e}", w.name, t.bootstrap))?;
                results.push(r);
            }
        }
    }
    print!("{}", report::table(&results));
    if args.vs.is_some() {
        print!("{}", report::ratios(&results));
    }
    let rep = Report {
        tool: "sluice-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("SLUICE_BENCH_COMMIT").into(),
        started_unix_s,
        host: Host::this(),
        targets,
        command: std::env::args().collect(),
        workloads,
        results,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, rep.to_json()).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    drop(spawned);
    Ok(())
}
