"""The dispatcher: --help, --version, unknown commands and exit statuses."""
from conftest import run, tool


def test_version():
    r = run([tool("pixelmill"), "--version"])
    assert r.stdout.startswith("pixelmill ")


def test_help_lists_commands():
    r = run([tool("pixelmill"), "--help"])
    assert "Commands:" in r.stdout


def test_unknown_command_is_usage_error():
    r = run([tool("pixelmill"), "no-such-command"], check=False)
    assert r.returncode == 2
    assert "not a pixelmill command" in r.stderr


def test_no_arguments_is_usage_error():
    r = run([tool("pixelmill")], check=False)
    assert r.returncode == 2
