"""Kafka <-> 8x8 Contact Center chat connector."""

from importlib.metadata import version

__version__ = version("kafka-8x8-connector")  # pyproject.toml's, the one version source
