"""The short fault-injection suite: every fault of `faults.py` once, held a
few seconds, against a three-node cluster under the recording workload; the
history checker must find no anomaly the durability promise forbids, and
writes must flow again once the fault is healed."""
import json

import pytest

from faults import FAULTS, run_faults


@pytest.mark.parametrize("fault", FAULTS)
def test_fault(fault, tmp_path):
    report = run_faults(str(tmp_path), [fault], seed=FAULTS.index(fault), hold=lambda rng: 4.0)
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1))
    ops = report["operations"]
    assert report["anomalies"] == 0, json.dumps(report["check"], indent=1)
    assert report["unsettled"] == 0, "the cluster did not recover its leaders and ISRs"
    # Every producer had writes acknowledged and the consumers read them.
    assert ops.get("send_ok", 0) > 1000, ops
    assert ops.get("read", 0) > 1000, ops
    # The idempotent acks=all producer was never stopped for good: its
    # longest stretch without an acknowledgement is bounded.
    assert report["availability_longest_gap_s"][fault] < 30, report["availability_longest_gap_s"]
