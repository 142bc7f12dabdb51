"""kafkajs 2.2.4 (Node.js, its own protocol implementation) against Sluice:
tests/clients/node/check.js, with the package pinned by its lock file
(scripts/test.sh installs it with `npm ci`)."""
import os
import subprocess

from conftest import ROOT

NODE = os.path.join(ROOT, "tests", "clients", "node")


def test_kafkajs_admin_produce_group_commit_and_resume(broker):
    assert os.path.isdir(os.path.join(NODE, "node_modules", "kafkajs")), "run npm ci in tests/clients/node first"
    r = subprocess.run(["node", os.path.join(NODE, "check.js"), broker.bootstrap], capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout
