"""How `reds` ends on a closed pipe: quietly, with the shell's exit code."""

from __future__ import annotations

from reds_tf import cli


def test_broken_pipe_ends_quietly(monkeypatch, capsys) -> None:
    def raise_pipe(_args):
        raise BrokenPipeError

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    sub = next(a for a in parser._actions if a.dest == "command")
    sub.choices["arduino"].set_defaults(func=raise_pipe)
    # keep the real stdout intact for pytest: main redirects the file descriptor
    monkeypatch.setattr(cli.os, "dup2", lambda *a: None)
    assert cli.main(["arduino", "somewhere"]) == 141
    assert "Traceback" not in capsys.readouterr().err
