"""README.md is the front door: it must name every setting, topic default and both commands."""

from __future__ import annotations

from pathlib import Path

from connector.config import Settings, load_settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [name for name in Settings.model_fields if f"`CONNECTOR_{name.upper()}`" not in README]
    assert missing == []


def test_every_default_topic_is_described(monkeypatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("CONNECTOR_")]:
        monkeypatch.delenv(name)
    for topic in load_settings().topics().values():
        assert f"| `{topic}` |" in README


def test_the_two_commands_are_shown() -> None:
    assert "make dev" in README and "make test" in README
