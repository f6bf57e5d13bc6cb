"""The libraries' floor under the command processor: a Faust agent that only consumes and produces.

    .venv/bin/python bench/faust_floor.py --topic T --count N [--produce 2] [--app-id A]

Run by bench/commands.py on the commands topic it preloaded (a group of its own, so the worker's
offsets are untouched). Like the worker, it runs on uvloop with acks=all, takes the records with
`stream.noack().events()` and acks each one; with `--produce 2` it also hands two records per
command to the app's producer (about the sizes of a changelog entry and a CommandResult), which
is what the worker writes per command. Nothing else: no decoding, no table, no 8x8 call.
Prints {"messages_per_s", "cpu_us_per_message"} as JSON, measured from the first record to the last.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import faust
import mode.loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--produce", type=int, default=2, help="records produced per record consumed")
    parser.add_argument("--app-id", default="faust-floor", help="consumer group; `<app-id>-out` (created by the caller) gets the records")
    parser.add_argument("--data-dir", default="/tmp/faust-floor")
    args = parser.parse_args()

    mode.loop.use("uvloop")
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        datadir=args.data_dir,
        web_enabled=False,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    out = f"{args.app_id}-out"
    values = (b"c" * 600, b"r" * 120)  # a changelog entry, a CommandResult
    seen = {"count": 0, "started": 0.0, "cpu": 0.0}

    @app.agent(source)
    async def floor(stream: faust.StreamT) -> None:
        async for event in stream.noack().events():
            if seen["count"] == 0:
                seen["started"], seen["cpu"] = time.perf_counter(), time.process_time()
            seen["count"] += 1
            for n in range(args.produce):
                await app.producer.send(out, event.message.key, values[n % 2], None, None, None)
            event.ack()
            if seen["count"] == args.count:
                elapsed, cpu = time.perf_counter() - seen["started"], time.process_time() - seen["cpu"]
                figures = {"messages_per_s": round(args.count / elapsed, 1), "cpu_us_per_message": round(cpu / args.count * 1e6)}
                os.write(1, f"{json.dumps(figures)}\n".encode())  # the Faust worker redirects sys.stdout to its log
                os._exit(0)

    # As connector/runtime.py runs the worker: root logger at WARNING (`app.main()` would leave it at
    # DEBUG, and aiokafka would then build a log record for every record it sends).
    logging.basicConfig(level=logging.WARNING)
    faust.Worker(app, loglevel="WARNING", logging_config=None, override_logging=False).execute_from_commandline()


if __name__ == "__main__":
    main()
