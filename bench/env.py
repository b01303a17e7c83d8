"""The separate virtualenv (bench/.env) that holds Django Channels and gunicorn for the comparison.

Channels, channels-redis, daphne and gunicorn are only ever installed there, from PyPI,
never copied into the repository. Versions are pinned so two runs of the benchmark compare the same
code; Django, uvicorn and websockets are pinned to the versions of the main venv so the
only difference between the two sides is Switchboard versus Channels. hiredis is added so
both sides parse Redis replies with the same C parser.

A marker file records the requirement list and the interpreter the venv was built with;
when it matches, the venv is reused and nothing is downloaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ENV_DIR = BENCH_DIR / ".env"
MARKER = ENV_DIR / "bench-requirements.json"

REQUIREMENTS: tuple[str, ...] = (
    "channels==4.3.2",
    "channels-redis==4.3.0",
    "daphne==4.2.3",
    "uvicorn[standard]==0.54.0",
    "django==5.2.19",
    "websockets==17.4",
    "hiredis==3.5.0",
    # The plain Django servers of the HTTP scenarios (gunicorn: WSGI, never a project
    # dependency) and the PostgreSQL driver and pool of the http-db scenario.
    "gunicorn==27.0.1",
    "psycopg[binary]==3.3.9",
    "psycopg-pool==3.3.3",
    # Only for the plot in docs/img/ (bench/plot.py), never a project dependency.
    "matplotlib==3.11.2",
)


class BenchEnvError(RuntimeError):
    """The comparison venv could not be created or installed."""


def env_python() -> Path:
    """Interpreter of the comparison venv."""
    return ENV_DIR / "bin" / "python"


def _wanted_marker() -> dict[str, object]:
    return {"requirements": list(REQUIREMENTS), "python": sys.version.split()[0]}


def is_ready() -> bool:
    """True when the venv exists and was installed with exactly :data:`REQUIREMENTS`."""
    if not env_python().exists() or not MARKER.exists():
        return False
    try:
        return bool(json.loads(MARKER.read_text()) == _wanted_marker())
    except (OSError, ValueError):
        return False


def ensure_env(*, log: bool = True) -> Path:
    """Create or reuse bench/.env; returns its interpreter. Installs only when the marker differs."""
    if is_ready():
        return env_python()
    if log:
        print(f"bench: creating comparison venv {ENV_DIR} ({', '.join(REQUIREMENTS)})", flush=True)
    # The same base interpreter as the main venv, so Python itself is not a variable.
    builder = venv.EnvBuilder(with_pip=True, clear=not env_python().exists())
    builder.create(ENV_DIR)
    command = [str(env_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q", *REQUIREMENTS]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise BenchEnvError(f"pip install into {ENV_DIR} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    MARKER.write_text(json.dumps(_wanted_marker(), indent=2))
    return env_python()


def freeze(python: Path | str) -> dict[str, str]:
    """Installed distributions of an interpreter, name to version (for the report)."""
    code = (
        "import json, importlib.metadata as m;"
        "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
    )
    result = subprocess.run([str(python), "-c", code], check=False, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return {}
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()}
