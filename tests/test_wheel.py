"""The package works installed, not only from the checkout (issue 14): a built wheel and a plain
`pip install .` put a working `interp-eval` into a fresh virtualenv.

The fresh virtualenv gets interp-eval itself from the wheel (so its prompts, templates and price table
must be inside the package); the heavy dependencies (torch, transformers, sae-lens, ...) come from
this environment's site-packages through a .pth line, so no network is needed. The LLM is the test
suite's local server speaking OpenAI's wire format, since CI has no offline model; the run is
`reproduce --preset tiny` from a working directory outside the checkout.
"""

from __future__ import annotations

import os
import re
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from fake_llm_server import FakeLLMServer
from scoring_helpers import fmt, read_prompt

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ("interp_eval/prompts/detection_system.txt", "interp_eval/prompts/explain_user.txt",
                "interp_eval/data/prices.json")


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _fresh_venv(path: Path) -> Path:
    """A virtualenv without pip whose .pth line adds this environment's site-packages after its own."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    python = path / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    # plain paths: the .pth files inside them (e.g. this checkout's editable install) are not run
    Path(purelib, "zz_host_site_packages.pth").write_text("\n".join(sorted(ours)) + "\n")
    return python


def _pip_install(python: Path, target: str | Path, cwd: Path) -> None:
    _run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python), "install", "-q",
          "--no-deps", "--no-build-isolation", "--no-index", str(target)], cwd=cwd)


def _where(python: Path, cwd: Path) -> Path:
    code = "import interp_eval.prompting as p; print(p.__file__); print(p.load_prompt('detection_system').version)"
    lines = _run([str(python), "-c", code], cwd=cwd).stdout.split()
    assert re.fullmatch(r"detection_system@[0-9a-f]{8}", lines[1])
    return Path(lines[0])


def _answer(req: dict) -> str:
    """Scoring turns get a valid digit list; every other call (explain) gets an explanation."""
    last = req["messages"][-1]["content"] if req["messages"] else ""
    if str(last).startswith("Explanation:"):
        return fmt([i % 2 for i in range(len(read_prompt(req)[1]))])
    return "Explanation: words about the news"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(dist), str(ROOT)], cwd=dist)
    (whl,) = dist.glob("interp_eval-*.whl")
    return whl


def test_wheel_holds_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in PACKAGE_DATA:
        assert name in names, f"{name} is not in the wheel"
    assert any(n.startswith("interp_eval/report/templates/") for n in names)
    assert not any(n.startswith(("tests/", "bench/", "prompts/")) for n in names)


def test_plain_pip_install_finds_its_prompts(tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    _pip_install(python, ROOT, cwd=tmp_path)
    where = _where(python, cwd=tmp_path)
    assert where.is_relative_to(tmp_path / "venv"), where
    _run([str(tmp_path / "venv" / "bin" / "interp-eval"), "--help"], cwd=tmp_path)


def test_reproduce_tiny_from_an_installed_wheel(wheel, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    _pip_install(python, wheel, cwd=tmp_path)
    assert _where(python, cwd=tmp_path).is_relative_to(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_", "INTERP_EVAL_PROMPTS", "INTERP_EVAL_PRICES", "PYTHONPATH"))}
    with FakeLLMServer(_answer) as server:
        env.update(OPENAI_API_KEY="fake-openai-test-key", OPENAI_BASE_URL=server.url + "/v1")
        # the user cache keeps the converted subject model; the LLM answers go to a cache of this test's own
        out = _run([str(tmp_path / "venv" / "bin" / "interp-eval"), "reproduce", "--preset", "tiny", "--run", "run",
                    "--model", "gpt-4.1-mini", "--llm-cache", str(tmp_path / "llm.sqlite")],
                   cwd=tmp_path, env=env, timeout=900)
        assert server.completion_calls() > 0
    assert "report:" in out.stdout
    run = tmp_path / "run"
    for name in ("explanations.parquet", "latent_scores.parquet", "results/report.html"):
        assert (run / name).exists(), name
