//! `sluice-lag`: committed offset, log end offset and lag per consumer group
//! and partition.
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "sluice-lag", version, about = "Consumer-group lag per partition")]
struct Args {
    /// Broker address.
    #[arg(short, long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Groups to report (default: every group the broker lists).
    #[arg(short, long = "group")]
    groups: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match sluice_tools::lag(&args.bootstrap, &args.groups) {
        Ok(rows) => {
            if args.json {
                match serde_json::to_string_pretty(&rows) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("sluice-lag: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", sluice_tools::table(&rows));
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice-lag: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
