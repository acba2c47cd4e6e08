"""The command line through Typer's runner, and the installed `guide` as a subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console
from typer.testing import CliRunner

from cli.common import DebugOpt, JsonOpt, guarded_command
from cli.main import app
from cli.show import show_eval, show_list
from tests.conftest import ROOT
from torchguide.errors import GuideError
from torchguide.registry import REGISTRIES

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_version_and_help() -> None:
    assert invoke("--version").stdout.startswith("guide ")
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("inspect-layer", "train-image", "train-text", "eval", "predict", "list", "config", "data"):
        assert command in result.stdout


def test_help_does_not_import_torch() -> None:
    code = ("import sys; from typer.testing import CliRunner; from cli.main import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_inspect_layer_json_and_table() -> None:
    result = invoke("inspect-layer", "conv2d", "in_channels=3", "out_channels=64", "kernel_size=3", "stride=1",
                    "padding=1", "--input-shape", "100,3,24,24", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outputs"][0]["shape"] == [100, 64, 24, 24]
    table = invoke("inspect-layer", "linear", "in_features=784", "out_features=10", "-i", "100,784")
    assert table.exit_code == 0 and table.stderr == ""  # the report is on stdout, plain when piped
    assert "output\toutput\t[100, 10]\tfloat32" in table.stdout.splitlines()


def test_errors_are_one_line_exit_2() -> None:
    result = invoke("inspect-layer", "conv2d", "in_channels=3", "out_channels=4", "kernel_size=3",
                    "--input-shape", "100,784")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: conv2d expects (N, C=3, H, W)")
    assert "Traceback" not in result.output
    result = invoke("inspect-layer", "conv3x")
    assert result.exit_code == 2 and "did you mean" in result.stderr


def test_list_kinds_and_entries() -> None:
    result = invoke("list", "--json")
    counts = json.loads(result.stdout)
    assert counts["layers"] > 100 and counts["optimizers"] > 20
    entries = json.loads(invoke("list", "losses", "--json").stdout)
    assert any(e["name"] == "custom_nll" for e in entries)
    assert invoke("list", "models").exit_code == 0
    bad = invoke("list", "modles")
    assert bad.exit_code == 2 and "choose from models" in bad.stderr


def test_list_pipes_one_entry_a_line() -> None:
    result = invoke("list", "transforms")
    assert result.exit_code == 0 and result.stderr == ""
    rows = [REGISTRIES["transforms"].describe(n) for n in REGISTRIES["transforms"].names()]
    # whole lines, tab-separated, nothing wrapped, boxed or eaten as markup (Union[int, float, ...] stays)
    assert result.stdout.splitlines() == [f"{r['name']}\t{r['signature']}\t{r['summary']}" for r in rows]
    assert "Union[int, float, collections.abc.Sequence[int]" in result.stdout
    kinds = invoke("list").stdout.splitlines()
    assert kinds == [f"{k}\t{len(r.names())}" for k, r in REGISTRIES.items()]


def test_list_filter() -> None:
    names = [line.split("\t")[0] for line in invoke("list", "optimizers", "ADAM").stdout.splitlines()]
    assert "adam" in names and "adamw" in names and all("adam" in n for n in names)
    entries = json.loads(invoke("list", "optimizers", "adam", "--json").stdout)
    assert [e["name"] for e in entries] == names
    pools = [e["name"] for e in json.loads(invoke("list", "layers", "maxpool", "--json").stdout)]
    assert "max_pool2d" in pools  # `_` and `-` are ignored, as in a config
    none = invoke("list", "losses", "nothing-like-this")
    assert none.exit_code == 0 and none.stdout == "" and "no losses match 'nothing-like-this'" in none.stderr
    assert json.loads(invoke("list", "losses", "nothing-like-this", "--json").stdout) == []


def test_list_on_a_terminal_keeps_code_text_whole() -> None:
    rows = [REGISTRIES["datasets"].describe("random_sequences")]
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=400)
    show_list({"datasets": rows}, console)
    drawn = console.file.getvalue()
    assert "random length in [min_len, max_len] over" in drawn and "┃ name" in drawn


def test_eval_report_keeps_class_names_whole() -> None:
    classes = ["[red]", "a[b]"]
    per_class = [{"class": c, "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2} for c in classes]
    result = {"checkpoint": "runs/[x]/best.pt", "data": "test split", "samples": 4, "loss": 0.1, "accuracy": 1.0,
              "per_class": per_class, "classes": classes, "confusion": [[2, 0], [0, 2]]}
    piped = Console(file=io.StringIO(), soft_wrap=True)
    show_eval(result, piped)
    lines = piped.file.getvalue().splitlines()
    assert lines[0] == "evaluation of runs/[x]/best.pt on test split" and "samples\t4" in lines
    assert "[red]\t1.000\t1.000\t1.000\t2" in lines and "\t[red]\ta[b]" in lines and "a[b]\t0\t2" in lines
    drawn = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=120)
    show_eval(result, drawn)
    assert "runs/[x]/best.pt" in drawn.file.getvalue() and "│ [red] " in drawn.file.getvalue()


def test_config_show_and_validate(tmp_path: Path) -> None:
    cfg = ROOT / "configs" / "image" / "digits.yaml"
    shown = invoke("config", "show", "--config", str(cfg), "optimizer.lr=3e-4")
    assert shown.exit_code == 0 and "lr: 0.0003" in shown.stdout
    as_json = json.loads(invoke("config", "show", "--config", str(cfg), "optimizer.lr=3e-4", "--json").stdout)
    assert as_json["optimizer"]["lr"] == 3e-4 and as_json["name"] == "digits"
    valid = invoke("config", "validate", "--config", str(cfg))
    assert valid.stdout.startswith(f"ok {cfg}: valid") and valid.stderr == ""
    assert invoke("config", "validate", "--config", str(cfg)).exit_code == 0
    bad = invoke("config", "validate", "--config", str(cfg), "train.epochs=0", "optimizer.name=adamm")
    assert bad.exit_code == 2 and bad.stdout == ""
    assert "2 config errors" in bad.stderr and "train.epochs" in bad.stderr and "did you mean adam" in bad.stderr
    found = json.loads(invoke("config", "validate", "--config", str(cfg), "train.epochs=0", "optimizer.name=adamm",
                              "--json").stdout)
    assert found["error"] == f"2 config errors in {cfg}" and found["exit_code"] == 2 and found["hint"] is None
    assert found["details"][0].startswith("train.epochs:") and "did you mean adam" in found["details"][1]


def test_training_command_reports_bad_config(tmp_path: Path) -> None:
    result = invoke("train-image", "--config", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    text_cfg = ROOT / "configs" / "text" / "reviews.yaml"
    result = invoke("train-image", "--config", str(text_cfg))
    assert result.exit_code == 2
    assert "data.train.name: text_csv is a text dataset; model.name: bilstm is a text model: run this config " \
        "with `guide train-text`" in result.stderr


def test_installed_guide_subprocess() -> None:
    guide = Path(sys.executable).parent / "guide"
    out = subprocess.run([str(guide), "inspect-layer", "linear", "in_features=784", "out_features=10",
                          "--input-shape", "100,784", "--json"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["outputs"][0]["shape"] == [100, 10]
    bad = subprocess.run([str(guide), "eval", "--checkpoint", "nope.pt"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: checkpoint nope.pt does not exist")


def guarded_demo() -> typer.Typer:
    """A one-command app whose command fails as asked: with a GuideError (caused by a KeyError) or a bug."""
    demo = typer.Typer()

    @demo.command()
    @guarded_command
    def fail(kind: str, as_json: JsonOpt = False, debug: DebugOpt = False, *, console: Console) -> None:
        console.print("started")
        if kind == "bug":
            raise ValueError("a bug")
        try:
            {}["root"]
        except KeyError as exc:
            raise GuideError("bad input", "fix it") from exc

    return demo


def test_guarded_command_turns_errors_into_one_line_and_an_exit_code(monkeypatch) -> None:
    monkeypatch.delenv("GUIDE_DEBUG", raising=False)
    demo = guarded_demo()
    result = runner.invoke(demo, ["guide"])
    assert result.exit_code == 2 and result.stderr == "started\nerror: bad input: fix it\n"
    result = runner.invoke(demo, ["bug"])
    assert result.exit_code == 1
    assert result.stderr == "started\ninternal error: ValueError: a bug (run again with --debug for the traceback)\n"
    debug = runner.invoke(demo, ["guide", "--debug"])  # the traceback, down to the cause
    assert debug.exit_code == 2 and "KeyError" in debug.stderr and "direct cause" in debug.stderr
    assert debug.stderr.endswith("error: bad input: fix it\n")
    shown = runner.invoke(demo, ["--help"])
    assert "--debug" in shown.stdout and "console" not in shown.stdout.lower()


def test_guarded_command_with_json_prints_the_error_object_on_stdout(monkeypatch) -> None:
    monkeypatch.delenv("GUIDE_DEBUG", raising=False)
    demo = guarded_demo()
    result = runner.invoke(demo, ["guide", "--json"])
    assert result.exit_code == 2 and result.stderr == "started\nerror: bad input: fix it\n"  # stderr as without
    assert json.loads(result.stdout) == {"error": "bad input", "hint": "fix it", "exit_code": 2}
    bug = runner.invoke(demo, ["bug", "--json"])
    assert bug.exit_code == 1 and json.loads(bug.stdout) == {
        "error": "internal error: ValueError: a bug", "hint": "run again with --debug for the traceback",
        "exit_code": 1}
    assert runner.invoke(demo, ["guide"]).stdout == ""


def test_usage_errors_with_json_print_the_error_object_too() -> None:
    result = invoke("config", "show", "--json")
    assert result.exit_code == 2 and result.stderr.startswith("error: missing option '--config'")
    assert json.loads(result.stdout) == {"error": "missing option '--config' / '-c'",
                                         "hint": "see `guide config show --help`", "exit_code": 2}
    assert invoke("config", "show").stdout == ""


def leaf_commands(group=None, path=()):
    """(path, click command) of every command of `guide`, through sub-groups."""
    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from leaf_commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_takes_json() -> None:
    for path, command in leaf_commands():
        assert "--json" in [o for p in command.params for o in p.opts], f"guide {' '.join(path)} has no --json"


def test_every_argument_and_option_is_described() -> None:
    for path, command in leaf_commands():
        for param in command.params:
            assert param.help, f"guide {' '.join(path)}: {param.name} has no help"


def test_help_shows_flags_bare_and_cuts_nothing() -> None:
    for path in [(), *(path for path, _ in leaf_commands()), ("config",), ("data",)]:
        result = invoke(*path, "--help")  # 80 columns: not a terminal
        assert result.exit_code == 0, path
        assert "<bool>" not in result.stdout and "…" not in result.stdout, f"guide {' '.join(path)} --help"
    assert "--install-completion" in invoke("--help").stdout


def run_guide(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`guide` from this checkout in a process of its own."""
    code = "from cli.main import app; app(prog_name='guide')"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=120)


NAMED_SHELL = {"SHELL": "/bin/bash", "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}  # typer's switch:
# the shell is named on the command line instead of found in the process tree


def test_show_and_install_completion(tmp_path: Path) -> None:
    out = run_guide("--show-completion", "bash", **NAMED_SHELL)
    assert out.returncode == 0, out.stderr
    assert "complete -o default -F _guide_completion guide" in out.stdout
    assert "_GUIDE_COMPLETE=complete_bash" in out.stdout
    installed = run_guide("--install-completion", "bash", HOME=str(tmp_path), **NAMED_SHELL)
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / ".bash_completions" / "guide.sh").read_text().strip() == out.stdout.strip()
    assert ".bash_completions/guide.sh" in (tmp_path / ".bashrc").read_text()


def test_completion_of_kinds_imports_no_torch() -> None:
    code = ("import sys; from typer.testing import CliRunner; from cli.main import app; "
            "env = {'_GUIDE_COMPLETE': 'complete_bash', 'COMP_WORDS': 'guide list op', 'COMP_CWORD': '2'}; "
            "r = CliRunner().invoke(app, [], env=env, prog_name='guide'); "
            "print(r.stdout.split(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "['optimizers'] False"


def test_completion_of_registry_names() -> None:
    def complete(words: str) -> list[str]:
        env = {"_GUIDE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
        return runner.invoke(app, [], env=env, prog_name="guide").stdout.split()

    assert complete("guide list ") == list(REGISTRIES)
    assert complete("guide inspect-layer conv") == ["conv1d", "conv2d", "conv3d", "conv_transpose1d",
                                                    "conv_transpose2d", "conv_transpose3d"]
    assert "adamw" in complete("guide list optimizers ada")
