"""`lso eval`: per-image metrics for LSO, bicubic and GSA, sources, band-wise errors, cross-scale, no silent crop."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lso import LSO, LSOConfig, save_checkpoint
from lso.errors import ArtifactError, InputError

LABELLED = {"psnr", "sam", "ergas_true_ratio", "ergas_paper_r4", "ssim"}


@pytest.fixture()
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(LSO(LSOConfig.tiny()), tmp_path / "tiny.safetensors")


@pytest.fixture(scope="module")
def gt64() -> np.ndarray:
    from lso.data import synthetic_scene

    return synthetic_scene(7, 64)  # [31, 64, 64] float32 in [0, 1]


def _write_h5(path, gt: np.ndarray, rgb: np.ndarray, lr: np.ndarray | None = None):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f["GT"] = gt[None].astype(np.float32)
        f["RGB"] = rgb[None].astype(np.float32)
        if lr is not None:
            f["LRHSI"] = lr[None].astype(np.float32)
    return path


def _rgb_of(gt: np.ndarray) -> np.ndarray:
    from lso.data.srf import hsi_to_msi

    return np.asarray(hsi_to_msi(gt), dtype=np.float32)


def test_eval_synthetic_writes_report_and_png(tmp_path, tiny_ckpt):
    from lso.cli import main

    out = tmp_path / "ev"
    rc = main(["eval", "--checkpoint", str(tiny_ckpt), "--size", "48", "-n", "1", "--out", str(out), "--no-progress",
               "--ratio", "4"])
    assert rc == 0
    report = json.loads((out / "eval_x4.json").read_text())
    assert report["scenes"] == 1
    assert report["sources"]["msi_from"] == "gt" and report["sources"]["lr_from"] == "gt"
    assert report["clamped"] is True and "clamped to [0, 1]" in report["clamp_note"]
    row = report["per_image"][0]
    for method in ("bicubic", "gsa", "lso"):
        assert set(row[method]) == LABELLED  # never a bare "ergas"
        assert set(report["summary"][method]) == LABELLED
    # the classical baseline beats bicubic on these scenes (an untrained tiny LSO need not)
    assert row["gsa"]["psnr"] > row["bicubic"]["psnr"]
    assert (out / f"{row['scene']}_x4.png").stat().st_size > 1000
    assert (out / "eval_x4_bandwise.png").stat().st_size > 1000
    md = (out / "eval_x4.md").read_text()
    assert "| gsa |" in md and "ERGAS (true r)" in md and "ERGAS (paper, r=4)" in md
    assert "GT x SRF" in md and "clamped to [0, 1]" in md


def test_bandwise_has_31_entries_per_method(tmp_path, tiny_ckpt, gt64):
    from lso.benchmarks.evaluation import EvalConfig, evaluate_set
    from lso.data.srf import WAVELENGTHS_NM
    from lso.metrics import band_errors

    path = _write_h5(tmp_path / "s.h5", gt64[:, :32, :32], _rgb_of(gt64[:, :32, :32]))
    report = evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(path), out=str(tmp_path / "o"), png=False,
                                     save_fused=True), progress=False)
    bandwise = report["bandwise"]
    assert bandwise["wavelengths_nm"] == [int(v) for v in WAVELENGTHS_NM]
    assert set(bandwise["methods"]) == {"bicubic", "gsa", "lso"}
    for errs in bandwise["methods"].values():
        assert len(errs["psnr"]) == len(errs["rmse"]) == 31
    # one scene: the mean of the band PSNRs is the image PSNR, and the figures are the LSO output's
    fused = np.load(tmp_path / "o" / f"{report['per_image'][0]['scene']}_x4_lso.npz")["hr_hsi"]
    expected = band_errors(gt64[:, :32, :32], fused)
    np.testing.assert_allclose(bandwise["methods"]["lso"]["rmse"], expected["rmse"], rtol=1e-12)
    assert np.mean(bandwise["methods"]["lso"]["psnr"]) == pytest.approx(report["summary"]["lso"]["psnr"]["mean"])


def test_eval_on_h5(tmp_path, tiny_ckpt):
    h5py = pytest.importorskip("h5py")
    from lso.benchmarks.evaluation import EvalConfig, evaluate_set

    rng = np.random.default_rng(0)
    path = tmp_path / "test.h5"
    with h5py.File(path, "w") as f:
        f["GT"] = rng.random((2, 31, 40, 40), dtype=np.float32)
        f["RGB"] = rng.random((2, 3, 40, 40), dtype=np.float32)
    report = evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(path), ratio=8, out=str(tmp_path / "o"),
                                     png=False), progress=False)
    assert report["scenes"] == 2 and report["ratio"] == 8
    assert report["per_image"][0]["size"] == [40, 40]
    assert report["sources"]["msi_from"] == "file" and "RGB" in report["sources"]["hr_msi"]


def test_h5_files_differing_only_in_rgb_give_different_metrics(tmp_path, tiny_ckpt, gt64):
    """The authors' protocol: the file's RGB is the HR-MSI (only the LR-HSI is regenerated from GT)."""
    from lso.benchmarks.evaluation import EvalConfig, evaluate_set

    gt = gt64[:, :32, :32]
    rgb = _rgb_of(gt)
    a = _write_h5(tmp_path / "a.h5", gt, rgb)
    b = _write_h5(tmp_path / "b.h5", gt, rgb**0.6)  # not affine: GSA is invariant to a gain and offset

    def run(path, **kw):
        out = tmp_path / (path.stem + "_" + kw.get("msi_from", "default"))
        return evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(path), out=str(out), png=False, **kw),
                            progress=False)

    ra, rb = run(a), run(b)
    assert ra["summary"]["lso"]["psnr"]["mean"] != pytest.approx(rb["summary"]["lso"]["psnr"]["mean"], abs=1e-6)
    assert ra["summary"]["gsa"]["psnr"]["mean"] != pytest.approx(rb["summary"]["gsa"]["psnr"]["mean"], abs=1e-6)
    assert ra["summary"]["bicubic"] == rb["summary"]["bicubic"]  # the LR-HSI is the same: regenerated from GT
    # --msi-from gt ignores the file's RGB: both files then give the same figures, and the report says so
    ga, gb = run(a, msi_from="gt"), run(b, msi_from="gt")
    assert ga["summary"] == gb["summary"]
    assert ga["sources"]["msi_from"] == "gt" and ra["sources"]["msi_from"] == "file"
    md = (tmp_path / "a_default" / "eval_x4.md").read_text()
    assert "the file's RGB" in md and "`--lr-from gt`" in md


@pytest.mark.parametrize("size, options", [(32, ["--lr-from", "gt"]), (32, ["--lr-from", "file"]),
                                           (36, ["--ratio", "8", "--crop"])])
def test_eval_and_infer_give_the_same_lso_output(tmp_path, tiny_ckpt, gt64, size, options):
    """The same file and options: the same LSO output (cropped alike with --crop)."""
    from lso.cli import main

    gt = gt64[:, :size, :size]
    lr_file = np.random.default_rng(1).random((31, 8, 8), dtype=np.float32)  # another protocol's LRHSI (x4)
    path = _write_h5(tmp_path / "scene.h5", gt, np.clip(_rgb_of(gt) * 0.9 + 0.05, 0, 1), lr_file)
    assert main(["eval", "--checkpoint", str(tiny_ckpt), "--data", str(path), "--out", str(tmp_path / "ev"),
                 *options, "--no-png", "--save-fused", "--no-progress"]) == 0
    assert main(["infer", str(tiny_ckpt), str(path), "-o", str(tmp_path / "inf.npz"), *options,
                 "--no-preview", "--no-progress"]) == 0
    report = json.loads((tmp_path / "ev" / f"eval_x{_ratio_of(options)}.json").read_text())
    from_eval = np.load(tmp_path / "ev" / f"scene_0_x{report['ratio']}_lso.npz")["hr_hsi"]
    from_infer = np.load(tmp_path / "inf.npz")["hr_hsi"].reshape(from_eval.shape)
    assert from_eval.shape == (31, 32, 32)
    np.testing.assert_allclose(from_eval, from_infer, rtol=0, atol=1e-5)
    assert report["sources"]["lr_from"] == (options[1] if options[0] == "--lr-from" else "gt")
    assert report["sources"]["msi_from"] == "file"


def _ratio_of(options: list[str]) -> int:
    return int(options[options.index("--ratio") + 1]) if "--ratio" in options else 4


def test_lr_from_file_takes_the_files_ratio(tmp_path, tiny_ckpt, gt64):
    from lso.benchmarks.evaluation import EvalConfig, evaluate_set

    gt = gt64[:, :32, :32]
    path = _write_h5(tmp_path / "s.h5", gt, _rgb_of(gt), np.full((31, 4, 4), 0.5, np.float32))
    report = evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(path), lr_from="file", out=str(tmp_path / "o"),
                                     png=False), progress=False)
    assert report["ratio"] == 8 and "LRHSI" in report["sources"]["lr_hsi"]
    with pytest.raises(InputError, match="--ratio"):
        evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(path), lr_from="file", ratio=4,
                                out=str(tmp_path / "o"), png=False), progress=False)
    with pytest.raises(InputError, match="--msi-from gt"):
        evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), msi_from="file", size=32, n=1, out=str(tmp_path / "o")),
                     progress=False)


def test_no_silent_crop(tmp_path, tiny_ckpt, gt64):
    from lso.benchmarks.evaluation import EvalConfig, evaluate_set
    from lso.cli import main

    gt = gt64[:, :36, :36]
    path = _write_h5(tmp_path / "s36.h5", gt, _rgb_of(gt))
    with pytest.raises(InputError,
                       match=r"GT 36x36 is not a multiple of the ratio 8; the top-left 32x32 would fit.*--crop"):
        evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(path), ratio=8, out=str(tmp_path / "o"),
                                png=False), progress=False)
    assert main(["eval", "--checkpoint", str(tiny_ckpt), "--data", str(path), "--ratio", "8", "--out",
                 str(tmp_path / "o"), "--no-png", "--no-progress"]) != 0  # the CLI exits non-zero, no traceback
    report = evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(path), ratio=8, crop=True,
                                     out=str(tmp_path / "o"), png=False), progress=False)
    row = report["per_image"][0]
    assert row["size"] == [32, 32] and row["cropped_from"] == [36, 36]
    assert report["crop"]["allowed"] and report["crop"]["cropped_scenes"] == [row["scene"]]
    assert "cropped" in (tmp_path / "o" / "eval_x8.md").read_text()
    # the file's LRHSI: GT 34x34 and LRHSI 8x8 (x4, rounded down): the fitting pair is named
    gt34 = gt64[:, :34, :34]
    lr_path = _write_h5(tmp_path / "lr.h5", gt34, _rgb_of(gt34), np.full((31, 8, 8), 0.5, np.float32))
    with pytest.raises(InputError, match=r"GT 34x34 is not 4 x LRHSI 8x8; the top-left 32x32 \(with LRHSI 8x8\) "
                                         r"would fit.*--crop"):
        evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(lr_path), lr_from="file", out=str(tmp_path / "o"),
                                png=False), progress=False)
    report = evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(lr_path), lr_from="file", crop=True,
                                     out=str(tmp_path / "o"), png=False), progress=False)
    assert report["ratio"] == 4 and report["per_image"][0]["size"] == [32, 32]
    assert report["per_image"][0]["cropped_from"] == [34, 34]
    # a size that fits is never cropped, and says so
    report = evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(path), ratio=4, crop=True,
                                     out=str(tmp_path / "o"), png=False), progress=False)
    assert "cropped_from" not in report["per_image"][0] and report["crop"]["cropped_scenes"] == []


def test_cross_scale_writes_one_table(tmp_path, gt64):
    from lso.cli import main

    torch.manual_seed(0)
    ckpt = save_checkpoint(LSO(LSOConfig.tiny()), tmp_path / "x8.safetensors", ratio=8)  # trained "at x8"
    path = _write_h5(tmp_path / "s.h5", gt64, _rgb_of(gt64))
    out = tmp_path / "cs"
    assert main(["eval", "--cross-scale", "--ratios", "4,8,16", "--checkpoint", str(ckpt), "--data", str(path),
                 "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "cross_scale.json").read_text())
    assert report["ratios"] == [4, 8, 16] and report["fixed_ratio"] == 8
    assert "metadata 'ratio'" in report["fixed_ratio_source"] and report["notes"] == []
    for r in ("4", "8", "16"):
        res = report["results"][r]
        assert res["sizes"] == [[64, 64]] and res["cropped_from"] == []
        assert set(res["summary"]) == {"lso_direct", "lso_fixed_ratio", "bicubic", "gsa"}
        assert all(set(s) == LABELLED for s in res["summary"].values())
        assert all(len(e["psnr"]) == 31 for e in res["bandwise"]["methods"].values())
    summ = {r: report["results"][r]["summary"] for r in ("4", "8", "16")}
    # at r = f the FFT resample changes nothing: both forms give the same output
    assert summ["8"]["lso_fixed_ratio"]["psnr"]["mean"] == pytest.approx(summ["8"]["lso_direct"]["psnr"]["mean"],
                                                                         abs=1e-3)
    # elsewhere the model sees other inputs; the baselines are the same LR-HSI in both forms
    assert summ["16"]["lso_fixed_ratio"]["psnr"]["mean"] != pytest.approx(summ["16"]["lso_direct"]["psnr"]["mean"],
                                                                          abs=1e-3)
    # ERGAS: the paper's (r = 4) is r/4 times the standard one
    g16 = summ["16"]["gsa"]
    assert g16["ergas_paper_r4"]["mean"] == pytest.approx(4 * g16["ergas_true_ratio"]["mean"], rel=1e-9)
    md = (out / "cross_scale.md").read_text()
    assert md.count("| x16 |") == 4 and "LSO (fixed-ratio f=8)" in md and "LSO (direct)" in md
    assert "ERGAS (true r)" in md and "ERGAS (paper, r=4)" in md and "clamped to [0, 1]" in md
    assert (out / "cross_scale_bandwise.png").stat().st_size > 1000


def test_cross_scale_crops_and_says_so(tmp_path, tiny_ckpt, gt64):
    """No training ratio recorded: f = 4 with a note; 44 px is cropped to 40 for r = 8, and the table says so."""
    from lso.benchmarks.evaluation import EvalConfig, evaluate_set

    gt = gt64[:, :44, :44]
    path = _write_h5(tmp_path / "s.h5", gt, _rgb_of(gt))
    report = evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(path), cross_scale=True, ratios=(4, 8),
                                     out=str(tmp_path / "o"), png=False), progress=False)
    assert report["fixed_ratio"] == 4 and "--fixed-ratio" in report["notes"][0]
    assert report["results"]["4"]["cropped_from"] == [] and report["results"]["4"]["sizes"] == [[44, 44]]
    assert report["results"]["8"]["sizes"] == [[40, 40]] and report["results"]["8"]["cropped_from"] == [[44, 44]]
    md = (tmp_path / "o" / "cross_scale.md").read_text()
    assert "40x40 (cropped from 44x44)" in md and "f = 4" in md
    override = evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), data=str(path), cross_scale=True, ratios=(4,),
                                       fixed_ratio=2, out=str(tmp_path / "o2"), png=False), progress=False)
    assert override["fixed_ratio"] == 2 and override["fixed_ratio_source"] == "--fixed-ratio"


def test_training_ratio_reads_official_sf(tmp_path, tiny_ckpt, monkeypatch):
    import lso.checkpoint as checkpoint
    from lso.benchmarks.evaluation import training_ratio

    assert training_ratio(str(tiny_ckpt))[0] is None
    state, _ = checkpoint.read_state_dict(tiny_ckpt)
    monkeypatch.setattr(checkpoint, "read_state_dict",
                        lambda path: (state, {"official_config": json.dumps({"sf": 8, "width": 16})}))
    assert training_ratio(str(tiny_ckpt)) == (8, "the checkpoint's saved option sf")


def test_runner_is_closed_when_evaluation_ends(tmp_path, monkeypatch):
    """A runner entered by _load_model is released at the end, also when the evaluation fails."""
    import lso.benchmarks.evaluation as evaluation
    from lso.baselines import bicubic_upsample

    events = []

    class FakeRunner:
        def fuse(self, hr, lr):
            if lr.shape[-1] * 4 != hr.shape[-1]:
                raise InputError("boom")
            return np.asarray(bicubic_upsample(lr, 4))

        def __exit__(self, *exc):
            events.append("closed")

    monkeypatch.setattr(evaluation, "_load_model", lambda *a, **k: (FakeRunner(), "fake.onnx"))
    cfg = evaluation.EvalConfig(checkpoint="fake.onnx", size=32, n=1, out=str(tmp_path / "o"), png=False)
    evaluation.evaluate_set(cfg, progress=False)
    assert events == ["closed"]
    with pytest.raises(InputError, match="boom"):
        evaluation.evaluate_set(evaluation.EvalConfig(checkpoint="fake.onnx", size=32, n=1, ratio=8,
                                                      out=str(tmp_path / "o"), png=False), progress=False)
    assert events == ["closed", "closed"]


def test_eval_without_checkpoint_or_bundle_is_clear(tmp_path, monkeypatch):
    import lso.weights as weights

    monkeypatch.setattr(weights, "DEMO_CHECKPOINT", "does_not_exist.safetensors")
    from lso.benchmarks.evaluation import EvalConfig, evaluate_set

    with pytest.raises(ArtifactError, match=r"demo checkpoint .* not installed.*\.pth\.tar"):
        evaluate_set(EvalConfig(out=str(tmp_path), size=32, n=1), progress=False)


def _recording_load(monkeypatch) -> list:
    """Record every runner ``lso.runtime.load`` makes in the evaluation (the real load does the work)."""
    from lso import runtime
    from lso.runtime import base

    made = []

    def recording(*args, **kwargs):
        made.append(base.load(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(runtime, "load", recording)
    return made


def test_runner_options_reach_the_runner(tmp_path, tiny_onnx, monkeypatch):
    pytest.importorskip("openvino", reason="openvino is not installed")
    from lso.benchmarks.evaluation import EvalConfig, evaluate_set

    made = _recording_load(monkeypatch)
    report = evaluate_set(EvalConfig(checkpoint=str(tiny_onnx), backend="openvino", threads=1, size=32, n=1,
                                     out=str(tmp_path / "o"), png=False, runner_options={"shapes": "dynamic"}),
                          progress=False)
    (runner,) = made
    assert runner.backend == "openvino" and runner.settings["shapes"] == "dynamic" and not runner.is_active
    assert report["scenes"] == 1


def test_runner_options_run_a_checkpoint_in_a_torch_runner(tmp_path, tiny_ckpt, monkeypatch):
    from lso.benchmarks.evaluation import EvalConfig, evaluate_set

    def run(**kw):
        return evaluate_set(EvalConfig(checkpoint=str(tiny_ckpt), size=32, n=1, out=str(tmp_path / "o"), png=False,
                                       **kw), progress=False)

    made = _recording_load(monkeypatch)
    plain = run()
    assert made == []  # without options a checkpoint runs as a plain module, not through lso.runtime.load
    with_options = run(runner_options={"tf32": False})
    assert [r.backend for r in made] == ["torch"]
    assert with_options["per_image"][0]["lso"]["psnr"] == pytest.approx(plain["per_image"][0]["lso"]["psnr"],
                                                                          abs=1e-4)
    with pytest.raises(InputError, match="torch backend takes no option 'cuda_graph'.*tensorrt"):
        run(runner_options={"cuda_graph": True})
    with pytest.raises(InputError, match="use --threads instead"):
        run(runner_options={"threads": 2})


def test_a_graph_gets_threads_and_backend_torch_refuses_it(tmp_path, tiny_onnx, monkeypatch):
    """An ``.onnx`` without --backend runs on ONNX Runtime with --threads; --backend torch names the right backend."""
    from lso import runtime
    from lso.benchmarks.evaluation import EvalConfig, evaluate_set
    from lso.runtime import base

    calls = []

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return base.load(*args, **kwargs)

    monkeypatch.setattr(runtime, "load", recording)
    evaluate_set(EvalConfig(checkpoint=str(tiny_onnx), threads=1, size=32, n=1, out=str(tmp_path / "o"),
                            png=False), progress=False)
    (kwargs,) = calls
    assert kwargs["threads"] == 1 and kwargs["backend"] is None  # the suffix picks ONNX Runtime
    with pytest.raises(InputError, match="torch backend runs PyTorch checkpoints.*name onnxruntime"):
        evaluate_set(EvalConfig(checkpoint=str(tiny_onnx), backend="torch", size=32, n=1,
                                out=str(tmp_path / "p"), png=False), progress=False)


def test_one_scene_shows_its_value_without_a_spread():
    from lso.benchmarks.evaluation import _fmt

    stat = {"mean": 41.23456, "std": 0.0}
    assert _fmt(stat, "psnr", 1) == "41.235"  # "± 0.000" would claim a spread one scene cannot have
    assert _fmt({"mean": 0.9, "std": 0.01}, "ssim", 3) == "0.9000 ± 0.0100"
