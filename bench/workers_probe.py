"""What worker processes could give on this machine, measured before building them.

The issue names worker processes sharing the listener (``SO_REUSEPORT``) as
the lever for 8 connections, "measure before you take it on". This probe
measures its upper bound: N independent Powerstrip processes (default
options, no hooks), each on its own port, loaded at the same time by N wrk
processes with 8/N connections each, so that there is no listener sharing,
no summing of metrics and no other cost real workers would add. In the same
run, interleaved: one Powerstrip and socat with all 8 connections.

    python bench/workers_probe.py [--reps 3] [--duration 6] [--path /_ping]

Prints a table (req/s, × socat) and the machine's CPU use during each run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import tempfile
from pathlib import Path

import run  # bench/run.py: the relays, wrk and /proc figures of the main benchmark


def load(relays: list[run.Relay], procs: run.Procs, path: str, conns: int, seconds: float) -> tuple[float, float]:
    """(total req/s, machine CPU %) with ``conns`` connections split over ``relays``, all at once."""
    each = conns // len(relays)
    with concurrent.futures.ThreadPoolExecutor(len(relays)) as pool:
        results = list(pool.map(lambda r: run.wrk(procs, r.url + path, each, seconds), relays))
    if any(r["errors"] for r in results):
        raise run.BenchError(f"errors under load: {[r['errors'] for r in results]}")
    # Each wrk measured the whole machine over its run; the runs overlap: take the busiest.
    return sum(r["rps"] for r in results), max(r["cpu"]["machine"] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--path", default="/_ping")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    procs = run.new_procs()
    tmp = Path(tempfile.mkdtemp(prefix="psprobe-"))
    config = run.write_config(tmp / "empty.yml")
    try:
        socat = run.start_socat(procs)
        powerstrips = [
            run.start_powerstrip(procs, config, tag=f"probe{i}", explicit_limits=False, name=f"powerstrip{i}")
            for i in range(args.workers)
        ]
        setups = {
            "socat, 8 connections": [socat],
            "1 Powerstrip, 8 connections": powerstrips[:1],
            f"{args.workers} Powerstrip processes, {8 // args.workers} connections each": powerstrips,
        }
        for relays in setups.values():  # warm-up
            load(relays, procs, args.path, 8, 1.0)
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.reps):
            for name, relays in setups.items():
                rps, cpu = load(relays, procs, args.path, 8, args.duration)
                print(f"{name}: {rps:,.0f} req/s, machine {cpu:.0f}%", flush=True)
                if rps > best.get(name, (0.0, 0.0))[0]:
                    best[name] = (rps, cpu)
        base = best["socat, 8 connections"][0]
        print(f"\nGET {args.path}, best of {args.reps}, {args.duration:g}s each\n")
        print("| setup | req/s | × socat | machine busy |\n|---|---:|---:|---:|")
        for name, (rps, cpu) in best.items():
            print(f"| {name} | {rps:,.0f} | {rps / base:.2f}× | {cpu:.0f}% |")
    finally:
        procs.stop_all(10)


if __name__ == "__main__":
    main()
