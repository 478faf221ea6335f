"""EmbeddedServer against the real nats-server binary: no mocks, real processes only."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
from pathlib import Path

import nats
import pytest

from agentlab.core.server import EmbeddedServer, ServerStartError, find_nats_server
from agentlab.errors import AgentlabError

ROOT = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG and /proc are Linux-only")


def alive(pid: int) -> bool:
    """True while pid is a live process; a zombie (dead, not yet reaped) counts as gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    state = re.search(r"^State:\s+(\S)", status, re.M)
    return bool(state) and state.group(1) not in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.01)
    return not alive(pid)


def kill_if_nats(pid: int) -> None:
    """Safety net for a failing test: never leave a nats-server behind (and never kill
    anything else that reused the pid)."""
    try:
        if "nats-server" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def end_child(proc: subprocess.Popen, nats_pid: int | None) -> None:
    """Safety net for a failing test: end the child Python, then any nats-server it left."""
    proc.kill()
    proc.wait()
    proc.stdout.close()
    if nats_pid:
        kill_if_nats(nats_pid)


@pytest.fixture
def server():
    srv = EmbeddedServer(max_memory="64MB", max_file="512MB", max_payload="2MB")
    yield srv
    srv.stop()


def test_find_nats_server_prefers_this_interpreters_scripts_dir():
    exe = find_nats_server()
    assert exe == Path(sysconfig.get_path("scripts")) / exe.name
    assert os.access(exe, os.X_OK)


def test_start_connects_and_jetstream_works(server):
    t0 = time.perf_counter()
    assert server.start() is server
    elapsed = time.perf_counter() - t0
    print(f"\nstart-to-ready: {elapsed * 1000:.1f} ms (spawn-to-ready "
          f"{server.startup_seconds * 1000:.1f} ms)")
    assert elapsed < 2
    assert re.fullmatch(r"nats://127\.0\.0\.1:\d+", server.url)
    assert server.port == int(server.url.rsplit(":", 1)[1])
    assert server.monitor_url is None  # off unless asked for (tests/test_closed_by_default.py)
    assert server.is_running and alive(server.pid)
    assert f"pid={server.pid} running" in repr(server) and server.url in repr(server)

    async def use() -> None:
        nc = await nats.connect(server.url, **server.login())
        try:
            assert nc.max_payload == 2 * 1024 * 1024
            js = nc.jetstream()
            await js.account_info()
            await js.add_stream(name="SMOKE", subjects=["smoke.>"])
            ack = await js.publish("smoke.1", b"hello")
            assert (ack.stream, ack.seq) == ("SMOKE", 1)
            assert (await js.get_msg("SMOKE", 1)).data == b"hello"
        finally:
            await nc.close()

    asyncio.run(use())


@pytest.fixture
def monitored():
    srv = EmbeddedServer(max_memory="64MB", max_file="512MB", max_payload="2MB", monitor=True)
    yield srv
    srv.stop()


def test_monitoring_reports_configured_limits(monitored):
    server = monitored.start()
    varz = server.varz()
    assert varz["server_name"] == "agentlab"
    assert varz["max_payload"] == 2 * 1024 * 1024
    assert varz["jetstream"]["config"]["max_memory"] == 64 * 1024 * 1024
    assert varz["jetstream"]["config"]["max_storage"] == 512 * 1024 * 1024
    jsz = server.jsz()
    assert jsz["config"]["max_memory"] == 64 * 1024 * 1024
    assert jsz["config"]["max_storage"] == 512 * 1024 * 1024
    assert jsz["config"]["store_dir"].startswith(str(server.store_dir))
    assert not jsz["config"].get("sync_always", False)


def test_stop_ends_the_process_and_removes_the_temp_store(server):
    server.start()
    pid, store = server.pid, server.store_dir
    assert store.is_dir() and server.config_path.is_file() and server.log_path.is_file()
    server.stop()
    assert not alive(pid)
    assert not store.exists()
    assert not server.is_running and "stopped" in repr(server)
    server.stop()  # idempotent


def test_user_store_dir_is_kept(tmp_path):
    store = tmp_path / "store"
    with EmbeddedServer(store_dir=store) as srv:
        pid = srv.pid
        assert srv.store_dir == store.resolve()
    assert not alive(pid)
    assert (store / "nats-server.log").is_file() and (store / "jetstream").is_dir()


def test_bad_size_is_refused_before_starting():
    with pytest.raises(ValueError, match="max_memory"):
        EmbeddedServer(max_memory="lots")


def test_bad_extra_config_reports_the_servers_complaint():
    srv = EmbeddedServer(extra_config="authorization { users = [ {user: a password: }")
    with pytest.raises(ServerStartError) as info:
        srv.start(timeout=5)
    message = str(info.value)
    assert isinstance(info.value, AgentlabError) and isinstance(info.value, RuntimeError)
    assert "Parse error on line" in message  # nats-server's own words, from its stderr
    assert "authorization { users" in message  # the offending config line, quoted
    assert not srv.is_running and not alive(srv.pid)
    assert not srv.store_dir.exists()  # the temp store of a failed start is not leaked


def test_kill_then_restart_keeps_url_and_jetstream_data():
    srv = EmbeddedServer(sync_always=True, monitor=True)

    async def scenario() -> None:
        srv.start()
        url, first_pid = srv.url, srv.pid
        assert srv.jsz()["config"]["sync_always"] is True
        nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.05,
                                **srv.login())
        try:
            js = nc.jetstream()
            await js.add_stream(name="FAULT", subjects=["fault.>"], storage="file")
            for i in range(5):
                await js.publish(f"fault.{i}", f"m{i}".encode())

            await asyncio.to_thread(srv.kill)
            assert not alive(first_pid)
            assert srv.store_dir.is_dir()  # a kill leaves even a temp store in place
            await asyncio.to_thread(srv.restart)
            assert srv.url == url and srv.pid != first_pid and srv.is_running

            # The same client finds the server again at the same URL.
            deadline = time.monotonic() + 5
            while not nc.is_connected and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert nc.is_connected
            info = await js.stream_info("FAULT")
            assert info.state.messages == 5
            assert [(await js.get_msg("FAULT", i + 1)).data for i in range(5)] == [
                f"m{i}".encode() for i in range(5)]
            assert (await js.publish("fault.5", b"after")).seq == 6
        finally:
            await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        srv.stop()
    assert not srv.store_dir.exists()


def test_failed_restart_on_a_taken_port_keeps_the_store():
    srv = EmbeddedServer()
    try:
        srv.start()
        port = srv.port
        srv.kill()
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            with pytest.raises(ServerStartError, match="address already in use"):
                srv.restart(timeout=5)
        assert (srv.store_dir / "jetstream").is_dir()  # data a kill left is never deleted
        srv.restart()
        assert srv.port == port and srv.is_running
    finally:
        srv.stop()


def test_restart_from_a_short_lived_thread_survives_that_thread():
    # PDEATHSIG fires when the forking *thread* dies: the fork must not happen on this one.
    srv = EmbeddedServer()
    try:
        worker = threading.Thread(target=srv.start)
        worker.start()
        worker.join()
        time.sleep(0.3)
        assert srv.is_running, "server died with the thread that called start()"
    finally:
        srv.stop()


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_no_orphan_when_python_exits_normally():
    done = subprocess.run(_python("""
        from agentlab import EmbeddedServer
        s = EmbeddedServer().start()
        print(s.pid, s.store_dir, flush=True)
        """), capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    pid_text, store = done.stdout.split()
    pid = int(pid_text)
    try:
        assert wait_gone(pid, 2)
        assert not Path(store).exists()  # only the atexit stop() removes it
    finally:
        kill_if_nats(pid)


@linux_only
@pytest.mark.parametrize("start_on", ["main", "thread"])
def test_no_orphan_when_python_is_sigkilled(start_on):
    proc = subprocess.Popen(_python(f"""
        import threading, time
        from agentlab import EmbeddedServer
        s = EmbeddedServer()
        if {start_on!r} == "thread":
            t = threading.Thread(target=s.start); t.start(); t.join()
        else:
            s.start()
        print(s.pid, s.store_dir, flush=True)
        time.sleep(60)
        """), stdout=subprocess.PIPE, text=True, cwd=ROOT)
    pid = store = None
    try:
        pid_text, store = proc.stdout.readline().split()
        pid = int(pid_text)
        time.sleep(0.2)
        assert alive(pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_gone(pid, 3), "nats-server outlived its SIGKILLed parent"
    finally:
        end_child(proc, pid)
        if store:  # nobody is left to remove the temp store of a SIGKILLed owner
            shutil.rmtree(store, ignore_errors=True)


@linux_only
def test_no_orphan_when_jupyter_kernel_is_restarted():
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(ROOT))
    kc = km.client()
    kc.start_channels()
    pid = store = None
    try:
        kc.wait_for_ready(timeout=60)
        printed: list[str] = []

        def keep_stdout(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                printed.append(msg["content"]["text"])

        reply = kc.execute_interactive(
            "from agentlab.core.server import EmbeddedServer\n"
            "server = EmbeddedServer().start()\nprint(server.pid, server.store_dir)",
            timeout=60, output_hook=keep_stdout)
        assert reply["content"]["status"] == "ok", reply["content"]
        pid_text, store = "".join(printed).split()
        pid = int(pid_text)
        assert alive(pid)

        # Interrupting the kernel (SIGINT to its process group) must not hit the server.
        kc.execute("import time; time.sleep(30)")
        time.sleep(0.5)
        km.interrupt_kernel()
        deadline = time.monotonic() + 10
        while km.is_alive() and time.monotonic() < deadline:
            msg = kc.get_iopub_msg(timeout=10)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        time.sleep(0.2)
        assert alive(pid), "a kernel interrupt killed the server"

        km.restart_kernel(now=True)  # SIGKILLs the kernel process
        assert wait_gone(pid, 5), "nats-server outlived its restarted Jupyter kernel"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        if pid:
            kill_if_nats(pid)
        if store:
            shutil.rmtree(store, ignore_errors=True)


@linux_only
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_forever_stops_cleanly_on_ctrl_c_and_sigterm(sig):
    proc = subprocess.Popen(
        _python("from agentlab.programs.server import serve_forever; "
                "raise SystemExit(serve_forever())"),
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    pid = None
    try:
        lines = []
        while not lines or "Ctrl-C" not in lines[-1]:
            line = proc.stdout.readline()
            assert line, f"serve_forever ended early: {lines}"
            lines.append(line)
        text = "".join(lines)
        url = re.search(r"NATS URL:\s+(nats://127\.0\.0\.1:\d+)", text).group(1)
        assert re.search(r"Monitoring:\s+off \(agentlab server --monitor\)", text)
        store = Path(re.search(r"Store:\s+(\S+)", text).group(1))
        pid = int(next(store.glob("*.ports")).name.rsplit("_", 1)[1].split(".")[0])
        assert alive(pid)
        assert f"export AGENTLAB_NATS_URL={url}\n" in text
        credentials = re.search(r"export AGENTLAB_NATS_CREDENTIALS=(\S+)", text).group(1)
        context = json.loads(Path(credentials).read_text())
        assert context["password"] not in text  # the banner names the file, never the secret

        async def ping() -> None:
            nc = await nats.connect(url, user=context["user"], password=context["password"])
            await nc.flush()
            await nc.close()

        asyncio.run(ping())
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        assert not alive(pid) and not store.exists()
    finally:
        end_child(proc, pid)
