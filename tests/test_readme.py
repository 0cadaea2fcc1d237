"""The README's quickstart and canary walkthrough, run as written, so the docs cannot drift.

A block the test runs is a fenced ```bash block right after a marker comment:

    <!-- readme-test: quickstart -->              run it, in README order, in terminal "quickstart"
    <!-- readme-test: canary background -->       run it in the background, in a terminal of its own
    <!-- readme-test: skip WHY -->                not run (WHY says why: `make run` itself...)

Blocks of one name run in one terminal: each continues the shell state (an activated venv,
variables, the directory) the one before it left, as pasting them one after the other does.

Every ```bash block in the Quickstart and in the canary walkthrough carries a marker, so a
new block cannot escape the test by being forgotten.

The blocks run with bash, one after the other, in a fresh working directory that holds only
`.venv` (the venv the tests run in), against a real `modelreg server` started as `make run`
starts it (the console script with the venv's bin on PATH, embedded Postgres in
`./.modelreg`), on a free port instead of 50051: `127.0.0.1:50051`, `127.0.0.1:50052` (the
agent's default) and `127.0.0.1:8080` (the web console's) in a block are replaced by the
test's ports, and MODELREG_ADDRESS / MODELREG_AGENT_LISTEN / MODELREG_HTTP_ADDRESS point at
them, as they would for a user who set them (a fixed port another process on the machine
holds would fail the test for a reason that is not the README's). A terminal
starts with the venv neither activated nor on PATH: its first block must say how to get
there. What `make run` prints to try must work in such a terminal too.
A block that exits non-zero, or a background block that exits while it should run, fails
the test with the block's text and output.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BIN = Path(sys.executable).parent
#: The sections whose every bash block must carry a marker.
CHECKED_SECTIONS = ("## Quickstart", "### Walkthrough")
MARKER = re.compile(
    r"^<!-- readme-test: (?P<spec>[^>]*?) ?-->\n(?:\n)?```bash\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL
)
BASH_FENCE = re.compile(r"^```bash$", re.MULTILINE)
BLOCK_TIMEOUT = 60.0
DEFAULT_REGISTRY = "127.0.0.1:50051"
DEFAULT_AGENT = "127.0.0.1:50052"
DEFAULT_CONSOLE = "127.0.0.1:8080"


@dataclass(frozen=True)
class Block:
    """One marked README block."""

    name: str
    background: bool
    skip: bool
    text: str
    line: int  # of the opening fence, 1-based

    def describe(self) -> str:
        kind = "background block" if self.background else "block"
        return f"README.md line {self.line}, {kind} '{self.name}':\n{self.text}"


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for m in MARKER.finditer(text):
        words = m["spec"].split()
        if not words:
            raise AssertionError(f"README.md line {text.count(chr(10), 0, m.start()) + 1}: empty readme-test marker")
        skip = words[0] == "skip"
        if not skip and set(words[1:]) - {"background"}:
            raise AssertionError(f"unknown readme-test options in {m[0].splitlines()[0]!r}: use 'NAME [background]'")
        line = text.count("\n", 0, m.start("body"))
        blocks.append(Block(words[0], "background" in words[1:], skip, m["body"], line))
    return blocks


def _sections(text: str, heading: str) -> list[tuple[int, str]]:
    """The bodies (with their start offsets) of sections whose heading starts with `heading`,
    up to the next heading of the same or a higher level."""
    level = heading.split()[0]
    out = []
    for m in re.finditer(rf"^{re.escape(heading)}.*$", text, re.MULTILINE):
        end = re.compile(rf"^#{{1,{len(level)}}} ", re.MULTILINE).search(text, m.end())
        out.append((m.end(), text[m.end() : end.start() if end else len(text)]))
    return out


def test_every_walkthrough_block_is_marked():
    text = README.read_text()
    marked = {text.count("\n", 0, m.start("body")) for m in MARKER.finditer(text)}
    for heading in CHECKED_SECTIONS:
        sections = _sections(text, heading)
        assert sections, f"README.md has no section {heading!r}; update CHECKED_SECTIONS in {__file__}"
        for start, body in sections:
            for fence in BASH_FENCE.finditer(body):
                line = text.count("\n", 0, start + fence.end()) + 1
                assert line in marked, (
                    f"README.md line {line}: a bash block in {heading!r} without a "
                    "'<!-- readme-test: NAME -->' marker (or '<!-- readme-test: skip WHY -->') just above it"
                )
    names = {b.name for b in readme_blocks(text) if not b.skip}
    assert {"quickstart", "canary"} <= names, names


# ---------------------------------------------------------------- running the blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, limit: int = 4000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-limit:]
    return ""


class Session:
    """The user's terminals: `make run` in one, the blocks in others."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.registry = f"127.0.0.1:{free_port()}"
        self.agent = f"127.0.0.1:{free_port()}"
        self.console = f"127.0.0.1:{free_port()}"
        self.logs = workdir.parent / "logs"
        self.logs.mkdir()
        path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != BIN.resolve()]
        # A fresh user: no venv active, no modelreg settings but the two addresses.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("MODELREG_")
        }
        env.update(
            PATH=os.pathsep.join(path),
            MODELREG_ADDRESS=self.registry,
            MODELREG_AGENT_LISTEN=self.agent,
            MODELREG_HTTP_ADDRESS=self.console,
            PYTHONUNBUFFERED="1",
        )
        #: A new terminal: the venv is neither active nor on PATH.
        self.env = env
        self.server: subprocess.Popen | None = None
        self.background: list[tuple[Block, subprocess.Popen, Path]] = []

    # ------------------------------------------------------------ the `make run` terminal

    def start_server(self) -> str:
        """`make run`: the console script, with the venv's bin on PATH as make exports it.
        Returns the banner once the server listens."""
        env = dict(self.env, PATH=os.pathsep.join([str(BIN), self.env["PATH"]]), MODELREG_SHUTDOWN_GRACE="1")
        log = self.logs / "make-run.log"
        with open(log, "wb") as out:
            self.server = subprocess.Popen(
                [str(BIN / "modelreg"), "server"], cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while "listening on" not in (banner := _tail(log, 100_000)):
            if self.server.poll() is not None:
                raise AssertionError(f"`modelreg server` exited with {self.server.returncode}:\n{banner}")
            if time.monotonic() > deadline:
                raise AssertionError(f"`modelreg server` did not listen within 60 s:\n{banner}")
            time.sleep(0.1)
        time.sleep(0.3)  # the rest of the banner
        return _tail(log, 100_000)

    def stop_server(self) -> int | None:
        """Ctrl-C in the `make run` terminal."""
        if self.server is None or self.server.poll() is not None:
            return None if self.server is None else self.server.returncode
        self.server.send_signal(signal.SIGINT)
        try:
            return self.server.wait(20)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait(5)
            return None

    # ------------------------------------------------------------ the other terminals

    def script(self, block: Block) -> str:
        """The block as its terminal runs it: a foreground block continues the shell of the
        blocks of the same name before it (variables, functions, the directory: an activated
        venv stays activated), and leaves its own state for the next one."""
        body = (
            block.text.replace(DEFAULT_REGISTRY, self.registry)
            .replace(DEFAULT_AGENT, self.agent)
            .replace(DEFAULT_CONSOLE, self.console)
        )
        if block.background:
            return "set -e\n" + body
        state = shlex.quote(str(self.logs / f"terminal-{block.name}.sh"))
        return (
            f"[ -f {state} ] && source {state}\n"
            f'trap \'{{ declare -px; declare -f; printf "cd -- %q\\n" "$PWD"; }} > {state}\' EXIT\n'
            "set -e\n" + body
        )

    def run(self, block: Block) -> None:
        if block.background:
            self._start_background(block)
            return
        log = self.logs / f"block-{block.line}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", self.script(block)],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + BLOCK_TIMEOUT
        problem = ""
        while proc.poll() is None:
            dead = self.dead_background()
            if dead:
                problem = dead
            elif self.server is not None and self.server.poll() is not None:
                problem = f"the registry (`make run`) exited with {self.server.returncode}"
            elif time.monotonic() > deadline:
                problem = f"it ran past {BLOCK_TIMEOUT:g} s"
            if problem:
                _kill_group(proc)
                break
            time.sleep(0.05)
        if not problem and proc.returncode != 0:
            problem = f"it exited with {proc.returncode}"
        if problem:
            raise AssertionError(self.report(block, problem, log))

    def _start_background(self, block: Block) -> None:
        log = self.logs / f"background-{block.line}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", self.script(block)],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.background.append((block, proc, log))

    def dead_background(self) -> str:
        for block, proc, log in self.background:
            if proc.poll() is not None:
                return (
                    f"the background block at README.md line {block.line} exited with {proc.returncode}:\n"
                    f"{block.text}\n--- its output:\n{_tail(log)}"
                )
        return ""

    def stop_background(self) -> list[str]:
        """Ctrl-C in each background terminal; returns the problems."""
        problems = []
        for block, proc, log in self.background:
            if proc.poll() is not None:
                problems.append(f"README.md line {block.line} exited by itself with {proc.returncode}:\n{_tail(log)}")
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                problems.append(f"README.md line {block.line} did not stop on Ctrl-C within 20 s:\n{_tail(log)}")
        return problems

    def report(self, block: Block, problem: str, log: Path) -> str:
        parts = [f"{block.describe()}\n--- failed: {problem}", f"--- its output:\n{_tail(log, 8000)}"]
        for other, _, other_log in self.background:
            parts.append(f"--- background block at line {other.line}:\n{_tail(other_log)}")
        parts.append(f"--- `make run`:\n{_tail(self.logs / 'make-run.log')}")
        return "\n".join(parts)

    def close(self) -> None:
        """Whatever still runs after a failure: Ctrl-C first (the registry then stops its
        embedded Postgres), then SIGKILL."""
        for _, proc, _ in self.background:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            _kill_group(proc)
        self.stop_server()


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _banner_commands(banner: str) -> list[str]:
    lines = banner.split("try:", 1)[1].splitlines()[1:]
    commands = []
    for line in lines:
        if not line.startswith("  "):
            break
        commands.append(line.strip())
    return commands


@pytest.mark.timeout(115)
def test_readme_quickstart_and_canary_walkthrough_run_as_written(tmp_path):
    blocks = [b for b in readme_blocks(README.read_text()) if not b.skip]
    workdir = tmp_path / "clone"
    workdir.mkdir()
    (workdir / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    session = Session(workdir)
    try:
        banner = session.start_server()
        # What `make run` suggests works in a new terminal, as printed.
        commands = _banner_commands(banner)
        assert commands, f"the banner suggests no command:\n{banner}"
        for command in commands:
            proc = subprocess.run(
                ["bash", "-c", command],
                check=False,
                cwd=workdir,
                env=session.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 0, (
                f"`make run` suggests {command!r}, which fails in a new terminal ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}\n--- banner:\n{banner}"
            )
        for block in blocks:
            session.run(block)
        problems = session.stop_background()
        assert not problems, "\n".join(problems)
        assert session.stop_server() == 0, "`make run` did not exit 0 on Ctrl-C:\n" + _tail(
            session.logs / "make-run.log"
        )
    finally:
        session.close()


def test_marker_parsing_keeps_order_and_options():
    text = (
        "<!-- readme-test: skip the server itself -->\n```bash\nmake run\n```\n\n"
        "<!-- readme-test: one -->\n```bash\necho 1\n```\n"
        "<!-- readme-test: two background -->\n\n```bash\nsleep 9\n```\n"
        "```bash\nnot marked\n```\n"
    )
    got = [(b.name, b.background, b.skip, b.text, b.line) for b in readme_blocks(text)]
    assert got == [
        ("skip", False, True, "make run\n", 2),
        ("one", False, False, "echo 1\n", 7),
        ("two", True, False, "sleep 9\n", 12),
    ]
