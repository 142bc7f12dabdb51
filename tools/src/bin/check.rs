//! `sluice-check`: the history checker (see `sluice_tools::history` and
//! `docs/reliability.md`). Reads a JSON Lines history, prints the report as
//! JSON, then `anomalies: N` (those the durability promise forbids), and
//! exits 1 when N > 0 (2 when the history cannot be read).

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use sluice_tools::history::{self, Allowances};

#[derive(Parser, Debug)]
#[command(name = "sluice-check", about = "Check a recorded history for anomalies")]
struct Args {
    /// The history (JSON Lines); `-` for standard input.
    history: String,
    /// Unclean leader election was enabled: lost acknowledged writes and
    /// reused offsets are reported but allowed.
    #[arg(long)]
    allow_unclean: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut text = String::new();
    let read = if args.history == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(&args.history).map(|t| text = t)
    };
    if let Err(e) = read {
        eprintln!("sluice-check: reading {}: {e}", args.history);
        return ExitCode::from(2);
    }
    let ops = match history::parse(&text) {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("sluice-check: {}: {e}", args.history);
            return ExitCode::from(2);
        }
    };
    let report = history::check(
        &ops,
        Allowances {
            unclean: args.allow_unclean,
        },
    );
    match serde_json::to_string_pretty(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("sluice-check: {e}");
            return ExitCode::from(2);
        }
    }
    println!("anomalies: {}", report.forbidden);
    if report.forbidden > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
