"""benchmarks/gpu_check.py on a CPU: the step list, the no-GPU refusal (nothing written), its report helpers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lso.benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[2]


def test_dry_run_lists_every_step_within_eight_minutes():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run"], capture_output=True,
                         text=True, check=True).stdout
    names = [s.name for s in gpu_check.STEPS]
    assert names == ["environment", "tests", "torch_parity", "torch_latency", "stream_race", "tensorrt"]
    assert all(line.split()[0] in names for line in out.splitlines()[:-1])
    assert gpu_check.TOTAL_BUDGET_S <= 480 and "gpu_check.json" in out.splitlines()[-1]
    assert gpu_check.TARGETS == {"fp32_max_abs": 1e-4, "fp16_dpsnr_db": 0.05, "compiled_fp16_512_ms": 15.0,
                                 "trt_fp16_512_ms": 3.0}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path)]) == 3
    assert "no CUDA GPU" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert gpu_check.main(["--steps", "nope"]) == 2


def test_report_helpers():
    assert gpu_check._count("3 passed, 2 skipped, 1 deselected in 4.2s", "passed") == 3
    assert gpu_check._count("1 failed, 3 passed in 1s", "failed") == 1
    assert gpu_check._count("no tests ran in 0.1s", "passed") == 0
    report = {"seconds": 12.0, "steps": {
        "environment": {"status": "ok", "gpu": "NVIDIA H100", "compute_capability": "9.0", "torch": "2.11"},
        "torch_latency": {"status": "ok", "rows": [{"path": "compiled fp16", "batch": 1, "size": 512, "ms": 9.5,
                                                    "peak_mib": 900.0},
                                                   {"path": "eager fp32", "batch": 4, "size": 512,
                                                    "skipped": "out of time"}]}}}
    text = gpu_check.markdown(report)
    assert text.startswith("# GPU check on NVIDIA H100 (compute capability 9.0)")
    assert "| compiled fp16 | 1 | 512² | 9.50 | 900 |" in text and "| eager fp32 | 4 | 512² | out of time | - |" in text


def test_gpu_test_files_are_found_for_the_tests_step():
    files = [p for p in (REPO / "tests").rglob("test_*.py")
             if any(m in p.read_text(encoding="utf-8") for m in ("mark.gpu", "mark.trt"))]
    assert any(p.name == "test_torch_runner.py" for p in files) and any(p.name == "test_trt_runner.py" for p in files)


def test_readme_gpu_rows_say_not_run_until_a_gpu_check_is_committed():
    """Until benchmarks/results/gpu_check.json from real hardware exists, every status row about GPU paths
    says 'not run on a GPU'."""
    if (REPO / "benchmarks" / "results" / "gpu_check.json").exists():
        pytest.skip("a gpu_check.json from a GPU is committed: the rows may report it")
    text = (REPO / "README.md").read_text(encoding="utf-8")
    status = text[text.index("<!-- STATUS:START -->"):]
    rows = [ln for ln in status.splitlines() if ln.startswith("| ") and not ln.startswith("| part")]
    gpu_rows = [ln for ln in rows if any(w in ln for w in ("GPU", "CUDA", "TensorRT engine", "TrtRunner"))]
    assert len(gpu_rows) >= 3
    assert all("not run on a gpu" in ln.lower() for ln in gpu_rows), [ln[:80] for ln in gpu_rows]
