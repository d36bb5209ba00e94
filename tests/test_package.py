"""The package imports and `lso --help` works with only torch and numpy (optional deps hidden)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

HIDDEN = ["onnx", "onnxruntime", "onnxslim", "onnxconverter_common", "safetensors", "h5py", "scipy", "skimage",
          "colour", "matplotlib", "tqdm", "tensorrt", "tensorrt_lean", "cupy", "cuda", "ray", "PIL", "hypothesis"]

_BLOCKER = textwrap.dedent(
    """
    import sys, importlib.abc
    HIDDEN = set(%r)
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by test)")
            return None
    sys.meta_path.insert(0, Blocker())
    """
) % (HIDDEN,)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_import_and_help_with_only_torch_and_numpy():
    proc = _run(
        """
        import lso, lso.config, lso.model, lso.solver, lso.io_spec, lso.checkpoint, lso.metrics, lso.errors
        import lso.data, lso.cli, lso.export, lso.runtime, lso.calibration, lso.benchmarks
        from lso import LSO, LSOConfig, load_checkpoint
        for name in HIDDEN:
            assert name not in sys.modules, name
        import contextlib, io
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                lso.cli.main(["--help"])
            except SystemExit as e:
                assert e.code == 0
        assert "usage: lso" in buf.getvalue()
        for name in HIDDEN:
            assert name not in sys.modules, name
        print("OK")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def test_missing_optional_dependency_names_the_extra():
    proc = _run(
        """
        from lso.deps import require
        from lso.errors import MissingDependencyError
        try:
            require("onnxruntime")
        except MissingDependencyError as e:
            print(e)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "lso-deploy[onnx]" in proc.stdout


def test_python_dash_m_lso_help():
    proc = subprocess.run([sys.executable, "-m", "lso", "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "usage: lso" in proc.stdout


def test_subcommand_help_works_for_every_subcommand():
    from lso.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert "info" in sub.choices
    for name, p in sub.choices.items():
        text = p.format_help()
        assert text.startswith("usage: lso " + name)


def test_cli_error_is_one_line_and_nonzero(tmp_path, capsys):
    from lso.cli import main

    rc = main(["info", "--checkpoint", str(tmp_path / "missing.pth")])
    err = capsys.readouterr().err
    assert rc == 1 and "does not exist" in err and "Traceback" not in err
