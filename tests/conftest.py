"""Shared pytest fixtures: where the built binaries are, and how to run them."""
import os
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("PIXELMILL_BUILD", ROOT / "build"))
SANITIZED = os.environ.get("PIXELMILL_SANITIZED") == "1"


def tool(name: str) -> str:
    """Path of a binary built from the project (pixelmill or a tests/tools helper)."""
    p = BUILD / name
    if not p.exists():
        raise FileNotFoundError(f"{p} is not built; run scripts/build.sh")
    return str(p)


def run(args, check=True, timeout=600, **kw):
    """Run a command, capture text output; on unexpected failure show its stderr."""
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} exited {r.returncode}\nstdout:\n{r.stdout}\n"
                             f"stderr:\n{r.stderr}")
    return r


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (for a server the test starts)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def mpirun(np_, args, **kw):
    """Run under real mpirun with np_ ranks (oversubscribed, root allowed)."""
    return run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(np_),
                *args], **kw)


@pytest.fixture
def pixelmill():
    return tool("pixelmill")
