"""High availability, measured: the cost of confirmed writes and the time to follow a failover.

Run:  .venv/bin/python -m bench.failover [--seconds 5] [--threads 8] [--faults 1]

Starts its own servers on free ports (a plain Redis, and a Sentinel group: a primary, two replicas,
three sentinels, down-after-milliseconds 1000), nothing else is touched.

1. Writes per second (`SET` of a fresh key through replication.Confirmation, one thread, then
   --threads threads): a plain Redis (no WAIT is sent), the group without confirmation
   (QUEUING_CONFIRM_REPLICAS=0: what Sentinel alone promises), the group with it (WAIT 2).
2. For each fault (SENTINEL FAILOVER, the primary SIGKILLed and restarted once Sentinel has
   promoted a replica, the primary SIGSTOPped for 5 s), with a client writing through the
   confirmation all along: seconds from the fault until Sentinel names the new primary, until the
   client (made before the fault) is on it, and until writes are confirmed again; acknowledged
   writes, and how many of them the new primary lacks (lost).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable

import redis

from queuing_system.embedded import EmbeddedRedis
from queuing_system.replication import Confirmation
from queuing_system.sentinel_group import Node, SentinelGroup
from queuing_system.settings import connect


def writes_per_second(client: redis.Redis, confirmation: Confirmation, seconds: float, threads: int) -> float:
    done = [0] * threads
    stop = time.monotonic() + seconds

    def write(slot: int) -> None:
        while time.monotonic() < stop:
            key = f"bench:{slot}:{done[slot]}"
            confirmation.write(client, lambda pipe, key=key: pipe.set(key, 1))
            done[slot] += 1

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / seconds


class Writer(threading.Thread):
    def __init__(self, client: redis.Redis, confirmation: Confirmation) -> None:
        super().__init__(daemon=True)
        self.client, self.confirmation = client, confirmation
        self.acknowledged: list[tuple[int, float]] = []
        self.refused = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        number = 0
        while not self.stopped.is_set():
            number += 1
            try:
                self.confirmation.write(self.client, lambda pipe, n=number: pipe.set(f"w:{n}", 1))
                self.acknowledged.append((number, time.monotonic()))
            except redis.exceptions.RedisError:
                self.refused += 1
                self.stopped.wait(0.02)


def until(check: Callable[[], object], timeout: float = 60) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError("not within the time allowed")
        time.sleep(0.01)
    return time.monotonic()


def port_of(client: redis.Redis) -> int | None:
    try:
        return int(client.config_get("port")["port"])
    except redis.exceptions.RedisError:
        return None


def fault_run(group: SentinelGroup, fault: str) -> dict[str, float]:
    primary = group.wait_until_settled(60)
    primary.client().flushdb()
    client = connect(group.url)
    writer = Writer(client, Confirmation.for_client(client))
    writer.start()
    until(lambda: len(writer.acknowledged) > 200)
    started = time.monotonic()
    if fault == "SENTINEL FAILOVER":
        group.failover()
    else:
        group.signal(primary, signal.SIGKILL if fault.startswith("SIGKILL") else signal.SIGSTOP)

    def new_primary() -> Node | None:
        try:
            node = group.primary()
        except Exception:
            return None
        return node if node is not primary else None

    announced = until(new_primary)
    new = group.primary()
    followed = until(lambda: port_of(client) == new.port)
    if fault.startswith("SIGKILL"):
        group.restart(primary)
    elif fault.startswith("SIGSTOP"):
        time.sleep(max(0.0, 5 - (time.monotonic() - started)))
        group.signal(primary, signal.SIGCONT)
    confirmed_again = until(lambda: any(at > announced for _, at in writer.acknowledged[-5:]))
    group.wait_until_settled(60)
    until(lambda: len(writer.acknowledged) > 0 and writer.acknowledged[-1][1] > time.monotonic() - 0.5)
    writer.stopped.set()
    writer.join()
    keys = [f"w:{number}" for number, _ in writer.acknowledged]
    check = new.client(timeout=10)
    present = sum(int(check.exists(*keys[start : start + 1000])) for start in range(0, len(keys), 1000))
    return {
        "announced": announced - started,
        "followed": followed - announced,
        "confirmed again": confirmed_again - started,
        "acknowledged": len(keys),
        "lost": len(keys) - present,
        "refused": writer.refused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--faults", type=int, default=1, help="times each fault is caused (default 1)")
    parser.add_argument("--only", help="only this fault (e.g. FAILOVER)")
    args = parser.parse_args()
    os.environ.pop("QUEUING_CONFIRM_REPLICAS", None)
    with EmbeddedRedis() as plain, SentinelGroup() as group:
        group_client = connect(group.url)
        setups = [
            ("plain Redis (no WAIT sent)", connect(plain.url), Confirmation(0)),
            ("group, unconfirmed (Sentinel alone)", group_client, Confirmation(0)),
            ("group, confirmed (WAIT 2)", group_client, Confirmation.for_client(group_client)),
        ]
        print(f"writes/s over {args.seconds:g} s        1 thread   {args.threads} threads")
        for name, client, confirmation in setups:
            one = writes_per_second(client, confirmation, args.seconds, 1)
            many = writes_per_second(client, confirmation, args.seconds, args.threads)
            print(f"  {name:36} {one:8.0f}   {many:8.0f}")
        print("\nfault (s from the fault)        announced  followed(after)  confirmed again  acknowledged  lost")
        for fault in ("SENTINEL FAILOVER", "SIGKILL, restarted", "SIGSTOP 5 s"):
            if args.only and args.only not in fault:
                continue
            runs = [fault_run(group, fault) for _ in range(args.faults)]

            def median(key: str, runs: list[dict[str, float]] = runs) -> float:
                return statistics.median(run[key] for run in runs)

            print(
                f"  {fault:30} {median('announced'):8.2f}   {median('followed'):8.2f}        "
                f"{median('confirmed again'):8.2f}      {sum(r['acknowledged'] for r in runs):8.0f}  "
                f"{sum(r['lost'] for r in runs):4.0f}"
            )


if __name__ == "__main__":
    main()
