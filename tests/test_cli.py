"""The command-line programs: one dispatcher, every flag documented, errors as one line."""

import importlib
import os

import pytest

from keras_hourglass import cli
from tests.conftest import one_line_error


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_flag_has_a_help_text(command):
    module = importlib.import_module(cli.COMMANDS[command][0])
    parser = module.build_parser(f"keras-hourglass {command}")
    undocumented = [action.option_strings or action.dest for action in parser._actions
                    if action.dest != "help" and not (action.help or "").strip()]
    assert not undocumented, f"{command}: {undocumented}"


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_help_names_the_console_command(command, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main([command, "--help"])
    assert raised.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: keras-hourglass {command} ")


def test_the_dispatcher_lists_and_refuses(capsys):
    assert cli.main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert all(command in listing for command in cli.COMMANDS)
    assert "unknown command 'fit'" in one_line_error(cli.main, ["fit"], capsys)
    assert cli.main([]) == 2 and "usage: keras-hourglass [--version] COMMAND" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0 and capsys.readouterr().out.startswith("keras-hourglass 0.")


@pytest.mark.parametrize("argv", [[command, "--help"] for command in sorted(cli.COMMANDS)] + [["train", "--epochs"]])
def test_help_and_usage_errors_come_before_tensorflow(argv):
    """`--help` and argument errors answer without importing TensorFlow (fast, and without its log lines)."""
    import subprocess
    import sys

    script = ("import sys\nfrom keras_hourglass.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
              "    pass\nprint('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert result.stdout.strip().endswith("False"), result.stdout[-500:]
    assert "I0000" not in result.stderr and "oneDNN" not in result.stderr, result.stderr[-500:]
