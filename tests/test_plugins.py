"""Other packages add `muninet` commands through the `muninet.commands` entry points."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

import provisioning.cli as root


class FakeEntryPoint:
    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self._target = target

    def load(self) -> Any:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_plugin_commands_are_added_and_broken_ones_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @click.command()
    def hello() -> None:
        click.echo("hello from a plugin")

    entries = [FakeEntryPoint("hello", hello), FakeEntryPoint("broken", ImportError("no aiosmtpd"))]
    monkeypatch.setattr(
        root, "entry_points", lambda group: entries if group == root.PLUGIN_GROUP else []
    )
    try:
        broken = CliRunner().invoke(root.cli, ["broken"])
        assert "cannot load command 'broken': no aiosmtpd" in broken.stderr
        result = CliRunner().invoke(root.cli, ["hello"])
        assert result.exit_code == 0
        assert result.output == "hello from a plugin\n"
    finally:
        root.cli.commands.pop("hello", None)
