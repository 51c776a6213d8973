"""The GPU session's set-up, run for real on the CPU: ``run.sh``'s offline install loop on wheels this test writes
(a wheel is a zip; building one with pip would need the network), and ``preflight.py``, which stops the session at
the first import that fails."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))


def write_wheel(folder: Path, name: str, version: str, files: dict[str, str], top_level: bool = False) -> Path:
    """A pure-Python wheel ``<name>-<version>-py3-none-any.whl`` holding ``files`` ({path in site-packages: text}),
    with the METADATA, WHEEL and RECORD a wheel has (and ``top_level.txt`` when asked, as setuptools writes it)."""
    info = f"{name}-{version}.dist-info"
    entries = dict(files)
    entries[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
    entries[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: a test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    if top_level:
        entries[f"{info}/top_level.txt"] = "".join(sorted({p.split("/")[0].removesuffix(".py") for p in files})) + "\n"
    record = []
    for path, text in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    entries[f"{info}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in entries.items():
            archive.writestr(path, text)
    return wheel


def run_setup(tmp: Path, wheels: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """``bash benchmarks/gpu/run.sh OUT --preflight-only`` with its wheels, site and scratch folders under ``tmp``."""
    out = tmp / "out"
    env = {
        **os.environ,
        "GPU_WHEELS": str(wheels),
        "GPU_CHECKS_SITE": str(tmp / "site"),
        "GPU_CHECKS_WORK": str(tmp / "work"),
        "PYTHON": sys.executable,
        "CUDA_VISIBLE_DEVICES": "",
    }
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "run.sh"), str(out), "--preflight-only"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    return proc, out


def test_install_loop_installs_carried_wheels_offline_and_preflight_imports_them(tmp_path):
    wheels = tmp_path / "wheels"
    write_wheel(wheels, "simpo_probe_pkg", "1.0", {"simpo_probe_pkg/__init__.py": "VALUE = 1\n"}, top_level=True)
    write_wheel(wheels, "simpo_probe_mod", "2.0.1", {"simpo_probe_mod.py": "VALUE = 2\n"})
    write_wheel(wheels, "tqdm", "0.0.1", {"tqdm/__init__.py": "raise RuntimeError('shadowed')\n"})  # already here
    (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    proc, out = run_setup(tmp_path, wheels)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (tmp_path / "work" / "installed.txt").read_text().splitlines()
    assert "simpo_probe_pkg 1.0: installed" in log and "simpo_probe_mod 2.0.1: installed" in log, log
    import tqdm

    assert f"tqdm 0.0.1: not installed, {tqdm.__version__} already here" in log, log
    assert any(line.startswith("broken 1.0: FAILED to install") for line in log), log
    site = tmp_path / "site"
    assert (site / "simpo_probe_pkg" / "__init__.py").is_file() and (site / "simpo_probe_mod.py").is_file()
    assert not (site / "tqdm").exists()  # the machine's own package is never shadowed
    found = json.loads((tmp_path / "work" / "preflight.json").read_text())
    assert found["status"] == "ok" and found["reason"] is None
    # imported through the PYTHONPATH run.sh set: from the private site folder
    assert found["imports"]["simpo_probe_pkg"] == str(site / "simpo_probe_pkg" / "__init__.py")
    assert found["imports"]["simpo_probe_mod"] == str(site / "simpo_probe_mod.py")
    for module in ("torch", "transformers", "hydra", "omegaconf", "datasets", "llama_models", "pyarrow", "fsspec"):
        assert module in found["imports"], module
    for dist in ("pyarrow", "fsspec", "pandas", "peft", "transformers", "torch"):
        assert found["versions"][dist], dist
        assert f" {dist} {found['versions'][dist]}" in proc.stdout
    assert "--preflight-only: no check run" in proc.stdout
    assert not out.exists() or not any(out.iterdir())  # nothing to report: no check ran


def test_a_failed_import_stops_the_session_with_one_line(tmp_path):
    wheels = tmp_path / "wheels"
    write_wheel(wheels, "simpo_probe_bad", "1.0", {"simpo_probe_bad.py": "raise ImportError('needs libfoo.so.3')\n"})
    proc, out = run_setup(tmp_path, wheels)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    reason = "import simpo_probe_bad (simpo_probe_bad) failed: ImportError: needs libfoo.so.3"
    assert f"preflight FAILED: {reason}" in proc.stdout.splitlines()
    assert "no check run" not in proc.stdout and "===== env" not in proc.stdout  # no check started
    report = json.loads((out / "report.json").read_text())
    assert report["preflight"]["status"] == "failed" and report["preflight"]["reason"] == reason
    assert report["checks"] == {}
    assert reason in (out / "report.md").read_text()


def test_unmet_requirements_name_both_sides(tmp_path, monkeypatch):
    import importlib.metadata as md

    from preflight import unmet_requirements

    requires = {"carried": ["numpy>=999", "pytest", "absent-dist-xyz>=1", "sphinx; extra == 'docs'"]}
    monkeypatch.setattr(md, "requires", lambda dist: requires[dist])
    unmet = unmet_requirements(("carried",))
    assert unmet == [
        f"carried needs numpy>=999, numpy {md.version('numpy')} is installed",
        "carried needs absent-dist-xyz>=1, absent-dist-xyz is not installed",
    ]


@pytest.mark.parametrize("top_level", [True, False])
def test_top_level_modules_from_top_level_txt_or_record(tmp_path, top_level):
    from preflight import top_level_modules

    wheel = write_wheel(tmp_path / "w", "simpo_probe_tl", "1.0",
                        {"simpo_probe_tl/__init__.py": "", "simpo_probe_tl/sub.py": ""}, top_level)  # fmt: skip
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    sys.path.insert(0, str(tmp_path / "site"))
    try:
        assert top_level_modules("simpo_probe_tl") == ["simpo_probe_tl"]
    finally:
        sys.path.remove(str(tmp_path / "site"))


def test_no_script_of_the_gpu_folder_shadows_a_package():
    """``python benchmarks/gpu/X.py`` puts that folder first on ``sys.path``: a script named like a package that the
    stack imports would replace it (``kernels.py`` did: bitsandbytes and transformers import Hugging Face's
    ``kernels`` when it is there). Names installed here, and those the GPU image's stack imports optionally."""
    import importlib.util

    folder = ROOT / "benchmarks" / "gpu"
    optional = {"kernels", "flash_attn", "bitsandbytes", "triton", "apex", "xformers", "deepspeed", "vllm"}
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != folder]
    try:
        for script in folder.glob("*.py"):
            name = script.stem
            spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
            assert name not in optional, name
            assert spec is None or Path(spec.origin or "").resolve().parent == folder, (name, spec)
    finally:
        sys.path[:] = saved
