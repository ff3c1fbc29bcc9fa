"""End-to-end throughput of the gateway, next to the same client sending straight to the sink.

    client → mailmoat intake (scan, spool fsync, 250) → delivery worker → aiosmtpd sink
    client → aiosmtpd sink                                   (baseline, same run)

For each concurrency (client connections, each sending back to back) it reports messages
per second until the sink has them all, the end-to-end latency per message (client send
start → sink receipt) at p50/p99 for both paths and the difference ("added"), and the
gateway process's peak RSS (VmHWM), its CPU per message (and the kernel's share), and the
CPU the bench's own client and sink spent. The gateway runs as `mailmoat serve` in a
subprocess with the default checks (or `--only CHECK...`, e.g. `--only gtube malformed`, the
gateway core's own), SQLite message log and the default spool; the sink is an aiosmtpd
server in a process of its own.

    python bench/throughput.py [--messages 600] [--concurrency 1 8 32] [--processes 2]

Prints a table and writes bench/results/throughput.json. The gateway runs the mailmoat this
script imports; `PYTHONPATH=OTHER/src python bench/throughput.py` measures another checkout's
(both processes inherit it), e.g. before and after a change on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller

from mailmoat.evaluation.paths import results_dir


class Sink:
    """The downstream: an aiosmtpd server in a process of its own (so it shares no GIL with
    the client), which prints `seq receipt-time` per message; a thread here collects them.
    time.perf_counter() is CLOCK_MONOTONIC on Linux, comparable across processes."""

    def __init__(self, port: int) -> None:
        self.arrived = threading.Condition()  # notified on every receipt
        self.received: dict[str, float] = {}
        self.port = port
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-sink", str(port)],
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the sink did not start")
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            seq, _, at = line.strip().rpartition(" ")
            with self.arrived:
                self.received.setdefault(seq, float(at))
                self.arrived.notify_all()

    def cpu_seconds(self) -> float:
        return cpu_seconds_of(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def serve_sink(port: int) -> None:
    """`--serve-sink PORT`: the sink process."""

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            seq = BytesHeaderParser().parsebytes(envelope.original_content).get("X-Bench-Seq", "")
            print(seq, time.perf_counter(), flush=True)
            return "250 2.0.0 ok"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


def serve_gateway(config: str) -> None:
    """`--serve-gateway CONFIG`: `python -m mailmoat serve --config CONFIG --log-level
    WARNING`, except that mailmoat.app also logs at INFO, which says when each gateway
    process listens (`wait_listening`) and nothing per message; the mail log stays off, as
    at WARNING."""
    import logging
    import runpy

    # serve's own logging.basicConfig() leaves a root logger that has a handler as it is.
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mailmoat.app").setLevel(logging.INFO)
    sys.argv = ["mailmoat", "serve", "--config", config, "--log-level", "WARNING"]
    runpy.run_module("mailmoat", run_name="__main__", alter_sys=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def message(run: str, seq: int) -> bytes:
    return (f"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\n"
            f"Subject: Meeting notes {seq}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{run}-{seq}@sender.test>\r\nX-Bench-Seq: {run}-{seq}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Hi Bob,\r\n\r\nhere are the notes from today's meeting. The next one is on\r\n"
            f"Tuesday; the agenda is at https://wiki.sender.test/meetings/{seq}.\r\n\r\n"
            f"Alice\r\n").encode()


async def send_all(port: int, run: str, n: int, conc: int, starts: dict[str, float],
                   accepted: dict[str, float]) -> None:
    seqs = iter(range(n))

    async def one() -> None:
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60)
        await c.connect()
        for seq in seqs:
            key = f"{run}-{seq}"
            starts[key] = time.perf_counter()
            await c.sendmail("alice@sender.test", ["bob@example.test"], message(run, seq))
            accepted[key] = time.perf_counter()  # the 250 after DATA
        await c.quit()

    await asyncio.gather(*(one() for _ in range(conc)))


def family(pid: int) -> list[int]:
    """The gateway and its children (`[smtp] processes` > 1 forks one per process)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return [pid, *(int(k) for k in kids)]


def cpu_seconds_of(pid: int, kind: str = "both") -> float:
    """User+system (or `kind` "user"/"system") CPU seconds of one process; 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    utime, stime = int(fields[11]), int(fields[12])
    return {"user": utime, "system": stime}.get(kind, utime + stime) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None, kind: str = "both") -> float:
    """The same for the gateway and its children, or (pid None) for this process."""
    if pid is None:
        t = os.times()
        return {"user": t.user, "system": t.system}.get(kind, t.user + t.system)
    return sum(cpu_seconds_of(p, kind) for p in family(pid))


def measure(port: int, sink: Sink, run: str, n: int, conc: int,
            gw_pid: int | None = None) -> dict[str, float]:
    starts: dict[str, float] = {}
    t0 = time.perf_counter()
    cpu0 = cpu_seconds(gw_pid) if gw_pid else 0.0
    per0 = {p: cpu_seconds_of(p) for p in family(gw_pid)} if gw_pid else {}
    sys0 = cpu_seconds(gw_pid, "system") if gw_pid else 0.0
    bench0 = cpu_seconds(None) + sink.cpu_seconds()
    accepted: dict[str, float] = {}
    asyncio.run(send_all(port, run, n, conc, starts, accepted))
    intake_s = max(accepted.values()) - t0
    keys = [f"{run}-{i}" for i in range(n)]
    with sink.arrived:  # until the sink has every message (or 300 s have passed)
        sink.arrived.wait_for(lambda: all(k in sink.received for k in keys), timeout=300)
        ends = {k: sink.received[k] for k in keys if k in sink.received}
    if len(ends) < n:
        raise RuntimeError(f"{run}: only {len(ends)} of {n} messages arrived")
    elapsed = max(ends.values()) - t0
    lat = sorted((ends[k] - starts[k]) * 1000 for k in keys)
    reply = sorted((accepted[k] - starts[k]) * 1000 for k in keys)
    out = {"msgs_per_s": n / elapsed, "p50_ms": statistics.median(lat),
           "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))], "seconds": elapsed,
           # until the client had its last 250, and how long each transaction took to it
           "accepted_msgs_per_s": n / intake_s,
           "reply_p50_ms": statistics.median(reply),
           "reply_p99_ms": reply[min(len(reply) - 1, int(len(reply) * 0.99))]}
    if gw_pid:
        # CPU the gateway spent per message: independent of how loaded the machine is.
        out["gateway_cpu_ms_per_msg"] = (cpu_seconds(gw_pid) - cpu0) / n * 1000
        # the kernel's share (socket I/O, fsync, renames) of that CPU
        out["gateway_sys_ms_per_msg"] = (cpu_seconds(gw_pid, "system") - sys0) / n * 1000
        # how the work spread over the processes of `[smtp] processes = N` (seconds each)
        out["cpu_s_by_process"] = [round(cpu_seconds_of(p) - c, 2) for p, c in per0.items()]
    # the bench's own client + sink share the machine's cores with the gateway
    out["bench_cpu_ms_per_msg"] = (cpu_seconds(None) + sink.cpu_seconds() - bench0) / n * 1000
    return out


def peak_rss_mib(pid: int) -> float:
    """Peak RSS (VmHWM) summed over the gateway's processes (shared pages count twice)."""
    total = 0
    for p in family(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


def all_check_names() -> set[str]:
    """The names of every check class of the registered families (without building them:
    that would load the models)."""
    import importlib
    import inspect

    from mailmoat.scan.base import Check
    from mailmoat.scan.registry import FAMILY_MODULES

    names = set()
    for modname in FAMILY_MODULES:
        for _, obj in inspect.getmembers(importlib.import_module(modname), inspect.isclass):
            if issubclass(obj, Check) and obj.name:
                names.add(obj.name)
    return names


def wait_listening(gw: subprocess.Popen[str], processes: int, timeout: float) -> None:
    """Until each of the gateway's `processes` has logged that it listens; its stderr is
    passed on to ours, then and afterwards, by a thread of its own."""
    listening = threading.Semaphore(0)

    def relay() -> None:
        assert gw.stderr is not None
        for line in gw.stderr:
            if "SMTP listening on" in line:
                listening.release()
            else:
                sys.stderr.write(line)
        listening.release()  # the gateway exited: stop waiting

    threading.Thread(target=relay, daemon=True).start()
    deadline = time.monotonic() + timeout
    for _ in range(processes):
        if not listening.acquire(timeout=max(0.0, deadline - time.monotonic())) \
                or gw.poll() is not None:
            raise RuntimeError("the gateway did not log 'SMTP listening on' for each process "
                               f"(exit code {gw.poll()})")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-sink":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        serve_sink(int(sys.argv[2]))
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-gateway":
        serve_gateway(sys.argv[2])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=600)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--processes", type=int, default=1, help="[smtp] processes of the gateway")
    ap.add_argument("--disable", nargs="*", default=[],
                    help="[scan] disabled_checks, to see what a check costs")
    ap.add_argument("--only", nargs="*", default=None,
                    help="run only these checks, e.g. `--only gtube malformed` (the gateway "
                         "core's built-in checks); the others go into disabled_checks")
    ap.add_argument("--deep-mode", choices=("band", "all", "off"), default="band",
                    help="[deep] mode: tier 2 on tier 1's uncertain band (default), on every "
                         "message, or off")
    ap.add_argument("--out", default=str(results_dir() / "throughput.json"))
    args = ap.parse_args()
    # The client's loop shares this process's GIL with the thread that reads the sink's
    # receipts; at the default 5 ms switch interval a hand-over can stall the client that
    # long (the gateway sets 0.5 ms for the same reason).
    sys.setswitchinterval(float(os.environ.get("BENCH_SWITCH_INTERVAL", "0.0005")))

    if args.only is not None:
        args.disable = sorted(set(args.disable) | (all_check_names() - set(args.only)))
    sink_port = free_port()
    sink = Sink(sink_port)
    tmp = Path(tempfile.mkdtemp(prefix="mailmoat-bench-"))
    gw_port = free_port()
    cfg = tmp / "mailmoat.toml"
    cfg.write_text(f"""
[smtp]
listen = "127.0.0.1:{gw_port}"
relay_domains = ["example.test"]
trusted_networks = []
max_connections_per_ip = 500

{f"processes = {args.processes}" if args.processes != 1 else ""}
[delivery]
downstream = "127.0.0.1:{sink_port}"
workers = 32
[storage]
data_dir = "{tmp / 'data'}"
[web]
enabled = false
[scan]
network = false
{"disabled_checks = " + json.dumps(args.disable) if args.disable else ""}
[deep]
mode = "{args.deep_mode}"
""")
    prof = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] \
        if os.environ.get("BENCH_PROFILE") else []  # profile the gateway's main thread
    gw = subprocess.Popen([sys.executable, *prof, __file__, "--serve-gateway", str(cfg)],
                          stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        wait_listening(gw, args.processes, timeout=300)
        # warm-up: imports, first connections, SQLite schema
        measure(gw_port, sink, "warm", 50, 4)
        spy = None
        if os.environ.get("BENCH_PYSPY"):
            # Sample every thread of the gateway (py-spy record --format raw: collapsed
            # stacks, one line per distinct stack with its sample count).
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record",
                                    "--pid", str(gw.pid), "--format", "raw", "--rate", "200",
                                    "--threads", "--subprocesses", "-o", os.environ["BENCH_PYSPY"],
                                    # e.g. "--gil": only the thread holding the GIL, i.e.
                                    # Python CPU time rather than waits
                                    *os.environ.get("BENCH_PYSPY_ARGS", "").split()],
                                   stdout=subprocess.PIPE, text=True)
            assert spy.stdout is not None
            for line in spy.stdout:  # until it has attached and samples
                if line.startswith("py-spy> Sampling"):
                    break
        rows = []
        for conc in args.concurrency:
            direct = measure(sink_port, sink, f"direct-c{conc}", args.messages, conc)
            through = measure(gw_port, sink, f"gateway-c{conc}", args.messages, conc, gw.pid)
            rows.append({"concurrency": conc, "messages": args.messages,
                         "gateway": through, "direct": direct,
                         "ratio": through["msgs_per_s"] / direct["msgs_per_s"],
                         "added_p50_ms": through["p50_ms"] - direct["p50_ms"],
                         "added_p99_ms": through["p99_ms"] - direct["p99_ms"]})
        rss = peak_rss_mib(gw.pid)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        if os.environ.get("BENCH_THREADS"):
            for task in sorted(Path(f"/proc/{gw.pid}/task").iterdir()):
                name = (task / "comm").read_text().strip()
                f = (task / "stat").read_text().rsplit(")", 1)[1].split()
                print(f"thread {name}: {(int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK'):.2f}s")
    finally:
        gw.terminate()
        gw.wait(30)
        sink.stop()
    result = {"cpus": os.cpu_count(), "python": platform.python_version(),
              "processes": args.processes, "disabled_checks": args.disable,
              "deep_mode": args.deep_mode,
              "load_avg_at_end": os.getloadavg(), "gateway_peak_rss_mib": rss, "rows": rows,
              "command": " ".join(["python", "bench/throughput.py", *sys.argv[1:]])}
    print(f"{'conc':>4} {'gateway msg/s':>14} {'direct msg/s':>13} {'ratio':>6} "
          f"{'gw p50 ms':>9} {'gw p99 ms':>9} {'added p50':>9} {'added p99':>9} "
          f"{'gw cpu ms/msg':>13} {'(sys)':>6} {'bench cpu':>9}")
    for r in rows:
        g, d = r["gateway"], r["direct"]
        print(f"{r['concurrency']:>4} {g['msgs_per_s']:>14.1f} {d['msgs_per_s']:>13.1f} "
              f"{r['ratio']:>6.2f} {g['p50_ms']:>9.1f} {g['p99_ms']:>9.1f} "
              f"{r['added_p50_ms']:>9.1f} {r['added_p99_ms']:>9.1f} "
              f"{g['gateway_cpu_ms_per_msg']:>13.2f} {g['gateway_sys_ms_per_msg']:>6.2f} "
              f"{g['bench_cpu_ms_per_msg']:>9.2f}")
    print(f"gateway peak RSS: {rss:.1f} MiB; load average at end: {os.getloadavg()}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
