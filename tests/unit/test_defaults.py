"""Defaults have one home each: the runtimes' CPU threads in utils.config, Paddle's log level in utils.runtime."""
from __future__ import annotations

import os
import re

import pytest

from helpers import ROOT
from tools.cli_reference import script_parser
from utils.config import DEFAULT_CPU_THREADS
from utils.runtime import QUIET_PADDLE_LOGS, quiet_paddle_logs

# deploy/service/ repeats its own defaults for now (its settings module is being reworked elsewhere).
SOURCES = [path for path in sorted(ROOT.rglob("*.py"))
           if path.relative_to(ROOT).parts[0] not in ("tests", ".git", "output")
           and path.relative_to(ROOT).parts[:2] != ("deploy", "service")]
LITERAL_THREADS = re.compile(r"cpu_threads\s*(?::\s*int\s*)?=\s*\d|\"--cpu_threads\".*default=\d")


def repeated_defaults(path_text: list[tuple[str, str]]) -> list[str]:
    found = []
    for name, text in path_text:
        if LITERAL_THREADS.search(text):
            found.append(f"{name}: a literal cpu_threads default (use utils.config.DEFAULT_CPU_THREADS)")
        if "GLOG_minloglevel" in text and name != "utils/runtime.py":
            found.append(f"{name}: GLOG_minloglevel (use utils.runtime.quiet_paddle_logs)")
    return found


def test_defaults_are_not_repeated() -> None:
    assert repeated_defaults([(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in SOURCES]) == []


def test_the_repetition_check_sees_a_copy() -> None:
    assert repeated_defaults([("a.py", "    cpu_threads: int = 2\n"), ("b.py", 'os.environ["GLOG_minloglevel"] = "2"'),
                              ("c.py", 'parser.add_argument("--cpu_threads", type=int, default=4)')]) != []
    assert len(repeated_defaults([("a.py", "cpu_threads=args.cpu_threads, x = 2")])) == 0


@pytest.mark.parametrize("script", ["infer.py", "benchmarks/aggregation.py", "benchmarks/compare_methods.py"])
def test_scripts_take_the_one_thread_default(script) -> None:
    parser = script_parser(script)
    assert {a.dest: a.default for a in parser._actions}["cpu_threads"] == DEFAULT_CPU_THREADS


def test_engine_options_take_the_one_thread_default() -> None:
    from models.runtimes import RuntimeOptions

    assert RuntimeOptions().cpu_threads == DEFAULT_CPU_THREADS


def test_quiet_paddle_logs_keeps_the_users_level(monkeypatch) -> None:
    monkeypatch.delenv("GLOG_minloglevel", raising=False)
    quiet_paddle_logs()
    assert os.environ["GLOG_minloglevel"] == QUIET_PADDLE_LOGS["GLOG_minloglevel"]
    monkeypatch.setenv("GLOG_minloglevel", "0")
    quiet_paddle_logs()
    assert os.environ["GLOG_minloglevel"] == "0"
