"""sarama 1.22 (Go; Debian's golang-github-shopify-sarama-dev, built with
Debian's Go in GOPATH mode) against Sluice: tests/clients/go/sarama_check.go."""
import os
import subprocess

from conftest import ROOT

SRC = os.path.join(ROOT, "tests", "clients", "go", "sarama_check.go")
BIN = os.path.join(ROOT, "target", "sarama-check")


def build():
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode",
               GOCACHE=os.path.join(ROOT, "target", "go-cache"))
    r = subprocess.run(["go", "build", "-o", BIN, SRC], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr


def test_sarama_admin_produce_consume_group_commit_and_resume(broker):
    build()
    r = subprocess.run([BIN, broker.bootstrap], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok" in r.stdout
