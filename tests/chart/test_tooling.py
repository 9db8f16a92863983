"""The tools people already run on charts: checkov, yamllint, shellcheck, hadolint, the README
generator; plus setup_cluster's plan and the immudb bump script."""

import json
import os
import shutil
import subprocess

import yaml

from conftest import CHART, SCENARIOS, render

REPO = CHART.parent
VENV_BIN = REPO / ".venv" / "bin"


def run(*args, cwd=REPO, **kwargs):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, **kwargs)


def test_checkov_finds_nothing_in_any_scenario(tmp_path):
    for name, values in SCENARIOS.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(render(values)))
    checkov = REPO / ".venv-checkov" / "bin" / "checkov"
    result = run(str(checkov), "-d", str(tmp_path), "--framework", "kubernetes", "--output", "json", "--quiet",
                 env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert not failed, failed
    assert report["summary"]["passed"] > 0


def test_yaml_passes_yamllint():
    files = ["chart/values.yaml", "chart/Chart.yaml", "ct.yaml", *map(str, (REPO / "chart" / "ci").glob("*.yaml")),
             *map(str, (REPO / ".github" / "workflows").glob("*.yaml")), "tests/monitoring/alerts-test.yaml"]
    result = run(str(VENV_BIN / "yamllint"), "--strict", *files)
    assert result.returncode == 0, result.stdout


def test_shell_scripts_pass_shellcheck():
    result = run("shellcheck", "-x", "setup_cluster", "tests/bootstrap.sh", "scripts/bump-immudb", ".ci/run")
    assert result.returncode == 0, result.stdout


def test_dockerfile_passes_hadolint():
    result = run(str(VENV_BIN / "hadolint"), "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_readme_parameter_table_is_current(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(CHART / "README.md", readme)
    result = run(str(REPO / "node_modules" / ".bin" / "readme-generator"), "-v", "chart/values.yaml", "-r", str(readme))
    assert result.returncode == 0, result.stdout + result.stderr
    assert readme.read_text() == (CHART / "README.md").read_text(), "regenerate chart/README.md"


def test_setup_cluster_dry_run_plans_every_step_in_order():
    result = run("./setup_cluster", "--dry-run", "--replicas", "4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    steps = ["kind create cluster", "ingress-nginx", "cert-manager", "kube-prometheus-stack", "docker build",
             "kind load docker-image", "helm upgrade --install immudb ./chart", "rollout status", "helm test"]
    positions = [next(i for i, line in enumerate(lines) if step in line) for step in steps]
    assert positions == sorted(positions), dict(zip(steps, positions))
    chart_line = next(line for line in lines if "./chart" in line)
    assert "replicaCount=4" in chart_line
    bad = run("./setup_cluster", "--replicas", "many")
    assert bad.returncode == 2 and "--replicas" in bad.stderr


def test_bump_script_touches_exactly_the_files_it_must(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".venv*", "target", "node_modules", ".git"))
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    result = run("scripts/bump-immudb", "1.12.0", cwd=copy)
    assert result.returncode == 0, result.stderr
    after = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    changed = {str(p) for p in after if before.get(p) != after[p]}
    assert changed == {"chart/Chart.yaml", "CHANGELOG.md"}
    chart_yaml = yaml.safe_load((copy / "chart" / "Chart.yaml").read_text())
    assert chart_yaml["appVersion"] == "1.12.0" and chart_yaml["version"] == "0.2.0"
    assert "## 0.2.0" in (copy / "CHANGELOG.md").read_text()
    again = run("scripts/bump-immudb", "1.12.0", cwd=copy)
    assert again.returncode == 1
