"""The two CLIs e2e tests drive: the official StackStorm CLI (st2client 3.9.0 from PyPI) in its
own virtualenv, for compatibility tests, and the project's own `st2` (run_project).

The virtualenv is built once, at the repository root in ``.venv-st2client/``
(or ST2_TEST_ST2CLIENT_VENV), and reused while its ``st2`` reports 3.9.0.
When it cannot be built (no index reachable) tests skip, unless
ST2_TEST_REQUIRE_ST2CLIENT=1 (CI), where they fail.

    from tests.e2e.st2client_compat import official_st2, run_official  # noqa: F401 (fixture)

    def test_x(official_st2, api_url):
        result = run_official(["action", "list", "-j"], api_url)
        assert result.returncode == 0
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import eventlet
import pytest

ST2CLIENT_VERSION = "3.9.0"
REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_PATH = Path(os.environ.get("ST2_TEST_ST2CLIENT_VENV", REPO_ROOT / ".venv-st2client"))
REQUIRE = os.environ.get("ST2_TEST_REQUIRE_ST2CLIENT") == "1"
INSTALL_TIMEOUT = 600
RUN_TIMEOUT = 120
# CLI runs side_by_side starts at once: each is a ~1 s process, and 4 keep 2 cores busy.
SIDE_BY_SIDE = 4

T = TypeVar("T")


class OfficialClientUnavailable(RuntimeError):
    """The official client could not be installed."""


def _st2_path(folder: Path) -> Path:
    return folder / ("Scripts/st2.exe" if sys.platform == "win32" else "bin/st2")


def _installed(folder: Path) -> bool:
    st2 = _st2_path(folder)
    if not st2.exists():
        return False
    done = subprocess.run([str(st2), "--version"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    # argparse prints the version on stdout (stderr on older Pythons).
    return f"st2 {ST2CLIENT_VERSION}," in done.stdout + done.stderr


_checked: set[Path] = set()


def ensure_official_st2(folder: Path = VENV_PATH) -> Path:
    """The path of st2client 3.9.0's `st2`, installing it into folder the first time."""
    if folder in _checked or _installed(folder):
        _checked.add(folder)
        return _st2_path(folder)
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    python = folder / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           f"st2client=={ST2CLIENT_VERSION}"],
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    if done.returncode != 0 or not _installed(folder):
        raise OfficialClientUnavailable(
            f"pip install st2client=={ST2CLIENT_VERSION} into {folder} failed:\n{done.stderr[-2000:]}")
    _checked.add(folder)
    return _st2_path(folder)


@pytest.fixture(scope="session")
def official_st2() -> Path:
    """Session fixture: the official `st2` executable (skips when it cannot be installed)."""
    try:
        return ensure_official_st2()
    except (OfficialClientUnavailable, subprocess.TimeoutExpired, OSError) as error:
        if REQUIRE:
            pytest.fail(f"st2client {ST2CLIENT_VERSION} is required (ST2_TEST_REQUIRE_ST2CLIENT=1): {error}")
        pytest.skip(f"st2client {ST2CLIENT_VERSION} is not available: {error}")


def official_env(base_url: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the official CLI runs in: the API at base_url, no user config, no ST2_* leaking in."""
    api_url = base_url.rstrip("/")
    if not api_url.endswith("/v1"):
        api_url += "/v1"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ST2_")}
    clean.update({
        "ST2_API_URL": api_url,
        # No config means no login attempt: credentials, when a test needs them, come in env.
        "ST2_CLI_SKIP_CONFIG": "1",
        "COLUMNS": "200",
        "PYTHONWARNINGS": "ignore",
    })
    clean.update(env or {})
    return clean


def run_official(args: list[str], base_url: str, env: dict[str, str] | None = None,
                 timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """Run the official `st2 <args>` against the API at base_url (".../v1" added when missing)."""
    st2 = ensure_official_st2()
    return subprocess.run([str(st2), *args], capture_output=True, text=True, timeout=timeout,
                          env=official_env(base_url, env))


PROJECT_ST2 = Path(sys.executable).with_name("st2")


def run_project(args: list[str], base_url: str, env: dict[str, str] | None = None,
                timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """The project's `st2 <args>` against the API at base_url, with no user config nor ST2_* leaking in."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ST2_")}
    clean.update({"ST2_BASE_URL": base_url, "ST2_API_URL": f"{base_url}/v1", "ST2_CLI_SKIP_CONFIG": "1",
                  "COLUMNS": "200", **(env or {})})
    return subprocess.run([str(PROJECT_ST2), *args], capture_output=True, text=True, timeout=timeout, env=clean)


def side_by_side(calls: Iterable[Callable[[], T]], width: int = SIDE_BY_SIDE) -> list[T]:
    """Run independent CLI calls (zero-argument callables) at the same time; their results, in order.

    A CLI run is mostly its interpreter loading the client (about a second of CPU), and the
    official `st2 run` then polls every 2 s: run side by side, those waits overlap instead of
    adding up. The suite runs monkey-patched by eventlet (tests/conftest.py), so each call's
    subprocess wait is green and a GreenPool runs them concurrently. Only for calls that do not
    depend on each other's effects: a command that reads what another changes runs after it.
    """
    pool = eventlet.GreenPool(width)
    return list(pool.imap(lambda call: call(), calls))
