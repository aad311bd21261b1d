"""`ignite run --from-snapshot`'s fast path makes of a command line what the full
parser makes of it, and leaves everything else to the full path (cli/fastrun.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ignitevm.cli import fastrun

# What run_clone and starting_context read from the parsed arguments.
READ = ("image", "config", "name", "cpus", "memory", "size", "kernel_image", "kernel_args",
        "copy_files", "ssh", "volumes", "network_plugin", "ip", "mac", "interactive",
        "root", "log_level", "quiet", "ignite_config", "accel", "unpack_limit", "sandbox",
        "from_snapshot", "ports", "label", "debug_trace")


@pytest.mark.parametrize("words", [
    ["--from-snapshot", "snap"],
    ["--from-snapshot=snap", "-q"],
    ["-q", "-d", "--from-snapshot", "snap", "--name", "w2", "--sandbox=none"],
    ["--from-snapshot", "snap", "-n", "w2", "-p", "8081:80", "--ports=8082:81/udp",
     "-l", "a=b", "--label", "c=d"],
    ["--from-snapshot", "snap", "--network-plugin", "user", "--sandbox", "jail",
     "--root", "/r", "--log-level", "debug"],
])
def test_reads_what_the_full_parser_reads(words: list[str]) -> None:
    from ignitevm.cli.parser import build_parser, normalize

    ns = fastrun.parse(words)
    assert ns is not None
    argv = normalize(["run", *words])
    args = build_parser(argv).parse_args(argv)
    for attr in READ:
        assert getattr(ns, attr) == getattr(args, attr, None), attr


@pytest.mark.parametrize("words", [
    ["img", "--from-snapshot", "snap"],        # an image too: the full path's error
    ["--from-snapshot"],                       # no value
    ["--from-snapshot", "-q"],
    ["--from-snapshot", "snap", "--name", ""],
    ["--from-snapshot", "a", "--from-snapshot", "b"],
    ["--from-snapshot", "snap", "-q", "-q"],
    ["--from-snapshot", "snap", "--sandbox", "bad"],
    ["--from-snapshot", "snap", "--log-level", "loud"],
    ["--from-snapshot", "snap", "-i"],
    ["--from-snapshot", "snap", "--memory", "1GB"],   # refused by the full path
    ["--from-snapshot", "snap", "--help"],
    ["--from-snap", "snap"],                   # argparse's abbreviations
    ["--from-snapshot", "snap", "-p=80:80"],
    ["--from-snapshot", "snap", "-qd"],
    ["--name", "w2"],                          # no snapshot: an image run
])
def test_leaves_the_rest_to_the_full_path(words: list[str]) -> None:
    assert fastrun.parse(words) is None


def test_debugging_takes_the_full_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGNITE_DEBUG", "1")
    assert fastrun.parse(["--from-snapshot", "snap"]) is None


def test_bad_snapshot_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ignitevm.cli.main import main

    code = main(["run", "--from-snapshot", "nope", "--root", str(tmp_path / "root"),
                 "--sandbox=none"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: can't find snapshot") and "Traceback" not in err
