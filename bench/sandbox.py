"""Throughput of the 8x8 sandbox against a bare aiohttp handler, on one core each.

    .venv/bin/python bench/sandbox.py [--seconds 5] [--rounds 3] [--connections 64]

Each server runs in its own process pinned to CPU 0; the load comes from wrk (keep-alive) pinned
to CPU 1: one Chat API v2 create-conversation for every three send-message calls. Three runs:
the bare handler (answers 202 to everything), the sandbox with webhook delivery off (its channel's
webhook deleted: API work only), and the sandbox delivering every event, signed, to a sink.
The results are written to bench/RESULTS.md under "## Sandbox".
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
HEADING = "## Sandbox"
TENANT = "sandbox-tenant"

BARE_SERVER = """
import sys
from aiohttp import web
async def answer(request):
    await request.read()
    return web.json_response({"conversationId": "x", "timestamp": 0}, status=202)
app = web.Application()
app.router.add_route("*", "/{tail:.*}", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

SINK_SERVER = """
import sys
from aiohttp import web
async def answer(request):
    await request.read()
    return web.Response(status=200)
app = web.Application()
app.router.add_post("/hook", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

WRK_SCRIPT = """
local n = 0
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %(token)s"}
request = function()
  n = n + 1
  if n %% 4 == 1 then
    return wrk.format("POST", "%(base)s/conversations", headers, '{"channelId":"%(channel)s","customer":{"name":"Bench","connectorRef":"r'..n..'"}}')
  end
  return wrk.format("POST", "%(base)s/conversations/%(conversation)s/messages", headers, '{"text":"hello","authorType":"user"}')
end
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="alternate the runs this often; keep each one's best")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install -y wrk")

    load_before = os.getloadavg()[0]
    rounds = [(run_bare(args), run_sandbox(args, deliver=False), run_sandbox(args, deliver=True)) for _ in range(args.rounds)]
    # On a shared machine other work only ever slows a run down: the best of each is the least disturbed.
    bare, api_only, delivering = (max(runs, key=lambda result: result["rps"]) for runs in zip(*rounds))
    lines = [
        "                                          calls/s   vs bare   server CPU per call",
        f"bare aiohttp handler (202):              {bare['rps']:>9,.0f}             {bare['cpu_us']:>6.0f} us",
        f"sandbox, webhook delivery off:           {api_only['rps']:>9,.0f}   {api_only['rps'] / bare['rps']:>6.0%}    {api_only['cpu_us']:>6.0f} us"
        f"  (one core at this cost: {1e6 / api_only['cpu_us']:,.0f} calls/s)",
        f"sandbox, every event signed + delivered: {delivering['rps']:>9,.0f}   {delivering['rps'] / bare['rps']:>6.0%}    {delivering['cpu_us']:>6.0f} us"
        f"  ({delivering['delivered_per_s']:,.0f} webhooks/s delivered)",
    ]
    for result in (bare, api_only, delivering):
        if result["errors"]:
            lines.append(f"  note: {result['name']}: {result['errors']} non-2xx answers or socket errors")
    lines.append(f"load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("\n".join(lines))
    write_results(args, lines)


def run_bare(args: argparse.Namespace) -> dict:
    port = free_port()
    server = pinned([sys.executable, "-c", BARE_SERVER, str(port)], cpu=0)
    try:
        wait_port(port)
        result = wrk(args, f"http://127.0.0.1:{port}", server.pid, token="x", base="/vcc/us/chat/v2/tenant/t", channel="1", conversation="c")
        return {"name": "bare", **result}
    finally:
        stop(server)


def run_sandbox(args: argparse.Namespace, *, deliver: bool) -> dict:
    port, sink_port = free_port(), free_port()
    sink = pinned([sys.executable, "-c", SINK_SERVER, str(sink_port)], cpu=1)
    command = [
        sys.executable, "-m", "connector.sandbox", "--port", str(port),
        "--webhook-url", f"http://127.0.0.1:{sink_port}/hook", "--agents", "2", "--max-conversations", "200000",
    ]  # fmt: skip
    server = pinned(command, cpu=0)
    try:
        wait_port(port)
        wait_port(sink_port)
        url = f"http://127.0.0.1:{port}"
        info = httpx.get(f"{url}/_sandbox/info").json()
        basic = base64.b64encode(b"sandbox-api-key:sandbox-api-secret").decode()
        token = httpx.post(
            f"{url}/oauth/v2/token", headers={"Authorization": f"Basic {basic}"}, data={"grant_type": "client_credentials"}
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        base = f"/vcc/us/chat/v2/tenant/{TENANT}"
        channel = info["chat-api-v2"]["channels"][0]
        if not deliver:
            httpx.delete(f"{url}{base}/web-hooks/{info['chat-api-v2']['webhooks'][0]}", headers=auth).raise_for_status()
        conversation = httpx.post(
            f"{url}{base}/conversations", headers=auth, json={"channelId": channel, "customer": {"name": "Bench"}}
        ).json()["conversationId"]
        time.sleep(0.5)
        before = delivered(url)
        result = wrk(args, url, server.pid, token=token, base=base, channel=channel, conversation=conversation)
        result["delivered_per_s"] = (delivered(url) - before) / args.seconds
        return {"name": "sandbox with delivery" if deliver else "sandbox", **result}
    finally:
        stop(server)
        stop(sink)


def wrk(args: argparse.Namespace, url: str, server_pid: int, **values: str) -> dict:
    """Load `url` with wrk; answer calls/s, errors, and the server's CPU time per call."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % values)
    try:
        command = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "-s", script.name, url]
        cpu_before = cpu_seconds(server_pid)
        output = subprocess.run(pin(command, cpu=1), capture_output=True, text=True, check=True).stdout
        cpu = cpu_seconds(server_pid) - cpu_before
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    calls = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, re.findall(r"\d+", socket_errors.group(1)))) if socket_errors else 0)
    return {"rps": rps, "errors": errors, "cpu_us": cpu / calls * 1e6}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process `pid` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def delivered(url: str) -> int:
    """Webhook attempts answered 2xx so far (the delivery log's sequence counts all attempts)."""
    records = httpx.get(f"{url}/_sandbox/deliveries", timeout=30).json()
    return sum(1 for record in records if record["outcome"] == "delivered")


def write_results(args: argparse.Namespace, lines: list[str]) -> None:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "unknown CPU")
    section = "\n".join(
        [
            HEADING,
            "",
            f"`.venv/bin/python bench/sandbox.py --seconds {args.seconds} --rounds {args.rounds} --connections {args.connections}`"
            f" ({time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} cores; servers pinned to CPU 0, wrk to CPU 1;"
            " mix: 1 v2 create-conversation per 3 send-message calls, keep-alive; best of the alternated rounds)",
            "",
            "```",
            *lines,
            "```",
            "",
            "Webhook delivery is bound by RS256 signing (about 1.4 ms per signature on this machine):"
            " with delivery on, the signing of QUEUED events competes with the API for the one core."
            " The ratio to the bare handler is the figure to compare across machines; the absolute"
            " numbers depend on the machine and on what else runs on it (see the load average).",
            "",
            "",
        ]
    )
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def pin(command: list[str], *, cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if shutil.which("taskset") and (os.cpu_count() or 1) > cpu else command


def pinned(command: list[str], *, cpu: int) -> subprocess.Popen:
    return subprocess.Popen(pin(command, cpu=cpu), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


if __name__ == "__main__":
    main()
