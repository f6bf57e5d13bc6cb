"""The worker's log as operators read it: text or JSON lines, no partition tables at INFO, one ready line."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from connector.config import load_settings
from connector.logs import Throttle, setup


@pytest.fixture
def root_logging():
    """Set up the root logger as a worker does; put back pytest's handlers afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name in ("kafka", "httpx", "schema_registry"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_json_lines_carry_the_ids_as_fields(root_logging) -> None:
    out = io.StringIO()
    setup(load_settings(log_format="json"), stream=out)
    logging.getLogger("connector.results").warning(
        "command c-1 of order-42 FAILED: NOT_STARTED", extra={"ref": "order-42", "command_id": "c-1", "error_code": "NOT_STARTED"}
    )
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("connector.x").exception("it broke")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["level"] == "WARNING" and first["logger"] == "connector.results"
    assert first["message"] == "command c-1 of order-42 FAILED: NOT_STARTED"
    assert (first["ref"], first["command_id"], first["error_code"]) == ("order-42", "c-1", "NOT_STARTED")
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


def test_faust_partition_tables_and_service_steps_are_debug(root_logging) -> None:
    out = io.StringIO()
    setup(load_settings(log_format="text", log_level="INFO"), stream=out)
    logging.getLogger("aiokafka.consumer.subscription_state").info("Updated partition assignment: %s", {("t", 0), ("t", 1)})
    logging.getLogger("faust.transport.consumer").info("[^--Consumer]: Starting...")
    logging.getLogger("faust.tables.recovery").info("Highwater for active changelog partitions:\n+---+\n| t |")
    logging.getLogger("faust.worker").info("Ready")
    assert out.getvalue().splitlines()[0].endswith("INFO faust.worker: Ready") and len(out.getvalue().splitlines()) == 1

    debug = io.StringIO()
    setup(load_settings(log_level="DEBUG"), stream=debug)
    logging.getLogger("faust.transport.consumer").info("[^--Consumer]: Starting...")
    assert "DEBUG faust.transport.consumer: [^--Consumer]: Starting..." in debug.getvalue()


def test_throttle_lets_one_line_through_per_interval_and_counts_the_rest() -> None:
    now = [0.0]
    throttle = Throttle(60, clock=lambda: now[0])
    assert throttle.due("auth") == 0
    assert throttle.due("auth") is None and throttle.due("auth") is None
    assert throttle.due("other") == 0
    now[0] = 61
    assert throttle.due("auth") == 2 and throttle.due("auth") is None


@pytest.mark.kafka
def test_a_worker_logs_json_lines_and_one_ready_line(sandbox, connector_env, start_worker, tmp_path: Path) -> None:
    env = connector_env(sandbox, "chat-api-v2", log_format="json", log_level="INFO")
    start_worker(env)
    lines = _log_lines(tmp_path / "worker-0.log")
    ready = [line for line in lines if line["message"].startswith("ready: ")]
    assert len(ready) == 1, [line["message"] for line in lines]
    assert ready[0]["level"] == "INFO" and ready[0]["generation"] == "chat-api-v2" and ready[0]["tenant"] == "sandbox-tenant"
    assert ready[0]["web_port"] == int(env["CONNECTOR_WEB_PORT"]) and env["CONNECTOR_TOPIC_COMMANDS"] in ready[0]["topics"]
    assert not [line for line in lines if line["level"] == "INFO" and "\n" in line["message"]]  # no tables
    assert not [line for line in lines if line["message"].endswith("Starting...")]


def _log_lines(path: Path, wait_s: float = 10.0) -> list[dict]:
    """Every line of a JSON log, parsed (fails on a line that is not a JSON object); waits for the ready line."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        text = path.read_text()
        if '"ready: ' in text or time.monotonic() > deadline:
            return [json.loads(line) for line in text.splitlines() if line]
        time.sleep(0.2)
