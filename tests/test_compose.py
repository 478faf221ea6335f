"""docker-compose.yml and the local cluster describe the same three nodes.

No container engine runs here, so the compose file is read, not run: every node config it
mounts must exist and be the file agentlab.start(cluster=3) runs for that node, and service
names, routes, ports, volumes, the image's server version and the jupyter service's
AGENTLAB_NATS_URL must agree with the configs. The failover itself runs in test_cluster.py,
from the very same files.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from agentlab import find_nats_server
from agentlab.cluster import LocalCluster, NodeConfig

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
NODES = ["nats-1", "nats-2", "nats-3"]


# ---------------------------------------------------------------------------------------------
# reading the compose file


def _scalar(text: str):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text.startswith("["):
        assert text.endswith("]"), f"flow sequence on one line only: {text}"
        items = re.findall(r'\s*("[^"]*"|\'[^\']*\'|[^,]+)\s*(?:,|$)', text[1:-1])
        return [_scalar(i) for i in items if i.strip()]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return {"true": True, "false": False, "null": None, "": None}.get(text, text)


def _strip_comment(line: str) -> str:
    out, quote = [], None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            break
        out.append(c)
    return "".join(out).rstrip()


def load_compose_subset(text: str):
    """The YAML this compose file is written in: block mappings and sequences, one-line flow
    sequences, plain and quoted scalars, comments. (Checked against PyYAML when present; the
    test extras do not install it.)"""
    stripped = (_strip_comment(line) for line in text.splitlines())
    lines = [(len(s) - len(s.lstrip(" ")), s.strip()) for s in stripped if s.strip()]

    def block(i: int, indent: int):
        if lines[i][1].startswith("- "):
            out = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                out.append(_scalar(lines[i][1][2:]))
                i += 1
            return out, i
        mapping = {}
        while i < len(lines) and lines[i][0] == indent:
            key, sep, rest = lines[i][1].partition(":")
            assert sep, f"not a mapping entry: {lines[i][1]}"
            key = _scalar(key)
            if rest.strip():
                mapping[key] = _scalar(rest)
                i += 1
            elif i + 1 < len(lines) and lines[i + 1][0] > indent:
                mapping[key], i = block(i + 1, lines[i + 1][0])
            else:
                mapping[key] = None
                i += 1
        return mapping, i

    data, end = block(0, 0)
    assert end == len(lines), f"could not read line: {lines[end][1]}"
    return data


@pytest.fixture(scope="module")
def compose() -> dict:
    data = load_compose_subset(COMPOSE.read_text(encoding="utf-8"))
    try:
        import yaml
    except ImportError:
        return data
    assert data == yaml.safe_load(COMPOSE.read_text(encoding="utf-8")), \
        "the compose file uses YAML this test's reader gets wrong"
    return data


def _mounts(service: dict) -> dict[str, str]:
    """container path -> host source, for the service's volumes (short syntax)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        out[target] = source
    return out


def _published(service: dict) -> dict[int, int]:
    """container port -> host port."""
    out = {}
    for port in service.get("ports", []):
        *host, container = str(port).split(":")
        out[int(container)] = int(host[-1])
    return out


def _flag(command: list[str], name: str) -> str:
    assert name in command, f"{name} is not in {command}"
    return command[command.index(name) + 1]


# ---------------------------------------------------------------------------------------------
# the checks


def test_services_are_the_three_nodes_and_jupyter(compose):
    assert set(compose["services"]) == {*NODES, "jupyter"}


@pytest.mark.parametrize("number", [1, 2, 3])
def test_each_node_mounts_the_config_the_local_cluster_runs(compose, number):
    name = f"nats-{number}"
    service = compose["services"][name]
    config_in_container = _flag(service["command"], "--config")
    source = _mounts(service)[config_in_container]
    mounted = (ROOT / source).resolve()
    assert mounted.is_file(), f"{name} mounts {source}, which does not exist"
    # The file agentlab.start(cluster=3) runs for this node is this very file.
    local = LocalCluster(3)
    assert local.configs[number - 1].path == mounted
    assert local.configs[number - 1].server_name == name
    assert any(v.endswith(":ro") and v.startswith(source) for v in service["volumes"])


def test_routes_name_the_services_and_their_cluster_ports(compose):
    configs = {name: _config(compose, name) for name in NODES}
    assert {c.cluster_name for c in configs.values()} == {"agentlab"}
    for name, config in configs.items():
        assert config.server_name == name, "server_name must be the service name"
        targets = config.route_targets()
        assert {host for host, _ in targets} == set(NODES), f"{name} routes: {targets}"
        for host, port in targets:
            assert port == configs[host].cluster_port, f"{name} routes to {host}:{port}"


def test_ports_and_volumes_agree(compose):
    services, host_ports = compose["services"], []
    for name in NODES:
        service, config = services[name], _config(compose, name)
        published = _published(service)
        assert set(published) == {config.client_port, config.http_port}, \
            f"{name} must publish its client and monitoring ports, got {service['ports']}"
        host_ports += published.values()
        assert all(str(p).startswith("127.0.0.1:") for p in service["ports"])
        # JetStream's store: --store_dir on a named volume declared at the top level.
        store = _flag(service["command"], "--store_dir")
        volume = _mounts(service)[store]
        assert volume in compose["volumes"], f"{name} stores on {volume}, not a named volume"
        # The health check asks this node's own monitoring port.
        assert f":{config.http_port}/healthz" in " ".join(service["healthcheck"]["test"])
    assert len(set(host_ports)) == len(host_ports), "two nodes publish the same host port"
    assert len({_mounts(services[n])[_flag(services[n]["command"], "--store_dir")]
                for n in NODES}) == 3, "each node needs a volume of its own"


def test_the_image_runs_the_nats_server_release_of_the_wheel(compose):
    version = subprocess.run([str(find_nats_server()), "--version"], capture_output=True,
                             text=True, timeout=30).stdout
    major_minor = re.search(r"v(\d+\.\d+)\.", version).group(1)
    for name in NODES:
        image = compose["services"][name]["image"]
        assert re.fullmatch(rf"nats:{re.escape(major_minor)}(\.\d+)?(-alpine)?", image), \
            f"{name} runs {image}; the local cluster runs nats-server {major_minor}"


def test_jupyter_has_the_repository_and_the_cluster_url(compose):
    jupyter = compose["services"]["jupyter"]
    mounts = _mounts(jupyter)
    assert mounts.get(jupyter["working_dir"]) == ".", "the repository is mounted as the workdir"
    urls = jupyter["environment"]["AGENTLAB_NATS_URL"].split(",")
    expected = [f"nats://{name}:{_config(compose, name).client_port}" for name in NODES]
    assert urls == expected
    assert set(jupyter["depends_on"]) == set(NODES)
    # Set up as mybinder.org sets it up, with the Python binder/runtime.txt pins.
    script = jupyter["command"][-1]
    for step in ("binder/requirements.txt", "binder/postBuild", "binder/start"):
        assert step in script and (ROOT / step).is_file()
    runtime = (ROOT / "binder/runtime.txt").read_text().strip().removeprefix("python-")
    assert jupyter["image"].startswith(f"python:{runtime}")


def _config(compose: dict, name: str) -> NodeConfig:
    service = compose["services"][name]
    return NodeConfig.read(ROOT / _mounts(service)[_flag(service["command"], "--config")])
