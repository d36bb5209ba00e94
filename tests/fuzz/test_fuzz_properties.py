"""Property-based tests (hypothesis) over every input surface: a result or one of our errors, nothing else.

The same targets as the coverage-guided run (``fuzz/targets.py``, ``fuzz/run_atheris.py``): readers fed
random and mutated files, the runners' input validation fed random shapes (huge ones included), dtypes
and NaN/Inf, and the CLI parser fed random argv. Bounded: a fixed number of examples per test, derandomized
(the same examples on every run), about a minute in all on a 2-core CPU.
"""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lso import LSOConfig  # noqa: E402
from lso.errors import InputError, LSOError  # noqa: E402

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
_spec = importlib.util.spec_from_file_location("lso_fuzz_targets", FUZZ / "targets.py")
targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(targets)

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def _fuzz_budget(monkeypatch):
    monkeypatch.setenv("LSO_MEMORY_BUDGET", targets.FUZZ_MEMORY_BUDGET)


def _seeds(target: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((FUZZ / "seeds" / target).glob("*"))]


# ------------------------------------------------------------------------------------------ readers
@FAST
@given(kind=st.integers(0, 255), body=st.binary(max_size=2048))
def test_readers_on_random_bytes(kind, body):
    targets.readers(bytes([kind]) + body)


@st.composite
def _mutated_seed(draw):
    """A valid file with a few bytes flipped, inserted or removed, or cut short."""
    data = bytearray(draw(st.sampled_from(_seeds("readers"))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate")))
        pos = min(draw(st.integers(1, len(data))), len(data) - 1)
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from((0, 0xFF, 0x7F, 0x80)))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and len(data) > 2:
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[max(pos, 1):]
    return bytes(data)


@settings(FAST, max_examples=150)
@given(data=_mutated_seed())
def test_readers_on_damaged_valid_files(data):
    targets.readers(data)


@pytest.mark.parametrize("name", sorted(p.name for p in (FUZZ / "seeds" / "readers").glob("*")))
def test_every_reader_seed_is_read(name):
    """The seeds are valid files: each must be read without error (else the fuzzing starts from nothing)."""
    data = (FUZZ / "seeds" / "readers" / name).read_bytes()
    suffix, reader = targets.READERS[data[0] % len(targets.READERS)]
    path = Path(targets._WORK) / f"seed{suffix}"
    path.write_bytes(data[1:])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name in ("pth", "safetensors"):  # partial state dicts (kept small): readable, but not a whole LSO
                with pytest.raises(LSOError, match="LSO state dict|fit|key"):
                    reader(path)
            else:
                reader(path)
    finally:
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ validation
_dims = st.one_of(st.integers(0, 40), st.sampled_from((10**6, 2**31, 2**40)))
_dtypes = st.sampled_from(("float32", "float16", "float64", ">f4", "int16", "uint8", "bool", "complex64", "object"))


def _make(shape, dtype, fill):
    n = int(np.prod(shape, dtype=object)) if shape else 1
    if n > 100_000 or max(shape, default=0) > 100_000:
        return np.broadcast_to(np.asarray(fill if dtype != "object" else None, dtype=dtype), shape)
    arr = np.full(shape, fill if dtype != "object" else None, dtype=dtype)
    return arr


@FAST
@given(hr_shape=st.lists(_dims, max_size=5), lr_shape=st.lists(_dims, max_size=5), hr_dtype=_dtypes, lr_dtype=_dtypes,
       fill=st.sampled_from((0.5, float("nan"), float("inf"), -1e30, 0.0)),
       budget=st.sampled_from((None, "1M", "64M", "1G")))
def test_validation_random_shapes_dtypes_values(hr_shape, lr_shape, hr_dtype, lr_dtype, fill, budget):
    from lso.runtime.validation import validate_inputs

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hr, lr = _make(tuple(hr_shape), hr_dtype, fill), _make(tuple(lr_shape), lr_dtype, fill)
    except (ValueError, TypeError, OverflowError):
        return  # numpy itself cannot make this array: not an input anyone can pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inputs = validate_inputs(hr, lr, n_msi_bands=3, n_bands=31, config=LSOConfig.tiny(), memory_budget=budget)
    except InputError:
        return
    b, c, h, w = inputs.output_shape
    assert c == 31 and h * w > 0 and b > 0


@settings(FAST, max_examples=20)
@given(h=st.integers(1, 8), w=st.integers(1, 8), r=st.integers(2, 5), batch=st.integers(1, 2),
       tile=st.sampled_from((None, 16, 17, 32)), budget=st.sampled_from((None, "3M", "30M")),
       channels_first_only=st.booleans())
def test_small_valid_scenes_fuse_or_are_refused_cleanly(h, w, r, batch, tile, budget, channels_first_only):
    """Any ratio and size: whole-image fusion and tiled fusion agree, or an InputError says why."""
    from lso.runtime.tiling import fuse_tiled

    rng = np.random.default_rng(h * 100 + w)
    hr = rng.random((batch, 3, h * r, w * r), dtype=np.float32)
    lr = rng.random((batch, 31, h, w), dtype=np.float32)
    if channels_first_only:
        hr, lr = hr[0], lr[0]
    runner = targets._tiny_runner()
    try:
        whole = runner.fuse(hr, lr)
        tiled = fuse_tiled(runner, hr, lr, tile=tile, memory_budget=budget)
    except InputError:
        return
    assert whole.shape == tiled.shape == ((batch,) if not channels_first_only else ()) + (31, h * r, w * r)
    assert np.isfinite(whole).all()
    assert np.abs(whole - tiled).max() <= 1e-5


@FAST
@given(data=st.binary(max_size=64))
def test_validation_target_bytes(data):
    targets.validation(data)


# ------------------------------------------------------------------------------------------ CLI
_argv_token = st.one_of(st.sampled_from(targets._VOCAB), st.text(max_size=12))


@settings(FAST, max_examples=200)
@given(argv=st.lists(_argv_token, max_size=10), infer_first=st.booleans())
def test_cli_parsing_random_argv(argv, infer_first):
    if infer_first:
        argv = ["infer", *argv]
    data = json.dumps(argv).encode()  # through the same checks as the fuzz target, with this exact argv
    del data
    import contextlib
    import io

    from lso import cli

    parser = cli.build_parser()
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            args = parser.parse_args(argv)
    except SystemExit:
        return
    if getattr(args, "command", None) == "infer":
        try:
            cli._infer_options(args).check()
        except InputError:
            pass


@FAST
@given(data=st.binary(max_size=64))
def test_cli_target_bytes(data):
    targets.cli(data)


# ------------------------------------------------------------------------------------------ small parsers
@FAST
@given(text=st.one_of(st.text(max_size=20), st.floats(allow_nan=True), st.integers()))
def test_memory_budget_parsing(text):
    from lso.memory import parse_bytes

    try:
        value = parse_bytes(text)
    except InputError:
        return
    assert isinstance(value, int) and 0 < value < 2**63


@FAST
@given(doc=st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=8) | st.integers(),
                        lambda children: st.lists(children, max_size=3)
                        | st.dictionaries(st.text(max_size=8), children, max_size=3), max_leaves=10),
       raw=st.binary(max_size=32), use_raw=st.booleans())
def test_sidecar_any_content(tmp_path_factory, doc, raw, use_raw):
    from lso.artifacts import read_sidecar, sidecar_path

    folder = tmp_path_factory.mktemp("side")
    artifact = folder / "a.onnx"
    artifact.write_bytes(b"x")
    sidecar_path(artifact).write_bytes(raw if use_raw else json.dumps(doc).encode())
    try:
        out = read_sidecar(artifact)
    except LSOError:
        return
    assert isinstance(out, dict)


@FAST
@given(h=st.integers(1, 3000), w=st.integers(1, 3000), tile=st.integers(1, 600), overlap=st.integers(0, 100),
       align=st.sampled_from((1, 16, 48)))
def test_tile_plan_partitions_any_scene(h, w, tile, overlap, align):
    from lso.runtime.tiling import plan_tiles

    tile, overlap = -(-tile // align) * align, -(-overlap // align) * align
    tiles = plan_tiles(h, w, tile=tile, overlap=overlap, align=align)
    covered = sum((t.core_row1 - t.core_row0) * (t.core_col1 - t.core_col0) for t in tiles)
    assert covered == h * w
    assert all(t.row0 % align == 0 and t.col0 % align == 0 and t.row0 <= t.core_row0 for t in tiles)
