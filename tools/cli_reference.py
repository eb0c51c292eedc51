"""Write docs/cli.md, the reference of every command-line option, from the scripts' own parsers.

  python tools/cli_reference.py            # rewrites docs/cli.md
  python tools/cli_reference.py --check    # exit 1 if docs/cli.md lacks an option a script has

Each script is run up to the moment it parses its arguments; its parser is taken there, so the
reference lists exactly the options, defaults and help texts the scripts accept.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import runpy
import sys
from typing import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_MD = os.path.join(ROOT, "docs", "cli.md")
# In the order a user meets them; the benchmarks are listed after the tools.
SCRIPTS = ("train.py", "eval.py", "predict.py", "export_model.py", "infer.py", "serve.py",
           "tools/convert_weights.py", "tools/make_demo_data.py", "tools/compare_outputs.py",
           "tools/prepare_tipc_data.py",
           "benchmarks/speed.py", "benchmarks/compare_methods.py", "benchmarks/aggregation.py",
           "benchmarks/coreset.py", "benchmarks/coreset_aggregation.py", "benchmarks/coreset_distributed.py",
           "benchmarks/knn.py", "benchmarks/runtimes.py", "benchmarks/serve.py")
INTRO = """# Command-line reference

Every option of every script, with its default. Generated from the scripts' own parsers by
`python tools/cli_reference.py` (run it again after changing an option; `tests/unit/test_docs.py`
fails when an option is missing here). `python SCRIPT -h` prints the same help.

Conventions shared by all scripts: bad input is one line on stderr (`error: ...`) and exit status 2;
Ctrl-C is `error: interrupted` and status 130. Numeric options are range-checked when parsed and
NaN / inf are refused. Boolean options written as `--name True|False` (the TIPC convention) also
accept 1/0 and yes/no.
"""

# What an option means where its --help says nothing, by (script, option); script None: any of the
# entry scripts that has it. Kept short; a help text in the script itself takes precedence.
NOTES = {
    (None, "--batch_size"): "images per batch",
    (None, "--seed"): "seeds the held-out split, the random projection, the coreset's first pick and "
                      "PaDiM's channel choice",
    (None, "--method"): "coreset and patchcore both mean PatchCore (coreset: the Anomaly.Paddle name); padim: PaDiM",
    (None, "--arch"): "ImageNet backbone",
    (None, "--model_dir"): "folder of <category>.pdparams, used with --category",
    (None, "--save_path"): "folder of results.csv / results.json, figures and (--save_maps) anomaly_maps.npz",
    (None, "--save_dir"): "folder to write model.pdmodel (or model.json), model.pdiparams and stats.npz to",
    (None, "--model_file"): "model.pdmodel (or model.json) written by export_model.py",
    (None, "--params_file"): "model.pdiparams written by export_model.py",
    (None, "--use_gpu"): "run the predictor and the kNN on the GPU (needs the CUDA build of Paddle)",
    (None, "--enable_mkldnn"): "oneDNN kernels on the CPU",
    (None, "--cpu_threads"): "CPU threads of the predictor, and (infer.py) of the memory-bank search's large "
                             "products (up to the machine's cores)",
    (None, "--precision"): "only fp32 is accepted (the memory-bank distances need it); fp16 / int8 are "
                           "refused in one line",
    (None, "--use_tensorrt"): "TensorRT subgraphs in fp32; needs --use_gpu True",
    (None, "--enable_benchmark"): "print per-stage ms per image, threads and peak memory, and save them "
                                  "as SAVE_PATH/benchmark.json",
}
MAIN_SCRIPTS = SCRIPTS[:5]


class _Captured(BaseException):
    """Raised from parse_args to stop the script with its parser in hand (not caught by run_cli)."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__()
        self.parser = parser


@contextlib.contextmanager
def _intercepted_parse_args() -> Iterator[None]:
    original = argparse.ArgumentParser.parse_args

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> argparse.Namespace:
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture   # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original   # type: ignore[method-assign]


def script_parser(script: str) -> argparse.ArgumentParser:
    """The argparse parser `script` (a path relative to the project root) builds."""
    path = os.path.join(ROOT, script)
    argv, sys.argv = sys.argv, [path]
    sys.path.insert(0, ROOT)
    try:
        with _intercepted_parse_args(), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(path, run_name="__main__")
    except _Captured as captured:
        return captured.parser
    finally:
        sys.argv = argv
        sys.path.remove(ROOT)
    raise RuntimeError(f"{script} did not parse any arguments")


def option_names(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string (and positional name) of the parser but -h/--help."""
    names = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        names += action.option_strings or [action.dest]
    return names


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "off (flag)"
    if action.default is None:
        return "—"
    value = action.default
    text = ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    text = re.sub(r"\s+", " ", text).replace("|", "\\|").strip()
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _meaning(script: str, action: argparse.Action) -> str:
    if action.help:
        return action.help
    for option in action.option_strings:
        note = NOTES.get((script, option)) or (NOTES.get((None, option)) if script in MAIN_SCRIPTS else None)
        if note:
            return note
    return ""


def script_section(script: str) -> str:
    parser = script_parser(script)
    description = (parser.description or "").strip()
    lines = [f"## {script}", "", "```text", description, "```", "",
             "| option | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = ", ".join(action.option_strings) or action.dest
        if action.choices:
            name += " {" + ",".join(str(c) for c in action.choices) + "}"
        elif action.metavar and action.option_strings:
            name += f" {action.metavar}"
        lines.append(f"| `{_cell(name)}` | {_default(action)} | {_cell(_meaning(script, action))} |")
    return "\n".join(lines) + "\n"


def reference() -> str:
    return INTRO + "\n" + "\n".join(script_section(script) for script in SCRIPTS)


def missing_options(text: str) -> list[str]:
    """'script: option' for every option of a script that `text` (docs/cli.md) does not name."""
    missing = []
    for script in SCRIPTS:
        parser = script_parser(script)
        section = text.split(f"## {script}\n", 1)[-1].split("\n## ", 1)[0] if f"## {script}\n" in text else ""
        # An alias is written after its option's first name: `--runtime, --backend ...`.
        missing += [f"{script}: {name}" for name in option_names(parser)
                    if f"`{name}" not in section and f", {name}" not in section]
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that docs/cli.md names every option")
    args = parser.parse_args()
    if args.check:
        with open(CLI_MD, encoding="utf-8") as f:
            missing = missing_options(f.read())
        for item in missing:
            print(f"docs/cli.md lacks {item}", file=sys.stderr)
        return 1 if missing else 0
    text = reference()
    tmp = CLI_MD + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, CLI_MD)
    print(f"wrote {CLI_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
