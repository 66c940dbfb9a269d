"""Every flag of every command says what it does (the help lives on the config field, so a
renamed field keeps it; issue 25 found 28 of train's 47 flags without any)."""

from __future__ import annotations

import argparse

import pytest

from llava_star import cli


class ParserBuilt(Exception):
    """Raised instead of parsing: the test wants the parser, not a run."""


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_flag_has_help(command, monkeypatch):
    built: list[argparse.ArgumentParser] = []

    def capture(self, args=None, namespace=None):
        built.append(self)
        raise ParserBuilt

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(ParserBuilt):
        cli.main([command])
    silent = [
        action.option_strings or [action.dest]
        for action in built[0]._actions
        if not (action.help or "").strip() and action.help != argparse.SUPPRESS
    ]
    assert not silent, f"llava-star {command}: flags without help: {silent}"
