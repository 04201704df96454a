"""benchmarks/gpu_check.py, the one command that checks the GPU paths on a machine with a GPU, runs
its checks at tiny sizes on the CPU too (``--device cpu --smoke``), so it does not rot unrun."""
import json
import subprocess
import sys

from tests.fixtures import REPO


def test_gpu_check_runs_every_check_at_tiny_sizes_on_the_cpu(tmp_path):
    report = tmp_path / "gpu_check.json"
    process = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--smoke",
                              "--json", str(report)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    checks = json.loads(report.read_text())["checks"]
    assert {name: c["status"] for name, c in checks.items()} == {
        "cuda tests": "skipped", "training steps": "ok", "run": "ok", "host flows": "ok", "packed engine": "ok",
        "ddp": "ok"}
    figures = checks["training steps"]["figures"]
    assert figures["binary none"]["saved_mb_per_sample"] < figures["flavr none"]["saved_mb_per_sample"]
    run = checks["run"]["figures"]
    assert abs(run["test_psnr"] - run["validation_psnr"]) < 1e-3
    assert "0 check(s) failed" in process.stdout


def test_gpu_check_skips_the_checks_left_when_its_time_is_spent_and_still_writes_its_json(tmp_path):
    report = tmp_path / "gpu_check.json"
    process = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--smoke", "--budget", "0",
                              "--json", str(report)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    checks = json.loads(report.read_text())["checks"]
    assert len(checks) == 6 and all(c["status"] == "skipped" and "out of time" in c["detail"] for c in checks.values())
