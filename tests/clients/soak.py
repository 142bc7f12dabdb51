"""The soak: random faults against a three-node cluster under the recording
workload for a given time, then a drain and the history checker.

    python3 tests/clients/soak.py --seconds 3600 --seed 7 [--out DIR]

Builds nothing: it runs target/release/sluice (or $SLUICE_BIN) and
target/release/sluice-check. Needs root (tmpfs mounts, nftables). Writes
DIR/report.json, DIR/summary.txt, DIR/history.jsonl and the nodes' logs;
the last line printed is `anomalies: N`, and the exit status is 1 when N > 0.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import BINARY, ROOT  # noqa: E402
from faults import FAULTS, run_faults  # noqa: E402
from history import CHECKER  # noqa: E402

# Time kept back at the end for stopping the workload and the drain.
TAIL_S = 20


def schedule(rng, seconds):
    """Random faults until `seconds` from now (less the tail)."""
    end = time.time() + seconds - TAIL_S
    while time.time() < end:
        yield rng.choice(FAULTS)


def summary(report, args):
    check = report["check"]
    ops = report["operations"]
    lines = [
        f"sluice soak: {args.seconds} s asked, {report['seconds']} s run, seed {args.seed}, "
        f"commit {report['commit']}",
        f"operations: {sum(ops.values())} ({', '.join(f'{k} {v}' for k, v in sorted(ops.items()))})",
        f"acknowledged sends: {check['acknowledged']} of {check['sends']}; reads: {check['reads']}",
        f"faults: {len(report['faults'])} ({', '.join(f'{k} {v}' for k, v in report['fault_counts'].items())})",
        f"faults after which the cluster did not settle within 60 s: {report['unsettled']}",
        "longest stretch without an acknowledged idempotent write, per fault type (s):",
    ]
    for kind, gap in sorted(report["availability_longest_gap_s"].items()):
        lines.append(f"  {kind:22} {gap:7.2f}")
    counts = check["counts"]
    lines.append("anomalies by kind (allowed: lost_acks1, duplicate_non_idempotent): "
                 + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    for a in check["anomalies"][:10]:
        lines.append(f"  {a['kind']}: {a['message']} (ops {a['ops'][:6]})")
    lines.append(f"anomalies: {report['anomalies']}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    for binary in (BINARY, CHECKER):
        if not os.access(binary, os.X_OK):
            sys.exit(f"soak: {binary} is missing: build the release binaries first "
                     "(cargo build --release -p sluice -p sluice-tools)")
    if os.geteuid() != 0:
        sys.exit("soak: needs root (tmpfs mounts and nftables rules)")
    out = args.out or os.path.join(ROOT, "target", "soak", f"{time.strftime('%Y%m%d-%H%M%S')}-seed{args.seed}")
    os.makedirs(out, exist_ok=True)
    rng = random.Random(args.seed)
    log_file = open(os.path.join(out, "faults.log"), "w")

    def log(line):
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    log(f"soak: {args.seconds} s, seed {args.seed}, output in {out}")
    # The commit the binaries were built from is the one checked out now,
    # not whatever is checked out when the hour is over.
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or None
    report = run_faults(out, schedule(rng, args.seconds), seed=args.seed, hold=lambda r: r.uniform(2, 10),
                        rate=100, disk_mb=1024, base=21, log=log)
    report["binary"] = BINARY
    report["commit"] = commit
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    text = summary(report, args)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    sys.exit(1 if report["anomalies"] > 0 else 0)


if __name__ == "__main__":
    main()
