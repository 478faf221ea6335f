"""Helpers shared by the test modules that drive reference agents on a real server."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition", *,
             interval: float = 0.02) -> Any:
    """Poll ``condition()`` until it is truthy and return that value; AssertionError naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def raw_login(url: str) -> dict[str, str]:
    """``user=``/``password=`` for a plain nats-py connection to a server this process runs
    (agentlab's servers admit only their own login): ``nats.connect(url, **raw_login(url))``."""
    from agentlab.core.credentials import login_for

    found = login_for(url)
    return found.kwargs() if found else {}


def credentials_env(url: str) -> dict[str, str]:
    """``AGENTLAB_NATS_CREDENTIALS`` of the server this process runs at ``url`` (the file
    ``client_env()`` names), for a subprocess given the URL by ``--url`` or the environment;
    empty for any other URL."""
    from agentlab.core.credentials import credentials_env_for

    return credentials_env_for(url)


def stored(client, stream: str, subject: str) -> int:
    """How many messages ``stream`` holds on exactly ``subject`` (the work queue's depth)."""
    js = client.nc.jetstream()
    info = client._bridge.run(js.stream_info(stream, subjects_filter=subject), operation="info")
    return (info.state.subjects or {}).get(subject, 0)


# jupyter_client replaces a kernelspec's bare "python" with sys.executable.
_PYTHON_ALIASES = {"python", f"python{sys.version_info[0]}",
                   "python{}.{}".format(*sys.version_info[:2])}


def this_venv_kernel(tmp_path: Path, monkeypatch: Any, name: str) -> str:
    """A kernelspec that runs this interpreter: ``python3`` if it does, else a temporary one
    called ``name`` (found through JUPYTER_PATH), so notebooks see this venv's packages."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
        # Compare paths, not files: a venv's python is a symlink to the base interpreter, and
        # running the base interpreter directly would not see this venv's packages.
        if argv0 in _PYTHON_ALIASES or os.path.abspath(argv0) == os.path.abspath(sys.executable):
            return "python3"
    except NoSuchKernel:
        pass
    spec_dir = tmp_path / "jupyter" / "kernels" / name
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"{name} (this venv)", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        p for p in (str(tmp_path / "jupyter"), os.environ.get("JUPYTER_PATH")) if p))
    return name


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child process, without a server or login to inherit:
    it must find its own (unbuffered, wide output, plus ``extra``)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("AGENTLAB_NATS_URL", "AGENTLAB_NATS_CREDENTIALS")}
    return env | {"PYTHONUNBUFFERED": "1", "COLUMNS": "200"} | extra


def lead_on(client, node: str, stream: str, consumer: str | None = None,
            timeout: float = 30.0) -> None:
    """Move the leadership of ``stream`` (or of its ``consumer``) to cluster node ``node``:
    a leader stepdown that names it as preferred, asked again until it leads."""
    what = f"CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}" if consumer else \
        f"STREAM.LEADER.STEPDOWN.{stream}"
    request = json.dumps({"placement": {"preferred": node}}).encode()

    def led_there() -> bool:
        try:
            info = client.js.consumer_info(stream, consumer) if consumer else \
                client.js.stream_info(stream)
            if info.cluster is not None and info.cluster.leader == node:
                return True
            client.request(f"$JS.API.{what}", request, timeout=5)
        except Exception:  # mid-election: asked again
            pass
        return False

    wait_for(led_there, timeout, f"{stream} {consumer or ''} led by {node}", interval=0.5)
