"""The GPU session script (benchmarks/gpu/run.sh) rehearsed on the CPU, so that the one GPU run is right the first time.

The default test runs the whole script in its test-suite size (``--quick``: check a on the CPU with fp32 only, the
``train.py`` runs of checks b and c composed and config-checked, not trained) with CUDA hidden, and reads the
report. ``-m slow`` trains the tiny rehearsal through ``train.py``; ``-m gpu`` runs the real thing on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))

CUDA_CHECKS = ("exactness", "throughput", "chunked_head")
OUT_FILES = ("report.md", "report.json", "log.txt", "profile.md")


def run_script(tmp: Path, *args: str, hide_cuda: bool = True, timeout: int = 600) -> tuple[Path, dict]:
    """``bash benchmarks/gpu/run.sh OUT ARGS`` with its scratch folders under ``tmp``; returns OUT and report.json."""
    out = tmp / "out"
    env = {
        **os.environ,
        "GPU_CHECKS_WORK": str(tmp / "work"),
        "GPU_CHECKS_SITE": str(tmp / "site"),
        "GPU_WHEELS": str(tmp / "no-wheels"),  # the machine's own packages: nothing is installed
        "SIMPO_CACHE": os.environ.get("SIMPO_CACHE", str(Path.home() / ".cache" / "simpo")),  # the built tokenizer
        "PYTHON": sys.executable,
    }
    if hide_cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), str(out), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert (out / "report.json").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return run_script(tmp_path_factory.mktemp("gpu_quick"), "--quick")


@pytest.mark.slow  # the CPU rehearsal takes about a minute
def test_rehearsal_writes_the_report_files(quick):
    out, report = quick
    assert sorted(p.name for p in out.iterdir()) == sorted(OUT_FILES)  # at most a few files, no folders
    assert list(report["checks"]) == ["env", *CUDA_CHECKS]
    for key in ("started", "budget_s", "elapsed_s", "wheels", "checks"):
        assert key in report
    assert report["elapsed_s"] < report["budget_s"]


@pytest.mark.slow  # the CPU rehearsal takes about a minute
def test_environment_check_reports_versions_and_imports(quick):
    env = quick[1]["checks"]["env"]
    assert env["status"] == "pass", env
    versions = env["results"]["versions"]
    for dist in ("torch", "transformers", "lightning", "hydra-core", "omegaconf", "datasets", "llama-models"):
        assert versions[dist], dist
    assert set(env["results"]["imports"].values()) == {"ok"}
    assert env["results"]["tokenizer"]["vocab"] == 128256
    assert env["results"]["device"]["cuda"] is False


@pytest.mark.slow  # the CPU rehearsal takes about a minute
def test_cuda_checks_skip_without_cuda_after_a_clean_rehearsal(quick):
    out, report = quick
    markdown = (out / "report.md").read_text()
    for name in CUDA_CHECKS:
        check = report["checks"][name]
        assert check["status"] == "skipped: no CUDA", check
        assert check["message"].startswith("rehearsed on CPU"), check
        assert check["results"]["rehearsal_ok"] is True
        assert check["results"]["rehearsal_criteria_met"] is True
        assert check["timeout_s"] > 0 and check["seconds"] <= check["timeout_s"] + 5
        assert f"| {name} | skipped: no CUDA |" in markdown


@pytest.mark.slow  # the CPU rehearsal takes about a minute
def test_exactness_rehearsal_compares_against_float64(quick):
    results = quick[1]["checks"]["exactness"]["results"]
    assert results["reference"]["precision"] == "64-true"
    for name in ("fp32 chunked", "fp32 full logits", "FSDP2 fp32 chunked"):
        assert results[name]["ok"] and results[name]["loss_error"] <= 1e-4, (name, results[name])
    assert results["fp32 chunked vs full"]["loss_error"] <= 1e-5


@pytest.mark.slow  # the CPU rehearsal takes about a minute
def test_train_runs_are_composed_with_the_step_recorder(quick):
    checks = quick[1]["checks"]
    names = [r["name"] for r in checks["throughput"]["results"]["runs"]]
    assert names == ["sdpa-ckpt", "sdpa"]
    heads = {r["name"]: r["chunk_size"] for r in checks["chunked_head"]["results"]["runs"]}
    assert heads == {"sdpa-ckpt": 1024, "sdpa-ckpt-full-logits": None}
    for run in checks["throughput"]["results"]["runs"] + checks["chunked_head"]["results"]["runs"]:
        assert run["status"] == "composed" and "step_recorder" in run["callbacks"], run
        assert run["strategy"] == "simpo.fsdp.AtomicModelParallelStrategy"


def test_a_check_past_its_timeout_is_killed_and_reported(tmp_path):
    import argparse

    from checks import CHECKS
    from run_checks import run_check

    args = argparse.Namespace(work=tmp_path, quick=True)
    result = run_check(CHECKS[0], args, timeout=1.0, log_path=tmp_path / "log.txt")  # importing torch takes longer
    assert result["status"] == "timeout" and result["seconds"] < 30
    assert "stopped after 1 s" in result["message"]


def test_no_check_starts_without_time_left(tmp_path):
    from run_checks import main

    assert main([str(tmp_path / "out"), "--budget", "1", "--work", str(tmp_path / "work")]) == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {c["status"] for c in report["checks"].values()} == {"skipped: out of time budget"}


def test_mfu_counts_6n_plus_attention():
    from checks import flops_per_token

    # Llama 3.2 1B shape at 2048 tokens: 6 x 1.236e9 plus 12 x 16 layers x 32 heads x 64 x 2048
    assert flops_per_token(1_235_814_400, 16, 32, 64, 2048) == 6 * 1_235_814_400 + 12 * 16 * 32 * 64 * 2048


@pytest.mark.slow
def test_full_cpu_rehearsal_trains_through_train_py(tmp_path):
    """Every check at its CPU rehearsal size: check a with bf16-mixed too, b and c train a tiny Llama with FSDP2."""
    out, report = run_script(tmp_path, "--budget", "900", timeout=1200)
    for name in CUDA_CHECKS:
        assert report["checks"][name]["status"] == "skipped: no CUDA", report["checks"][name]
    runs = report["checks"]["throughput"]["results"]["runs"] + report["checks"]["chunked_head"]["results"]["runs"]
    for run in runs:
        assert run["status"] == "ok" and run["steps_measured"] >= 1 and run["tokens_per_sec"] > 0, run
    assert "| operator |" in (out / "profile.md").read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_checks_pass(tmp_path):
    """The GPU session itself: every check passes (the MFU goal included)."""
    _, report = run_script(tmp_path, hide_cuda=False, timeout=900)
    failed = {name: (c["status"], c["message"]) for name, c in report["checks"].items() if c["status"] != "pass"}
    assert not failed, failed
