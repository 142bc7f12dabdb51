#!/usr/bin/env python3
"""TLS and SASL against plaintext, on one broker shard (core 0) with the
load on core 1, alternating runs (docs/benchmarks.md, "TLS and SASL"):

- produce (acks=1) and consume MB/s and broker CPU per GB, 1 KiB and
  64 KiB records, PLAINTEXT against SSL, with rdkafka_performance
  (librdkafka 2.16, bench/peers/build_rdkafka_performance.sh);
- TLS handshakes and SCRAM-SHA-512 authentications per second of broker
  CPU (a Python client on core 1 makes them one after another; the broker's
  CPU time over the count is the figure, not the client's pace);
- publish latency p50/p99 at 5,000 msg/s acks=all, PLAINTEXT against
  SASL_SSL (SCRAM-SHA-512), with rdkafka_performance -l.

Usage: tls_bench.py [--runs 3] [--mb 256]
"""
import argparse
import hashlib
import hmac
import base64
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "clients"))
from tls_certs import Certs  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import cpu_ticks, free_port  # noqa: E402

PERF = os.environ.get("PERF", "/tmp/peers/bin/rdkafka_performance")
BIN = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "target", "release", "sluice"))


class Bench:
    def __init__(self, tmp):
        self.certs = Certs(tmp)
        ports = set()
        while len(ports) < 3:
            ports.add(free_port())
        self.ports = dict(zip(("PLAINTEXT", "SSL", "SASL_SSL"), sorted(ports)))
        spec = ",".join(f"{n}://127.0.0.1:{p}" for n, p in self.ports.items())
        data = os.path.join(os.environ.get("DATA", "/tmp"), "sluice-tls-bench")
        subprocess.run(["rm", "-rf", data], check=True)
        self.data = data
        self.log = open(data + ".log", "wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", BIN, "--cores", "1", "--listen", spec, "--data-dir", data,
             "-o", f"ssl.keystore.location={self.certs.keystore}", "-o", "sluice.admin.listen=",
             "-o", "num.partitions=1", "-o", "log.segment.bytes=1073741824"],
            stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.ports["PLAINTEXT"]), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                           UserScramCredentialUpsertion)
        admin = AdminClient({"bootstrap.servers": self.addr("PLAINTEXT")})
        up = UserScramCredentialUpsertion("bench", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                          b"bench-secret")
        admin.alter_user_scram_credentials([up])["bench"].result()

    def addr(self, listener):
        return f"127.0.0.1:{self.ports[listener]}"

    def props(self, listener):
        out = []
        if listener in ("SSL", "SASL_SSL"):
            out += ["-X", f"security.protocol={listener}", "-X", f"ssl.ca.location={self.certs.ca}"]
        if listener == "SASL_SSL":
            out += ["-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", "sasl.username=bench",
                    "-X", "sasl.password=bench-secret"]
        return out

    def perf(self, listener, args):
        """Runs rdkafka_performance on core 1; (its output, broker CPU s).
        The client's CPU seconds are kept in `self.client_cpu`."""
        import resource
        t0 = cpu_ticks(self.proc.pid)
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(["taskset", "-c", "1", PERF, "-b", self.addr(listener)] + self.props(listener) + args,
                           capture_output=True, text=True, timeout=600)
        cpu = (cpu_ticks(self.proc.pid) - t0) / os.sysconf("SC_CLK_TCK")
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.client_cpu = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
        return r.stdout + r.stderr, cpu

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        subprocess.run(["rm", "-rf", self.data], check=True)


def mbps(out, verb):
    m = [
        (re.search(r"\((\d+) bytes\)", line), re.search(r" in (\d+)ms", line))
        for line in out.splitlines()
        if verb in line
    ]
    m = [(int(b.group(1)), int(t.group(1))) for b, t in m if b and t]
    if not m:
        raise RuntimeError(f"no '{verb}' summary in: {out[-2000:]}")
    return m[-1]


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def throughput(b, runs, total_mb):
    rows = []
    for size in (1024, 65536):
        count = total_mb * 1024 * 1024 // size
        res = {("produce", l): [] for l in ("PLAINTEXT", "SSL")}
        res.update({("consume", l): [] for l in ("PLAINTEXT", "SSL")})
        for i in range(runs):
            for listener in ("PLAINTEXT", "SSL") if i % 2 == 0 else ("SSL", "PLAINTEXT"):
                topic = f"t-{size}-{listener}-{i}"
                out, cpu = b.perf(listener, ["-P", "-t", topic, "-p", "0", "-s", str(size), "-c", str(count),
                                             "-a", "1", "-X", "linger.ms=5", "-X", "batch.size=1000000",
                                             "-X", "queue.buffering.max.kbytes=1048576",
                                             "-X", "queue.buffering.max.messages=1000000"])
                nbytes, ms = mbps(out, "produced")
                res[("produce", listener)].append((nbytes / ms / 1000, cpu / (nbytes / 1e9),
                                                   b.client_cpu / (nbytes / 1e9)))
                out, cpu = b.perf(listener, ["-C", "-t", topic, "-p", "0", "-o", "beginning", "-c", str(count),
                                             "-X", "fetch.max.bytes=52428800",
                                             "-X", "fetch.message.max.bytes=10485760"])
                nbytes, ms = mbps(out, "consumed")
                res[("consume", listener)].append((nbytes / ms / 1000, cpu / (nbytes / 1e9),
                                                   b.client_cpu / (nbytes / 1e9)))
        for op in ("produce", "consume"):
            p = res[(op, "PLAINTEXT")]
            t = res[(op, "SSL")]
            pm, tm = median([x[0] for x in p]), median([x[0] for x in t])
            pc, tc = median([x[1] for x in p]), median([x[1] for x in t])
            pk, tk = median([x[2] for x in p]), median([x[2] for x in t])
            rows.append((op, size, pm, tm, tm / pm, pc, tc, tc / pc, pk, tk))
    print("| op | record | plaintext MB/s | TLS MB/s | TLS/plain | broker CPU s/GB plain | TLS | ratio "
          "| client CPU s/GB plain | TLS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for op, size, pm, tm, r, pc, tc, rc, pk, tk in rows:
        print(f"| {op} | {size // 1024} KiB | {pm:.0f} | {tm:.0f} | {r:.2f} | {pc:.2f} | {tc:.2f} | {rc:.2f} "
              f"| {pk:.2f} | {tk:.2f} |")


def handshakes(b, count):
    """Full TLS handshakes one after another (no session resumption)."""
    ctx = ssl.create_default_context(cafile=b.certs.ca)
    t0 = cpu_ticks(b.proc.pid)
    start = time.time()
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", b.ports["SSL"])) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.version()
    wall = time.time() - start
    cpu = (cpu_ticks(b.proc.pid) - t0) / os.sysconf("SC_CLK_TCK")
    return count / cpu, count / wall


def frame(api_key, version, correlation, body):
    header = struct.pack(">hhih", api_key, version, correlation, 5) + b"bench"
    msg = header + body
    return struct.pack(">i", len(msg)) + msg


def read_frame(s):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf
    (n,) = struct.unpack(">i", exact(4))
    return exact(n)


def scram_auths(b, count):
    ctx = ssl.create_default_context(cafile=b.certs.ca)
    user, password = "bench", b"bench-secret"
    salted_cache = {}
    # One TLS connection per authentication would measure handshakes too:
    # authenticate again on one connection instead (KIP-368's
    # re-authentication path serves a second exchange).
    with socket.create_connection(("127.0.0.1", b.ports["SASL_SSL"])) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            t0 = cpu_ticks(b.proc.pid)
            start = time.time()
            corr = 0
            for _ in range(count):
                corr += 1
                s.sendall(frame(17, 1, corr, struct.pack(">h", 13) + b"SCRAM-SHA-512"))
                resp = read_frame(s)
                assert struct.unpack(">h", resp[4:6])[0] == 0, resp
                nonce = base64.b64encode(os.urandom(18)).decode()
                first_bare = f"n={user},r={nonce}"
                first = ("n,," + first_bare).encode()
                corr += 1
                s.sendall(frame(36, 1, corr, struct.pack(">i", len(first)) + first))
                resp = read_frame(s)
                err = struct.unpack(">h", resp[4:6])[0]
                assert err == 0, resp
                (mlen,) = struct.unpack(">h", resp[6:8])
                off = 8 + max(mlen, 0)
                (blen,) = struct.unpack(">i", resp[off:off + 4])
                server_first = resp[off + 4:off + 4 + blen].decode()
                attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
                salt, iters = base64.b64decode(attrs["s"]), int(attrs["i"])
                salted = salted_cache.get((salt, iters))
                if salted is None:
                    salted = hashlib.pbkdf2_hmac("sha512", password, salt, iters)
                    salted_cache[(salt, iters)] = salted
                client_key = hmac.new(salted, b"Client Key", "sha512").digest()
                stored_key = hashlib.sha512(client_key).digest()
                without_proof = f"c=biws,r={attrs['r']}"
                auth_message = f"{first_bare},{server_first},{without_proof}".encode()
                signature = hmac.new(stored_key, auth_message, "sha512").digest()
                proof = bytes(a ^ b_ for a, b_ in zip(client_key, signature))
                last = f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
                corr += 1
                s.sendall(frame(36, 1, corr, struct.pack(">i", len(last)) + last))
                resp = read_frame(s)
                assert struct.unpack(">h", resp[4:6])[0] == 0, resp
            wall = time.time() - start
            cpu = (cpu_ticks(b.proc.pid) - t0) / os.sysconf("SC_CLK_TCK")
    return count / cpu, count / wall


def latency(b, runs, seconds):
    """rdkafka_performance -l writes each message's produce-to-delivery
    time (microseconds) with -A; p50 and p99 of each run after its first
    5,000 messages, then medians."""
    rows = {"PLAINTEXT": [], "SASL_SSL": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            for listener in ("PLAINTEXT", "SASL_SSL") if i % 2 == 0 else ("SASL_SSL", "PLAINTEXT"):
                path = os.path.join(tmp, f"{listener}-{i}.txt")
                out, _ = b.perf(listener, ["-P", "-t", f"lat-{listener}-{i}", "-p", "0", "-s", "1024",
                                           "-c", str(5000 * seconds), "-r", "5000", "-a", "-1", "-l", "-A", path,
                                           "-X", "linger.ms=0"])
                with open(path) as f:
                    xs = [int(line) for line in f if line.strip()]
                # The first second holds the connection's set-up (TLS
                # handshake, SASL, metadata): left out of both.
                xs = sorted(xs[5000:])
                if len(xs) < 100:
                    raise RuntimeError(out[-3000:])
                rows[listener].append((xs[len(xs) // 2] / 1000, xs[len(xs) * 99 // 100] / 1000))
    print("| listener | publish p50 ms | publish p99 ms |")
    print("|---|---|---|")
    for listener, xs in rows.items():
        print(f"| {listener} | {median([x[0] for x in xs]):.2f} | {median([x[1] for x in xs]):.2f} |")
    p = median([x[1] for x in rows["PLAINTEXT"]])
    t = median([x[1] for x in rows["SASL_SSL"]])
    print(f"p99 SASL_SSL / PLAINTEXT: {t / p:.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--handshakes", type=int, default=2000)
    ap.add_argument("--auths", type=int, default=2000)
    ap.add_argument("--latency-seconds", type=int, default=10)
    ap.add_argument("--only", default="throughput,handshakes,scram,latency")
    a = ap.parse_args()
    os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(tmp)
        try:
            only = a.only.split(",")
            if "throughput" in only:
                throughput(b, a.runs, a.mb)
            if "handshakes" in only:
                per_cpu, per_wall = handshakes(b, a.handshakes)
                print(f"TLS handshakes: {per_cpu:.0f} per broker CPU second ({per_wall:.0f}/s at the client's pace)")
            if "scram" in only:
                per_cpu, per_wall = scram_auths(b, a.auths)
                print(f"SCRAM-SHA-512 authentications: {per_cpu:.0f} per broker CPU second ({per_wall:.0f}/s at the client's pace)")
            if "latency" in only:
                latency(b, a.runs, a.latency_seconds)
        finally:
            b.stop()


if __name__ == "__main__":
    main()
