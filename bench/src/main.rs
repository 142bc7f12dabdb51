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
    /// The loopback floor: CPU per one-record Produce and one-batch Fetch
    /// request on a spawned Sluice (one shard) against a server that only
    /// answers (`sluice_bench::floor`), at fixed rates, alternating runs.
    Floor(FloorArgs),
    /// The floor's server alone (what `floor` spawns).
    #[command(hide = true)]
    FloorServe {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        records_bytes: usize,
        #[arg(long)]
        core: Option<usize>,
    },
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
struct FloorArgs {
    /// The `sluice` binary (default: $SLUICE_BIN, next to this program, or
    /// on the PATH).
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// Requests a second, comma-separated.
    #[arg(long, default_value = "10000,50000", value_delimiter = ',')]
    rates: Vec<f64>,
    /// Measured seconds of each run (after 2 s of warm-up).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Runs of each server per rate and kind, alternating.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Connections sending Produce requests.
    #[arg(long, default_value_t = 16)]
    produce_connections: usize,
    /// Connections sending Fetch requests.
    #[arg(long, default_value_t = 4)]
    fetch_connections: usize,
    /// Partitions the requests go round.
    #[arg(long, default_value_t = 64)]
    partitions: i32,
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
        Cmd::Floor(args) => match floor(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice-bench: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::FloorServe {
            listen,
            topic,
            records_bytes,
            core,
        } => match sluice_bench::floor::serve(&listen, &topic, records_bytes, core) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice-bench floor: {e}");
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

const FLOOR_TOPIC: &str = "sluice-bench-floor";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn floor(args: FloorArgs) -> Result<(), String> {
    use sluice_bench::floor::{self, Kind};
    use std::time::Duration;
    let bin = spawn::find_binary(args.broker_bin.clone());
    let extra = ["-o".to_string(), "sluice.admin.listen=".to_string()];
    let sluice = spawn::spawn(bin, 1, &extra)?;
    // The topic, and one batch in each partition for the fetches to read.
    let mut conn = sluice_tools::Connection::connect(&sluice.addr).map_err(|e| e.to_string())?;
    let versions = sluice_bench::admin::Versions::fetch(&mut conn).map_err(|e| e.to_string())?;
    sluice_bench::admin::create_topics(
        &mut conn,
        &versions,
        &[FLOOR_TOPIC.to_string()],
        args.partitions as u32,
        1,
        &sluice.addr,
    )
    .map_err(|e| e.to_string())?;
    let produce: Vec<_> = (0..args.partitions)
        .map(|p| floor::produce_request(FLOOR_TOPIC, p, 1024))
        .collect::<Result<_, _>>()?;
    let fetch: Vec<_> = (0..args.partitions)
        .map(|p| floor::fetch_request(FLOOR_TOPIC, p, 2048))
        .collect::<Result<_, _>>()?;
    let one = floor::drive(
        &sluice.addr,
        produce.clone(),
        1000.0,
        1,
        Duration::ZERO,
        Duration::from_millis(200),
        sluice.pid(),
        None,
    )?;
    eprintln!("produced {} records", one.requests);
    // Sluice's fetch answer sets the floor's records size.
    let probe = floor::drive(
        &sluice.addr,
        fetch.clone(),
        100.0,
        1,
        Duration::ZERO,
        Duration::from_millis(100),
        sluice.pid(),
        None,
    )?;
    let head = floor::fetch_head_bytes(FLOOR_TOPIC)?;
    let records_bytes = probe.answer_bytes.saturating_sub(head);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let floor_addr = format!("127.0.0.1:{port}");
    let mut server = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args([
            "floor-serve",
            "--listen",
            &floor_addr,
            "--topic",
            FLOOR_TOPIC,
            "--core",
            "0",
        ])
        .args(["--records-bytes", &records_bytes.to_string()])
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&floor_addr).is_err() {
        if std::time::Instant::now() > deadline {
            let _ = server.kill();
            return Err("the floor server did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    let gen_core = (n > 1).then_some(1);
    println!(
        "| request | rate/s | connections | Sluice µs CPU per request | floor µs | Sluice / floor | answer bytes (Sluice, floor) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let result = (|| {
        for &rate in &args.rates {
            for kind in [Kind::Produce, Kind::Fetch] {
                let (frames, conns) = match kind {
                    Kind::Produce => (&produce, args.produce_connections),
                    Kind::Fetch => (&fetch, args.fetch_connections),
                };
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let (mut a_bytes, mut b_bytes) = (0, 0);
                for _ in 0..args.runs {
                    for (addr, pid, out, bytes) in [
                        (&sluice.addr, sluice.pid(), &mut a, &mut a_bytes),
                        (&floor_addr, server.id(), &mut b, &mut b_bytes),
                    ] {
                        let d = floor::drive(
                            addr,
                            frames.clone(),
                            rate,
                            conns,
                            Duration::from_secs(2),
                            Duration::from_secs(args.secs),
                            pid,
                            gen_core,
                        )?;
                        out.push(d.cpu_us_per_request());
                        *bytes = d.answer_bytes;
                    }
                }
                let (sa, sb) = (median(a), median(b));
                println!(
                    "| {kind:?} | {rate} | {conns} | {sa:.1} | {sb:.1} | {:.2} | {a_bytes}, {b_bytes} |",
                    sa / sb.max(1e-9)
                );
            }
        }
        Ok::<(), String>(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
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
