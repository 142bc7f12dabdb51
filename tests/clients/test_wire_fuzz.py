"""sluice-wire-fuzz against the release broker, briefly: mutated frames of
every API over TCP, with a fresh connection and an idle one answered within
1 s after every 1,000 frames, and a clean shutdown after. The long runs and
their figures are in docs/reliability.md (scripts/fuzz.sh)."""
import os
import subprocess

from conftest import ROOT, running_broker

FUZZER = os.path.join(ROOT, "target", "release", "sluice-wire-fuzz")


def test_mutated_frames_over_tcp_crash_and_hang_nothing():
    extra = ["sluice.fetch.max.wait.ms=100", "group.initial.rebalance.delay.ms=0", "sluice.max.partitions=2000"]
    with running_broker(extra) as b:
        r = subprocess.run(
            [FUZZER, "--bootstrap", b.bootstrap, "--frames", "100000", "--seed", "20261128",
             "--corpus", os.path.join(ROOT, "tests", "fuzz", "corpus")],
            capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr + r.stdout
        assert "0 crashes, 0 hangs" in r.stdout
        assert b.proc.poll() is None, "the broker is still running"
    # running_broker's stop asserted a clean exit 0.
