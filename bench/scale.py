"""Commands/s with one worker and with two, on the same workload, side by side.

    .venv/bin/python bench/scale.py                 # 1,000 refs x 10 commands, 20 ms per 8x8 call
    .venv/bin/python bench/scale.py --refs 300      # a quick run

Each run is bench/commands.py with `--workers N` (its checks included: exactly one result per
command, order per ref, nothing repeated), the worker alone (no floor, no ceilings, no RSS run).
On this 2-core machine the point is that the sum does not collapse and the per-worker rate holds
while two workers, the sandbox and Kafka share the cores, not linear growth.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=1, help="1 then 2 workers, this many times (interleaved)")
    args = parser.parse_args()
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for workers in (1, 2):
            runs[workers].append(_run(workers, args))
            print(workers, json.dumps(runs[workers][-1]), file=sys.stderr)
    report = {}
    for workers, results in runs.items():
        rates = [r["commands_per_s"] for r in results]
        report[f"{workers}_worker{'s' if workers > 1 else ''}"] = {
            "commands_per_s": rates,
            "per_worker_commands_per_s": [round(rate / workers, 1) for rate in rates],
            "cpu_us_per_command": [r["cpu_us_per_command"] for r in results],
            "checks": [r["checks"] for r in results],
        }
    one = sum(report["1_worker"]["commands_per_s"]) / args.rounds
    two = sum(report["2_workers"]["commands_per_s"]) / args.rounds
    report["ratio_2_to_1"] = round(two / one, 2)
    print(json.dumps(report, indent=2))


def _run(workers: int, args: argparse.Namespace) -> dict:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "commands.py"), "--workers", str(workers), "--refs", str(args.refs),
         "--latency-ms", str(args.latency_ms), "--rss", "0", "--no-floor", "--ceilings", ""],
        capture_output=True, text=True, timeout=1200,
    )
    if run.returncode != 0:
        raise SystemExit(f"bench/commands.py --workers {workers} failed:\n{run.stderr[-3000:]}")
    worker = json.loads(run.stdout)["worker"]
    return {key: worker[key] for key in ("commands", "commands_per_s", "cpu_us_per_command", "results", "checks")}


if __name__ == "__main__":
    main()
