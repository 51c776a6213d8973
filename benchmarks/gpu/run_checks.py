"""Run the GPU checks of ``checks.py`` in order, each in its own process with its own timeout, under one time budget,
and write the report into OUT (normally started by ``run.sh``, which installs the carried wheels first):

    python benchmarks/gpu/run_checks.py OUT [--budget 560] [--only exactness,throughput] [--quick] [--timeout-scale 1]

OUT receives four files, rewritten after every check so that a run cut short still returns what it measured:

- ``report.md``: versions, device, one line per check, then each check's tables (and operator profiles of slow runs);
- ``report.json``: the same as data: ``checks.<name>.status`` is pass | fail | error | timeout | skipped: <why>;
- ``log.txt``: everything the checks printed (``train.py``'s output included);
- ``profile.md``: the ``torch.profiler`` top-operator tables of every profiled ``train.py`` run.

Exit status 0 when every check passed or was skipped for want of CUDA or bitsandbytes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from checks import BUDGET_S, CHECKS  # noqa: E402  (the standard library only)

REPORT_RESERVE_S = 5  # kept back from the budget to write the report
MIN_CHECK_S = 20  # a check is not started with less time than this left
SKIPPED_FOR_TIME = "skipped: out of time budget"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder (report.md, report.json, log.txt, profile.md)")
    parser.add_argument(
        "--budget",
        type=float,
        default=float(os.environ.get("GPU_CHECKS_BUDGET", BUDGET_S)),
        help=f"seconds for everything, counted from $GPU_CHECKS_T0 (set by run.sh) or now (default {BUDGET_S}: the "
        "one device call of README.md)",
    )
    parser.add_argument("--only", default=None, help="comma-separated check names (default: all, in order)")
    parser.add_argument("--quick", action="store_true", help="test-suite size: train.py runs are composed, not run")
    parser.add_argument(
        "--timeout-scale",
        type=float,
        default=1.0,
        help="multiply every check's own timeout (sized for the GPU) by this: a slow CPU rehearsal (default 1)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(os.environ.get("GPU_CHECKS_WORK", "/tmp/simpo-gpu-work")),
        help="scratch directory (data, run directories, per-check results)",
    )
    args = parser.parse_args(argv)
    names = [c.name for c in CHECKS]
    if args.only:
        unknown = sorted(set(args.only.split(",")) - set(names))
        if unknown:
            parser.error(f"unknown check(s) {unknown}; known: {names}")
    return args


def tail(path: Path, start: int, lines: int = 40) -> str:
    """The last ``lines`` lines written to ``path`` after byte ``start``."""
    with path.open("rb") as handle:
        handle.seek(start)
        return "\n".join(handle.read().decode(errors="replace").splitlines()[-lines:])


def run_check(check: Any, args: argparse.Namespace, timeout: float, log_path: Path) -> dict[str, Any]:
    """Run one check in its own process group; kill the group at ``timeout``. Returns its result dict."""
    result_path = args.work / f"result-{check.name}.json"
    result_path.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(HERE / "checks.py"),
        check.name,
        "--result",
        str(result_path),
        "--work",
        str(args.work),
        "--deadline",
        str(time.time() + timeout - 5),
    ]
    if args.quick:
        command.append("--quick")
    start = time.time()
    with log_path.open("a") as log:
        log.write(f"\n===== {check.name}: {check.title} (timeout {timeout:.0f} s) =====\n")
        log.flush()
        offset = log.tell()
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):  # it may have ended on its own meanwhile
                os.killpg(process.pid, signal.SIGKILL)  # the check and any train.py it started
            returncode = process.wait()
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        result = {"status": "running", "message": "", "results": {}, "tables": {}}
    if timed_out:
        result["status"] = "timeout"
        result["message"] = f"stopped after {timeout:.0f} s (partial results kept) " + result.get("message", "")
    elif result["status"] == "running":
        result["status"] = "error"
        result["message"] = f"the check process exited with {returncode} before reporting"
    result.update(
        seconds=round(time.time() - start, 1),
        timeout_s=round(timeout),
        expected_s=check.expected_s,
        title=check.title,
        description=(check.func.__doc__ or "").strip(),
    )
    if result["status"] in ("error", "timeout", "fail"):
        result["log_tail"] = tail(log_path, offset)
    return result


def preflight_findings(path: str | None) -> dict[str, Any] | None:
    """What ``preflight.py`` found (``run.sh`` runs it first and names its file in ``$GPU_CHECKS_PREFLIGHT``)."""
    if not path or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def markdown(report: dict[str, Any]) -> str:
    env = report["checks"].get("env", {}).get("results", {})
    versions, device = env.get("versions", {}), env.get("device", {})
    lines = [f"# GPU checks, {report['started']}", ""]
    if device.get("name"):
        lines.append(
            f"Device: {device['name']} ({device.get('memory_gb', 0):.0f} GiB, {device.get('multiprocessors')} "
            f"SMs), bf16 dense peak {device.get('peak_bf16_tflops', 0):.0f} TFLOP/s by the table, measured "
            f"8192^3 bf16 matmul {device.get('bf16_matmul_tflops', 0):.0f} TFLOP/s; "
            f"{device.get('cpu_count')} CPU cores."
        )
    else:
        lines.append(
            f"Device: no CUDA on {report['host']} ({os.cpu_count()} CPU cores): the CUDA checks rehearse "
            "their code on the CPU at a small size and say `skipped: no CUDA`."
        )
    if versions:
        lines.append(
            "Versions: "
            + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
            + "; absent: "
            + (", ".join(k for k, v in versions.items() if not v) or "none")
            + "."
        )
    if report.get("wheels"):
        lines.append(f"Carried wheels: {report['wheels']}")
    preflight = report.get("preflight")
    if preflight:
        unmet = "; ".join(preflight.get("unmet", [])) or "none"
        lines.append(
            f"Preflight: {preflight.get('status')} in {preflight.get('seconds')} s, "
            f"{len(preflight.get('imports') or {})} imports; requirements not met: {unmet}."
        )
    used = report.get("elapsed_s", 0)
    lines += [
        "",
        f"Budget {report['budget_s']:.0f} s, used {used:.0f} s.",
        "",
        "| check | status | seconds | expected | summary |",
        "|---|---|---:|---:|---|",
    ]
    for name, result in report["checks"].items():
        message = str(result.get("message", "")).replace("|", "/").replace("\n", " ")
        seconds, expected = result.get("seconds", 0), result.get("expected_s", "")
        lines.append(f"| {name} | {result['status']} | {seconds:.0f} | {expected} | {message} |")
    for name, result in report["checks"].items():
        lines += [
            "",
            f"## {result.get('title', name)}",
            "",
            result.get("description", ""),
            "",
            f"Status: **{result['status']}**. {result.get('message', '')}",
        ]
        for key, table in result.get("tables", {}).items():
            lines += ["", f"{key}:" if key == "profiles" else "", table]
        if result.get("log_tail"):
            lines += ["", "Last lines of its log:", "", "```", result["log_tail"], "```"]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path, started: float) -> None:
    report["elapsed_s"] = time.time() - started
    profiles = []
    for name, result in report["checks"].items():
        for run in result.get("results", {}).get("runs", []):
            if run.get("profile"):
                profiles.append(f"## {name}: {run['name']}\n\n{run['profile']}")
    (out / "profile.md").write_text("\n".join(profiles) if profiles else "No train.py run was profiled.\n")
    for path, text in (
        (out / "report.json", json.dumps(report, indent=1, default=str)),
        (out / "report.md", markdown(report)),
    ):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = float(os.environ.get("GPU_CHECKS_T0") or time.time())
    deadline = started + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "log.txt"
    install_log = os.environ.get("GPU_CHECKS_INSTALL_LOG")
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "host": platform.node(),
        "budget_s": args.budget,
        "quick": args.quick,
        "argv": sys.argv[1:],
        "wheels": Path(install_log).read_text().strip().replace("\n", "; ")
        if install_log and Path(install_log).is_file()
        else None,
        "preflight": preflight_findings(os.environ.get("GPU_CHECKS_PREFLIGHT")),
        "checks": {},
    }
    wanted = args.only.split(",") if args.only else [c.name for c in CHECKS]
    for check in (c for c in CHECKS if c.name in wanted):
        left = deadline - time.time() - REPORT_RESERVE_S
        if left < MIN_CHECK_S:
            report["checks"][check.name] = {
                "status": SKIPPED_FOR_TIME,
                "title": check.title,
                "message": f"{left:.0f} s left of {args.budget:.0f} s",
                "seconds": 0,
                "expected_s": check.expected_s,
            }
        else:
            timeout = min(check.timeout_s * args.timeout_scale, left)
            print(f"[{time.strftime('%H:%M:%S')}] {check.name}: {check.title} (timeout {timeout:.0f} s)", flush=True)
            report["checks"][check.name] = result = run_check(check, args, timeout, log_path)
            print(f"    -> {result['status']} in {result['seconds']:.0f} s: {result.get('message', '')}", flush=True)
            if result.get("log_tail"):
                print("    " + result["log_tail"].replace("\n", "\n    ")[-3000:], flush=True)
        write_report(report, args.out, started)
    write_report(report, args.out, started)
    print(f"\nreport: {args.out / 'report.md'} ({time.time() - started:.0f} s of {args.budget:.0f})\n")
    for name, result in report["checks"].items():  # the numbers, then the summary last (what output_tail shows)
        for key, table in result.get("tables", {}).items():
            if key != "profiles":
                print(f"{name}:\n{table}\n")
    print(
        markdown(
            {
                **report,
                "checks": {
                    k: {**v, "tables": {}, "log_tail": None, "description": ""} for k, v in report["checks"].items()
                },
            }
        ).split("\n## ")[0]
    )
    return 0 if all(acceptable(r["status"]) for r in report["checks"].values()) else 1


def acceptable(status: str) -> bool:
    """A check that passed, or skipped for want of something the machine lacks (CUDA, bitsandbytes); not one that
    failed, broke, timed out or found no time left."""
    return status == "pass" or (status.startswith("skipped: ") and status != SKIPPED_FOR_TIME)


if __name__ == "__main__":
    sys.exit(main())
