"""Kafka <-> 8x8 Contact Center chat connector."""

__version__ = "0.1.0"
