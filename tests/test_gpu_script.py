"""The GPU session script (benchmarks/gpu/run.sh) rehearsed on the CPU, so that the one GPU run is right the first time.

The ``slow`` tests run the whole script in its test-suite size (``--quick``: check a on the CPU with fp32 only, the
``train.py`` runs of check b composed and config-checked, not trained, the in-process comparisons c to g training a
tiny Llama for 2 steps per variant, QLoRA rehearsed with LoRA) with CUDA hidden, and read the report; one more trains
the full rehearsal through ``train.py``. ``-m gpu`` runs the real thing on a GPU. The default tests are the runner's
own logic.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))

CUDA_CHECKS = (  # in the order they run: by value per second, the pytest re-run last
    "exactness",
    "flex_attention",
    "throughput",
    "layouts",
    "chunked_head",
    "dpo_reference",
    "qlora",
    "lora_vs_full",
    "qlora_test",
)
COMPARISONS = {  # check: its variants, in the order they run
    "layouts": ["padded", "shared_prompt_packed", "packed"],
    "chunked_head": ["chunked recompute", "chunked store", "full logits"],
    "dpo_reference": ["simpo", "dpo cached", "dpo model"],
    "lora_vs_full": ["full", "lora r16"],
}
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
    return run_script(tmp_path_factory.mktemp("gpu_quick"), "--quick", "--budget", "1200", "--timeout-scale", "3",
                      timeout=1500)  # fmt: skip


@pytest.mark.slow  # the CPU rehearsal takes about a minute
def test_rehearsal_writes_the_report_files(quick):
    out, report = quick
    assert sorted(p.name for p in out.iterdir()) == sorted(OUT_FILES)  # at most a few files, no folders
    assert list(report["checks"]) == ["env", *CUDA_CHECKS]
    for key in ("started", "budget_s", "elapsed_s", "wheels", "preflight", "checks"):
        assert key in report
    assert report["preflight"]["status"] == "ok" and "datasets" in report["preflight"]["imports"]
    assert all(check["expected_s"] > 0 for check in report["checks"].values())
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
def test_flex_attention_check_compares_the_packed_layout_against_the_dense_mask(quick):
    results = quick[1]["checks"]["flex_attention"]["results"]
    assert results["kernel"] == "sdpa" and results["pad_to_multiple_of"] == 128  # on the CPU: SDPA on both sides
    runs = results["runs"]
    assert [r["batch"] for r in runs] == [0, 1, 2] and {r["mode"] for r in runs} == {"fp32"}
    assert len({tuple(r["shape"]) for r in runs}) > 1  # several lengths: what makes FlexAttention compile again
    for run in runs:
        assert run["shape"][1] % 128 == 0 and run["shape"][0] < 4  # pairs share rows, lengths padded to 128
        assert run["ok"] and run["loss_error"] == 0 and run["grad_error"] == 0, run  # the same kernel: identical


@pytest.mark.slow  # the CPU rehearsal takes about a minute
def test_train_runs_are_composed_with_the_step_recorder(quick):
    runs = quick[1]["checks"]["throughput"]["results"]["runs"]
    assert [r["name"] for r in runs] == ["sdpa-ckpt", "sdpa"]
    for run in runs:
        assert run["status"] == "composed" and "step_recorder" in run["callbacks"], run
        assert run["strategy"] == "simpo.training.fsdp.AtomicModelParallelStrategy"


@pytest.mark.slow  # the CPU rehearsal takes a few minutes
def test_comparisons_train_every_variant_on_identical_weights(quick):
    checks = quick[1]["checks"]
    for name, variants in COMPARISONS.items():
        runs = checks[name]["results"]["runs"]
        assert [r["name"] for r in runs] == variants, name
        for run in runs:
            assert run["status"] == "ok" and run["steps_recorded"] == 2 and run["losses_finite"], run
            assert run["step_s"] > 0 and run["tokens_per_sec"] > 0, run
        assert "| variant |" in checks[name]["tables"]["runs"]
    first = {r["losses"][0] for name in ("layouts", "chunked_head") for r in checks[name]["results"]["runs"]}
    assert max(first) - min(first) <= 1e-4 * max(1.0, abs(min(first)))  # same weights and pairs, fp32: one loss
    reference = {r["name"]: r for r in checks["dpo_reference"]["results"]["runs"]}
    for name in ("dpo cached", "dpo model"):  # policy == reference at step 0: -log sigmoid(0) = ln 2
        assert reference[name]["losses"][0] == pytest.approx(math.log(2), abs=1e-5), reference[name]
    assert reference["dpo cached"]["reference_pass_s"] > 0 and reference["dpo model"]["reference_pass_s"] is None
    lora = {r["name"]: r for r in checks["lora_vs_full"]["results"]["runs"]}
    assert lora["lora r16"]["trainable_params"] < 0.05 * lora["full"]["trainable_params"]


@pytest.mark.slow  # the CPU rehearsal takes a few minutes
def test_qlora_check_is_refused_on_cpu_and_rehearsed_with_lora(quick):
    check = quick[1]["checks"]["qlora"]
    assert check["status"] == "skipped: no CUDA", check
    results = check["results"]
    assert "needs a CUDA GPU" in results["qlora_refused_on_cpu"]
    (run,) = results["runs"]
    assert run["name"] == "lora r16" and run["status"] == "ok" and run["losses_finite"], run
    assert run["adapters_moved"] and run["linear4bit_modules"] == 0
    assert (Path(results["base"]) / "config.json").is_file()  # a real save_pretrained directory, loaded from disk
    test = quick[1]["checks"]["qlora_test"]["results"]  # tests/test_lora_gpu.py, run by pytest, skips itself
    assert test["returncode"] == 0 and test["pytest"].startswith("1 skipped"), test
    assert test["skipped"] == ["SKIPPED [1] tests/test_lora_gpu.py:20: QLoRA needs a CUDA GPU"]


def test_the_plan_fits_one_device_call_and_the_readme_states_it():
    from checks import BUDGET_S, CHECKS, SETUP_S
    from run_checks import REPORT_RESERVE_S

    assert [c.name for c in CHECKS] == ["env", *CUDA_CHECKS]
    assert SETUP_S + sum(c.expected_s for c in CHECKS) + REPORT_RESERVE_S <= BUDGET_S
    assert all(0 < c.expected_s <= c.timeout_s for c in CHECKS)
    readme = (ROOT / "benchmarks" / "gpu" / "README.md").read_text()
    call_limit = 590
    assert f"timeout_s={call_limit})" in readme and call_limit >= BUDGET_S + 20  # the report and exit fit inside
    plan = [line for line in readme.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [line.split("|")[2].strip(" `") for line in plan] == [c.name for c in CHECKS]
    for line, c in zip(plan, CHECKS, strict=True):  # the README's seconds are the registered ones
        assert [int(line.split("|")[k]) for k in (3, 4)] == [c.expected_s, c.timeout_s], line


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


@pytest.mark.slow
def test_full_cpu_rehearsal_trains_through_train_py(tmp_path):
    """Every check at its CPU rehearsal size: check a with bf16-mixed too, b trains a tiny Llama with FSDP2 through
    ``train.py``, the comparisons train a hidden-256 Llama for 3 steps per variant."""
    out, report = run_script(tmp_path, "--budget", "2400", "--timeout-scale", "5", timeout=3000)
    for name in CUDA_CHECKS:
        assert report["checks"][name]["status"] == "skipped: no CUDA", report["checks"][name]
    for run in report["checks"]["throughput"]["results"]["runs"]:
        assert run["status"] == "ok" and run["steps_measured"] >= 1 and run["tokens_per_sec"] > 0, run
    for name in COMPARISONS:
        assert {r["status"] for r in report["checks"][name]["results"]["runs"]} == {"ok"}, name
    assert "| operator |" in (out / "profile.md").read_text()


def test_exit_status_accepts_only_skips_for_what_the_machine_lacks():
    from run_checks import acceptable

    assert acceptable("pass") and acceptable("skipped: no CUDA") and acceptable("skipped: bitsandbytes not available")
    for status in ("fail", "error", "timeout", "skipped: out of time budget"):
        assert not acceptable(status), status


def test_equivalent_variants_must_start_from_the_same_loss():
    from comparisons import same_first_loss

    runs = [
        {"name": "a", "status": "ok", "losses": [0.70, 0.60]},
        {"name": "b", "status": "ok", "losses": [0.705, 0.61]},  # 5e-3 from a
        {"name": "c", "status": "error: OOM"},  # not compared
    ]
    assert same_first_loss(runs, 1e-2) == []
    assert [f.split(":")[0] for f in same_first_loss(runs, 1e-3)] == ["b"]
    assert runs[1]["first_loss_error"] == pytest.approx(0.005)
    # against ln 2 = 0.693147: a is 6.9e-3 off, b 1.19e-2
    assert [f.split(":")[0] for f in same_first_loss(runs, 1e-2, expected=math.log(2))] == ["b"]
    assert len(same_first_loss(runs, 5e-3, expected=math.log(2))) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_checks_pass(tmp_path):
    """The GPU session itself: every check passes (the MFU goal included)."""
    _, report = run_script(tmp_path, hide_cuda=False, timeout=900)
    failed = {name: (c["status"], c["message"]) for name, c in report["checks"].items() if c["status"] != "pass"}
    assert not failed, failed
