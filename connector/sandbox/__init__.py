"""A faithful local stand-in for 8x8's chat APIs (Chat API v2 and Chat Gateway v1), for development,
demos and CI: both REST APIs, a simulated contact center, signed webhooks, faults on demand."""

from connector.sandbox.config import FaultConfig, FaultRule, SandboxConfig
from connector.sandbox.server import RunningSandbox, Sandbox, run_in_thread, start_sandbox

__all__ = ["FaultConfig", "FaultRule", "RunningSandbox", "Sandbox", "SandboxConfig", "run_in_thread", "start_sandbox"]
