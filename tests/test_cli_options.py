"""One argument convention (lso.cli): flags map onto the options dataclasses by name, the CLI's defaults are the
dataclasses' own, and the python */*.py scripts are thin wrappers over the CLI's parser and error wrapper."""
from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from lso import cli

REPO = Path(__file__).resolve().parents[1]

# command -> (options dataclass "module:Class", the arguments that make it, flags handled without a field of that name)
OPTIONS = {
    "infer": ("lso.runtime.infer:InferOptions", ["m.onnx", "x.npz", "-o", "o.npz"], {"no_progress"}),
    "batch": ("lso.scaleout.batch:BatchOptions", ["m.onnx", "d", "-o", "o"], {"no_progress"}),
    "triton-repo": ("lso.scaleout.triton_repo:TritonRepoOptions", ["r"], {"preferred_batch_size"}),
    "calibrate": ("lso.calibration.run:CalibrateOptions", ["m.onnx", "--precision", "fp16"], set()),
    "eval": ("lso.benchmarks.evaluation:EvalConfig", [], {"no_progress"}),
    "train": ("lso.train:TrainConfig", [],
              {"config", "resume", "no_progress", *(f"model_{n}" for n, _ in cli._ARCH_OPTIONS)}),  # config -> model
    "serve": ("lso.scaleout.serve:ServeOptions", ["m.onnx"],
              {"max_request_mb", "max_pixels", "max_batch", "header_timeout_s", "body_timeout_s", "body_rate_mb_s",
               "keep_alive_s", "max_connections_per_client", "max_connections"}),  # -> limits, clients
}


def _class(spec: str) -> type:
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _subparser(name: str) -> argparse.ArgumentParser:
    return next(a for a in cli.build_parser()._actions if a.dest == "command").choices[name]


def _fields(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_every_flag_sets_the_field_of_its_name(command):
    spec, _, handled = OPTIONS[command]
    fields = {f.name for f in dataclasses.fields(_class(spec))}
    dests = {a.dest for a in _subparser(command)._actions if a.dest != "help"}
    assert not (dests - fields - handled), f"lso {command}: flags with no field of their name in {spec}"


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_defaults_are_the_options_dataclass_defaults(command):
    spec, argv, _ = OPTIONS[command]
    cls = _class(spec)
    args = cli.build_parser().parse_args([command, *argv])
    built = getattr(cli, f"_{command.replace('-', '_')}_options")(args)
    required = {f.name: getattr(built, f.name) for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    assert _fields(built) == _fields(cls(**required))


def test_options_from_args_takes_fields_by_name():
    @dataclasses.dataclass
    class Opts:
        a: int = 1
        b: str | None = "b"

    args = argparse.Namespace(a=5, b=None, other=3)
    assert cli.options_from_args(Opts, args) == Opts(5, None)
    assert cli.options_from_args(Opts, args, skip_none=True) == Opts(5, "b")
    assert cli.options_from_args(Opts, args, a=7) == Opts(7, None)


@pytest.mark.parametrize("script, command", [("export/to_onnx.py", "export"), ("export/build_engine.py", "build"),
                                             ("benchmarks/latency.py", "latency")])
def test_scripts_are_thin_wrappers_over_the_cli(script, command):
    """No argparse definition of their own: the parser is lso.cli's (same flags, help and defaults)."""
    tree = ast.parse((REPO / script).read_text())
    calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert not calls & {"add_argument", "ArgumentParser", "add_argument_group"}, script
    assert f'"{command}"' in (REPO / script).read_text() and "script_main" in (REPO / script).read_text()
    parser = cli.command_parser(command, f"python {script}")
    assert parser.prog == f"python {script}"
    if command in cli.LSO_COMMANDS:
        ours = {a.dest: (a.option_strings, a.default) for a in parser._actions if a.dest not in ("help", "verbose")}
        assert ours == {a.dest: (a.option_strings, a.default) for a in _subparser(command)._actions
                        if a.dest != "help"}


def test_one_error_wrapper(capsys):
    from lso.errors import InputError

    def fails(args):
        raise InputError("bad input")

    def missing(args):
        raise FileNotFoundError(2, "No such file or directory", "nope.npz")

    assert cli.run_command("to_onnx", fails, argparse.Namespace(verbose=0)) == 1
    assert capsys.readouterr().err.strip() == "to_onnx: error: bad input"
    assert cli.run_command("lso infer", missing, argparse.Namespace(verbose=0)) == 1
    err = capsys.readouterr().err
    assert err.startswith("lso infer: error: nope.npz") and "Traceback" not in err
    with pytest.raises(InputError):
        cli.run_command("x", fails, argparse.Namespace(verbose=1))


def test_no_command_parses_the_old_ways():
    """Argument mapping is written once: no __dataclass_fields__ filtering and no second options module."""
    text = (REPO / "src" / "lso" / "cli.py").read_text()
    assert "__dataclass_fields__" not in text
    assert not (REPO / "export" / "options.py").exists()


RUNNER_OPTION_COMMANDS = ("infer", "eval", "batch", "serve")


@pytest.mark.parametrize("command", RUNNER_OPTION_COMMANDS)
def test_runner_options_collect_into_the_options_object(command):
    _, argv, _ = OPTIONS[command]
    args = cli.build_parser().parse_args([command, *argv, "--runner-option", "precision=bf16",
                                          "--runner-option", "cuda_graph=true", "--runner-option", "max_graphs=4"])
    built = getattr(cli, f"_{command}_options")(args)
    assert built.runner_options == {"precision": "bf16", "cuda_graph": True, "max_graphs": 4}
    assert "--runner-option precision=bf16" in " ".join(_subparser(command).format_help().split())  # --backend's


# the keys each command sets with a flag of its own (refused by --runner-option), and one it passes on
@pytest.mark.parametrize("command, refused, passed", [
    ("infer", {"device", "threads", "backend", "config", "memory_budget"}, None),
    ("batch", {"device", "threads", "backend", "config", "memory_budget"}, None),
    ("serve", {"device", "threads", "backend", "config"}, "memory_budget"),  # serve has no --memory-budget
    ("eval", {"threads", "backend", "config"}, "device")])  # eval has no --device
def test_runner_option_refuses_the_keys_with_a_flag_of_their_own(command, refused, passed, capsys):
    _, argv, _ = OPTIONS[command]
    for key in refused:
        with pytest.raises(SystemExit) as exc:
            cli.build_parser().parse_args([command, *argv, "--runner-option", f"{key}=1"])
        assert exc.value.code == 2
        assert f"use --{key.replace('_', '-')} instead" in capsys.readouterr().err
    if passed:
        args = cli.build_parser().parse_args([command, *argv, "--runner-option", f"{passed}=x"])
        assert getattr(cli, f"_{command}_options")(args).runner_options == {passed: "x"}
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([command, *argv, "--runner-option", "a=1", "--runner-option", "a=2"])
    assert "--runner-option a given twice" in capsys.readouterr().err
