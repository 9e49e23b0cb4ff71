"""Every sub-command answers --help (argparse formats help strings lazily, so test them all)."""

import pytest

from mmar.cli import COMMANDS, build_parser, main


def test_every_listed_command_is_registered():
    names = set(build_parser()._subparsers._group_actions[0].choices)
    assert {c.replace("_", "-") for c in COMMANDS} <= names


@pytest.mark.parametrize("command", [c.replace("_", "-") for c in COMMANDS])
def test_help_prints_and_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert f"usage: mmar {command}" in capsys.readouterr().out
