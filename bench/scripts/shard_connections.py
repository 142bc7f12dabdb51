#!/usr/bin/env python3
"""What shard endpoints cost in connections (docs/benchmarks.md, "Shard
endpoints"): a broker of 2 shards with `sluice.shard.listeners` on and off,
and N clients that each connect as a Kafka client would: to the bootstrap
port for Metadata, then to every broker Metadata lists (with shard
endpoints, one per shard). Each connection sends ApiVersions and Metadata
and stays open. Reports the connections the broker holds, its resident
memory before and after (and per connection), and the broker CPU time the
connections took.

Usage: shard_connections.py [--clients 1000] [--shards 2]
"""
import argparse
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "target", "release", "sluice"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import cpu_ticks, free_port, rss_kib  # noqa: E402


def request(key, version, correlation, body=b""):
    client = b"conn-bench"
    header = struct.pack(">hhih", key, version, correlation, len(client)) + client
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def read_frame(s):
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    (n,) = struct.unpack(">i", head)
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return body


def metadata_brokers(s):
    """Metadata v1 with no topics: the brokers' (id, host, port)."""
    s.sendall(request(3, 1, 7, struct.pack(">i", 0)))
    body = read_frame(s)[4:]  # past the correlation id
    (n,) = struct.unpack(">i", body[:4])
    pos, out = 4, []
    for _ in range(n):
        node, hlen = struct.unpack(">ih", body[pos:pos + 6])
        pos += 6
        host = body[pos:pos + hlen].decode()
        pos += hlen
        (port,) = struct.unpack(">i", body[pos:pos + 4])
        pos += 4
        (rlen,) = struct.unpack(">h", body[pos:pos + 2])
        pos += 2 + max(rlen, 0)
        out.append((node, host, port))
    return out


def run(endpoints, clients, shards):
    raise_limit = clients * 4 + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, raise_limit), hard), hard))
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        cmd = ["taskset", "-c", "0", BIN, "--cores", str(shards), "--listen", f"127.0.0.1:{port}",
               "--data-dir", data, "-o", "sluice.admin.listen=", "-o",
               f"sluice.shard.listeners={'true' if endpoints else 'false'}", "-o", "max.connections=100000"]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
            time.sleep(1)
            rss0, cpu0 = rss_kib(p.pid), cpu_ticks(p.pid)
            held = []
            t0 = time.time()
            for i in range(clients):
                boot = socket.create_connection(("127.0.0.1", port))
                boot.sendall(request(18, 0, 1))
                read_frame(boot)
                brokers = metadata_brokers(boot)
                held.append(boot)
                for _, host, bport in brokers:
                    s = socket.create_connection((host, bport))
                    s.sendall(request(18, 0, 1))
                    read_frame(s)
                    s.sendall(request(3, 1, 2, struct.pack(">i", 0)))
                    read_frame(s)
                    held.append(s)
            took = time.time() - t0
            time.sleep(1)
            rss1, cpu1 = rss_kib(p.pid), cpu_ticks(p.pid)
            hz = os.sysconf("SC_CLK_TCK")
            out = {
                "endpoints": endpoints, "clients": clients, "connections": len(held),
                "rss_before_mib": rss0 / 1024, "rss_after_mib": rss1 / 1024,
                "kib_per_connection": (rss1 - rss0) / len(held),
                "broker_cpu_s": (cpu1 - cpu0) / hz, "seconds": took,
            }
            for s in held:
                s.close()
            return out
        finally:
            p.terminate()
            p.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=2)
    args = ap.parse_args()
    print("| shard endpoints | clients | connections held | broker RSS before → after | KiB per connection | broker CPU s |")
    print("|---|---|---|---|---|---|")
    for endpoints in (False, True):
        r = run(endpoints, args.clients, args.shards)
        print(f"| {'on' if endpoints else 'off'} | {r['clients']} | {r['connections']} | "
              f"{r['rss_before_mib']:.1f} → {r['rss_after_mib']:.1f} MiB | {r['kib_per_connection']:.1f} | "
              f"{r['broker_cpu_s']:.2f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
