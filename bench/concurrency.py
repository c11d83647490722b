"""Many jobs at a time in one processor: `7_job_processor.py --concurrency N` on jobs that wait on I/O.

Run:  .venv/bin/python -m bench.concurrency [--jobs 4000] [--concurrency 50] [--send-ms 100] [--rounds 3]
                                            [--kills 2] [--no-kue] [--no-processes]

Workload: --jobs notification jobs whose send takes --send-ms (NOTIFICATION_SEND_MS), created by
bench/creator.py, which hears every end; the ideal rate is concurrency / send time (50 / 0.1 s = 500/s).
Sides, alternating, --rounds times each, on one private Redis:
- ours: `7_job_processor.py --concurrency N` (threads: N jobs at once over its default two processes);
- ours, a process per job (`--processes N`): how N at once had to be run before --concurrency;
- Kue 0.11.6: the original's processor with `queue.process(name, N, fn)` and the same send time
  (installed with npm into a temporary folder, nothing kept), and its creator.
For each: end-to-end jobs/s (first job created to last end heard), and the peak memory (RSS) of the
processor's whole process tree, sampled every 50 ms.

Then ours under fire: the processor SIGKILLed (its whole tree) --kills times mid-run and started again;
every job must end exactly once (only jobs in the killed processors' hands may fail, as abandoned).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import redis

from bench.common import bench_redis, node_packages, start_processor
from queuing_system.processes import ROOT

KUE_DIR = Path(__file__).with_name("kue")
END = re.compile(r"^Notification job (\d+) (completed|failed: .*)$")
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(session: int) -> int:
    """Bytes resident in every process of `session` (the processor was started as its leader)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session:  # the session id (field 6 of /proc/<pid>/stat)
                total += int(Path(entry.path, "statm").read_text().split()[1]) * PAGE
    return total


class PeakMemory:
    """The largest tree_rss(session) seen while it runs (sampled every 50 ms)."""

    def __init__(self, session: int) -> None:
        self.session, self.peak = session, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, tree_rss(self.session))

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


class Side:
    def __init__(self, name: str, processor: list[str], creator: list[str], cwd: Path, ready: str) -> None:
        self.name, self.processor, self.creator, self.cwd, self.ready = name, processor, creator, cwd, ready

    def start(self, env: dict[str, str], connection: redis.Redis, concurrency: int) -> subprocess.Popen[bytes]:
        return start_processor(self.name, self.processor, self.cwd, env, lambda: self._ready(connection, concurrency))

    def _ready(self, connection: redis.Redis, concurrency: int) -> bool:
        if self.ready == "workers":  # ours: every worker registered
            return int(connection.scard("rq:workers")) >= concurrency
        return any(client.get("cmd") == "blpop" for client in connection.client_list())  # Kue: waiting

    def run(self, url: str, port: int, jobs: int, concurrency: int, send_ms: int) -> dict:
        connection = redis.Redis.from_url(url)
        connection.flushdb()
        env = {
            **os.environ,
            "REDIS_URL": url,
            "REDIS_PORT": str(port),
            "JOBS": str(jobs),
            "CONCURRENCY": str(concurrency),
            "NOTIFICATION_SEND_MS": str(send_ms),
            "PYTHONPATH": str(ROOT),
        }
        processor = self.start(env, connection, concurrency)
        memory = PeakMemory(processor.pid)
        try:
            creator = subprocess.run(
                self.creator, cwd=self.cwd, env=env, capture_output=True, text=True, timeout=600, check=True
            )
        finally:
            peak = memory.stop()
            os.killpg(processor.pid, signal.SIGTERM)
            processor.wait(30)
            connection.close()
        result = json.loads(creator.stderr.strip().splitlines()[-1])
        result["peak_mb"] = peak / 2**20
        return result


def under_fire(url: str, jobs: int, concurrency: int, send_ms: int, kills: int) -> str:
    """Ours, SIGKILLed `kills` times mid-run and started again: how every job ended."""
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    env = {**os.environ, "REDIS_URL": url, "JOBS": str(jobs), "NOTIFICATION_SEND_MS": str(send_ms)}
    env["PYTHONPATH"] = str(ROOT)
    side = ours(concurrency)
    creator = subprocess.Popen(
        side.creator, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    ends: Counter[str] = Counter()
    failed: list[str] = []
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(creator.stdout or []), daemon=True)
    reader.start()
    processor = side.start(env, connection, concurrency)
    try:
        for kill in range(1, kills + 1):
            while sum(1 for line in list(lines) if END.match(line)) < jobs * kill // (kills + 1):
                time.sleep(0.01)
            os.killpg(processor.pid, signal.SIGKILL)  # the processor and every worker, jobs in hand
            processor.wait(30)
            processor = side.start(env, connection, concurrency)
        creator.wait(600)
        reader.join(10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(processor.pid, signal.SIGTERM)
        processor.wait(30)
        connection.close()
    for line in lines:
        if match := END.match(line):
            ends[match.group(1)] += 1
            if match.group(2) != "completed":
                failed.append(match.group(2))
    every_once = sorted(ends, key=int) == [str(n) for n in range(1, jobs + 1)] and set(ends.values()) == {1}
    return (
        f"{len(ends)} of {jobs} jobs ended, {'each exactly once' if every_once else 'NOT each exactly once'}; "
        f"{len(failed)} failed ({', '.join(sorted(set(failed))) or 'none'}); at most {kills * concurrency} may"
    )


def ours(concurrency: int, processes: int | None = None) -> Side:
    arguments = ["--concurrency", str(concurrency)] + (["--processes", str(processes)] if processes else [])
    name = "ours" if processes is None else "ours, a process per job"
    return Side(
        name,
        [sys.executable, "7_job_processor.py", *arguments],
        [sys.executable, "-m", "bench.creator"],
        ROOT,
        "workers",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--send-ms", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--no-kue", action="store_true", help="no Kue side")
    parser.add_argument("--no-processes", action="store_true", help="no process-per-job side")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        kue = None if args.no_kue else stack.enter_context(node_packages(["kue@0.11.6"], KUE_DIR))
        url = stack.enter_context(bench_redis())
        port = int(redis.Redis.from_url(url).connection_pool.connection_kwargs["port"])
        sides = [ours(args.concurrency)]
        if not args.no_processes:
            sides.append(ours(args.concurrency, processes=args.concurrency))
        if kue is not None:
            sides.append(Side("Kue 0.11.6", ["node", "processor.js"], ["node", "creator.js"], kue, "blpop"))
        ideal = args.concurrency * 1000 / args.send_ms
        print(f"{args.jobs} jobs, {args.concurrency} at once, each send {args.send_ms} ms (ideal {ideal:.0f} jobs/s)")
        print(f"{'round':<7}{'side':<26}{'end-to-end jobs/s':>19}{'peak tree MB':>14}")
        results: dict[str, list[dict]] = {side.name: [] for side in sides}
        for round_ in range(1, args.rounds + 1):
            order = sides if round_ % 2 else list(reversed(sides))
            for side in order:
                result = side.run(url, port, args.jobs, args.concurrency, args.send_ms)
                results[side.name].append(result)
                rate = result["jobs"] / result["total_s"]
                print(f"{round_:<7}{side.name:<26}{rate:>19.0f}{result['peak_mb']:>14.0f}", flush=True)
        medians = {
            name: (
                statistics.median(r["jobs"] / r["total_s"] for r in runs),
                statistics.median(r["peak_mb"] for r in runs),
            )
            for name, runs in results.items()
        }
        for name, (rate, mb) in medians.items():
            print(f"median {name:<26}{rate:>12.0f} jobs/s ({rate / ideal:.0%} of ideal){mb:>9.0f} MB")
        for name, (rate, mb) in medians.items():
            if name != "ours":
                print(
                    f"ours / {name}: {medians['ours'][0] / rate:.2f}x the rate; it takes "
                    f"{mb / medians['ours'][1]:.1f}x our memory"
                )
        if args.kills:
            print(f"\nOurs SIGKILLed {args.kills} times mid-run and started again:", flush=True)
            print(under_fire(url, args.jobs, args.concurrency, args.send_ms, args.kills))
    print(f"(loopback Redis; cpu count {os.cpu_count()}; {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
