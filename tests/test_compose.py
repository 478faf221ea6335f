"""docker-compose.yml and the local cluster describe the same three nodes.

No container engine runs here, so the compose file is read, not run: every node config it
mounts must exist and be the file agentlab.start(cluster=3) runs for that node, and service
names, routes, ports, volumes, the image's server version and the jupyter service's
AGENTLAB_NATS_URL must agree with the configs. The failover itself runs in test_cluster.py,
from the very same files.

The "observability" profile is read the same way, with the configs it mounts (deploy/otel,
deploy/prometheus): one prometheus-nats-exporter per node reading that node's monitoring
port, Prometheus scraping exactly the exporters, `agentlab metrics` and the collector on the
ports they listen on, the collector sending spans to the Jaeger service.
"""

from __future__ import annotations

import re
import shlex
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
    """The YAML this compose file (and the profile's configs) are written in: block mappings
    and sequences (of scalars, or of mappings: ``- key: value``), one-line flow sequences,
    plain and quoted scalars, comments. (Checked against PyYAML when present; the test extras
    do not install it.)"""
    stripped = (_strip_comment(line) for line in text.splitlines())
    lines = [(len(s) - len(s.lstrip(" ")), s.strip()) for s in stripped if s.strip()]

    def block(i: int, indent: int):
        if lines[i][1].startswith("- "):
            out = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                item = lines[i][1][2:]
                if re.match(r"[A-Za-z_][\w.-]*:(\s|$)", item):  # "- key: value": a mapping
                    lines[i] = (indent + 2, item)
                    value, i = block(i, indent + 2)
                    out.append(value)
                else:
                    out.append(_scalar(item))
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


def load_yaml(path: Path) -> dict:
    data = load_compose_subset(path.read_text(encoding="utf-8"))
    try:
        import yaml
    except ImportError:
        return data
    assert data == yaml.safe_load(path.read_text(encoding="utf-8")), \
        f"{path.name} uses YAML this test's reader gets wrong"
    return data


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


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
    default = {name for name, s in compose["services"].items() if not s.get("profiles")}
    assert default == {*NODES, "jupyter"}


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


# ---------------------------------------------------------------------------------------------
# the "observability" profile

PROFILE = "observability"
EXPORTERS = [f"nats-exporter-{n}" for n in (1, 2, 3)]


@pytest.fixture(scope="module")
def observability(compose) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items()
            if PROFILE in (s.get("profiles") or [])}


def _mounted(service: dict, target: str) -> Path:
    source = _mounts(service)[target]
    path = (ROOT / source).resolve()
    assert path.is_file(), f"{source} (mounted at {target}) does not exist"
    assert any(v.startswith(source) and v.endswith(":ro") for v in service["volumes"])
    return path


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.removeprefix("http://"), int(port)


def test_the_profile_has_the_collector_the_ui_the_exporters_prometheus_and_agentlab(
        observability):
    assert set(observability) == {*EXPORTERS, "agentlab-metrics", "otel-collector", "jaeger",
                                  "prometheus"}


def test_every_published_port_is_on_loopback_and_used_once(compose):
    host_ports = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        host_ports += _published(service).values()
    assert len(set(host_ports)) == len(host_ports), sorted(host_ports)


@pytest.mark.parametrize("number", [1, 2, 3])
def test_each_node_has_the_official_exporter_reading_its_monitoring_port(
        compose, observability, number):
    node, service = f"nats-{number}", observability[f"nats-exporter-{number}"]
    assert service["image"].startswith("natsio/prometheus-nats-exporter:")
    command = service["command"]
    assert command[-1] == f"http://{node}:{_config(compose, node).http_port}"
    assert int(_flag(command, "-port")) == 7777 and 7777 in _published(service)
    for endpoint in ("-varz", "-connz", "-routez", "-healthz", "-jsz=all"):
        assert endpoint in command
    assert node in service["depends_on"]


def test_prometheus_scrapes_the_exporters_agentlab_and_the_collector(observability):
    prometheus = observability["prometheus"]
    path = _mounted(prometheus, "/etc/prometheus/prometheus.yml")
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    jobs = {job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
            for job in load_yaml(path)["scrape_configs"]}
    assert set(jobs) == {"nats", "agentlab", "otel-collector"}
    assert sorted(jobs["nats"]) == [f"{e}:7777" for e in EXPORTERS]
    metrics = observability["agentlab-metrics"]
    port = _flag(metrics["command"][-1].split(), "--port")
    assert jobs["agentlab"] == [f"agentlab-metrics:{port}"]
    collector = load_yaml(_mounted(observability["otel-collector"],
                                   "/etc/otelcol-contrib/config.yaml"))
    port = _host_port(collector["exporters"]["prometheus"]["endpoint"])[1]
    assert jobs["otel-collector"] == [f"otel-collector:{port}"]
    # Every target is a service of the profile, so it resolves on the compose network.
    for targets in jobs.values():
        assert {t.rsplit(":", 1)[0] for t in targets} <= set(observability)
    assert set(prometheus["depends_on"]) == {*EXPORTERS, "agentlab-metrics", "otel-collector"}


def test_agentlab_metrics_runs_from_the_repository_against_the_cluster(compose, observability):
    metrics = observability["agentlab-metrics"]
    assert _mounts(metrics)[metrics["working_dir"]] == "."
    assert metrics["environment"]["PYTHONPATH"] == metrics["working_dir"]
    script = metrics["command"][-1]
    assert "binder/requirements.txt" in script and (ROOT / "binder/requirements.txt").is_file()
    # prometheus_client is the metrics extra: pinned as constraints.txt pins it.
    pin = re.search(r"prometheus_client==(\S+)", script).group(1)
    assert f"prometheus_client=={pin}" in (ROOT / "constraints.txt").read_text()
    argv = script.split("&& exec ", 1)[1].split()
    assert argv[:4] == ["python", "-m", "agentlab", "metrics"]
    assert _flag(argv, "--host") == "0.0.0.0"  # reachable from the prometheus container
    port = int(_flag(argv, "--port"))
    assert _published(metrics) == {port: port}
    urls = _flag(argv, "--url").split(",")
    assert urls == [f"nats://{n}:{_config(compose, n).client_port}" for n in NODES]
    assert set(metrics["depends_on"]) == set(NODES)


def test_the_collector_takes_otlp_and_sends_spans_to_the_jaeger_service(compose,
                                                                          observability):
    service = observability["otel-collector"]
    assert service["image"].startswith("otel/opentelemetry-collector-contrib:")
    config = load_yaml(_mounted(service, _flag(service["command"], "--config")))
    protocols = config["receivers"]["otlp"]["protocols"]
    received = {_host_port(p["endpoint"])[1] for p in protocols.values()}
    assert received == {4317, 4318} and set(_published(service)) == received
    pipelines = config["service"]["pipelines"]
    for pipeline in pipelines.values():  # every component a pipeline names is configured
        for section in ("receivers", "processors", "exporters"):
            assert set(pipeline[section]) <= set(config[section] or {}), (section, pipeline)
    (exporter,) = pipelines["traces"]["exporters"]
    host, port = _host_port(config["exporters"][exporter]["endpoint"])
    assert exporter.split("/")[0] == "otlp_grpc" and (host, port) == ("jaeger", 4317)
    jaeger = observability["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/jaeger:2.")  # v2 takes OTLP natively
    assert 16686 in _published(jaeger) and "jaeger" in service["depends_on"]
    # The jupyter service's spans go to the collector, once a notebook turns exporting on.
    endpoint = compose["services"]["jupyter"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert _host_port(endpoint) == ("otel-collector", 4317)


# ---------------------------------------------------------------------------------------------
# the "agents" profile

ROLES = ["ceo", "cto", "cfo"]


@pytest.fixture(scope="module")
def agents_profile(compose) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items()
            if "agents" in (s.get("profiles") or [])}


def _worker_argv(service: dict) -> list[str]:
    """The worker's command line, from ``sh -c "exec python -m agentlab.programs.worker ..."``."""
    assert service["entrypoint"] == ["sh", "-c"]
    (script,) = service["command"]
    argv = shlex.split(script)
    assert argv[:4] == ["exec", "python", "-m", "agentlab.programs.worker"], script
    return argv[1:]


def test_the_agents_profile_is_the_streams_and_one_service_per_reference_role(agents_profile):
    from agentlab.org import REFERENCE_ROLES

    assert set(agents_profile) == {"streams", *ROLES}
    assert set(ROLES) == set(REFERENCE_ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_runs_the_worker_and_scales_with_compose_scale(compose, agents_profile, role):
    service = agents_profile[role]
    argv = _worker_argv(service)
    assert _flag(argv, "--role") == role
    # `docker compose up --scale cto=3` needs copies that can coexist: no fixed name, no host
    # port, and an instance name of each container's own (compose's $$ is a literal $).
    assert "container_name" not in service and "ports" not in service
    assert _flag(argv, "--instance") == f"{role}-$${{HOSTNAME}}"
    assert float(_flag(argv, "--wait-for-server")) > 0
    urls = service["environment"]["AGENTLAB_NATS_URL"].split(",")
    assert urls == [f"nats://{n}:{_config(compose, n).client_port}" for n in NODES]
    assert service["depends_on"] == {"streams": {"condition": "service_completed_successfully"}}
    assert service["restart"] == "unless-stopped"
    # SIGTERM finishes the tasks in hand: the grace period covers the worker's ack wait.
    assert int(service["stop_grace_period"].removesuffix("s")) > 30


def test_the_agents_run_the_kubernetes_image_and_the_streams_come_first(compose,
                                                                       agents_profile):
    import yaml

    import agentlab

    deployment = next(d for d in yaml.safe_load_all(
        (ROOT / "deploy/k8s/agents.yaml").read_text(encoding="utf-8")) if d["kind"] == "Deployment")
    (k8s_image,) = {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    for name, service in agents_profile.items():
        assert service["image"] == k8s_image == f"agentlab-worker:{agentlab.__version__}", name
        assert service["build"] == {"context": ".", "dockerfile": "deploy/k8s/Dockerfile"}
    assert (ROOT / "deploy/k8s/Dockerfile").is_file()
    streams = agents_profile["streams"]
    assert set(streams["depends_on"]) == set(NODES)
    assert all(c == {"condition": "service_healthy"} for c in streams["depends_on"].values())
    (script,) = streams["command"]
    assert "declare_replicated_streams(agentlab.connect(" in script
    assert script.rstrip(")").endswith(f", {len(NODES)}")  # a copy on every node
    assert streams["environment"] == agents_profile["cto"]["environment"]


# ---------------------------------------------------------------------------------------------
# the TLS variant: docker-compose.tls.yml over docker-compose.yml, with `agentlab certs`

COMPOSE_TLS = ROOT / "docker-compose.tls.yml"
CERTS_IN_NODE = "/etc/nats/certs"


@pytest.fixture(scope="module")
def compose_tls() -> dict:
    return load_yaml(COMPOSE_TLS)


@pytest.fixture(scope="module")
def deployment_certs(tmp_path_factory):
    from agentlab.programs.certs import write_deployment_certs

    return write_deployment_certs(tmp_path_factory.mktemp("certs"))


def _tls_conf(path: Path) -> dict:
    """A node's TLS config read as nats-server reads it: its include, then its own keys."""
    from agentlab.cluster import parse_conf

    text = path.read_text(encoding="utf-8")
    (include,) = re.findall(r'^include\s+"([^"]+)"\s*$', text, re.MULTILINE)
    own = parse_conf(re.sub(r"^include .*$", "", text, flags=re.MULTILINE), str(path))
    return {"include": include, **own}


def _merged_mounts(compose: dict, override: dict, name: str) -> dict[str, str]:
    """container path -> host source once compose merges the override (by mount target)."""
    return _mounts(compose["services"][name]) | _mounts(override["services"].get(name, {}))


def test_the_tls_override_changes_only_services_of_the_base_file_and_no_ports(compose,
                                                                              compose_tls):
    assert set(compose_tls["services"]) <= set(compose["services"])
    assert set(compose_tls) == {"services"}
    for name, service in compose_tls["services"].items():
        assert "ports" not in service and "image" not in service, name


@pytest.mark.parametrize("number", [1, 2, 3])
def test_each_tls_node_runs_its_tls_config_which_includes_the_node_file(compose, compose_tls,
                                                                       number):
    name = f"nats-{number}"
    service = compose_tls["services"][name]
    assert _flag(service["command"], "--store_dir") == \
        _flag(compose["services"][name]["command"], "--store_dir")  # the same volume
    mounts = _merged_mounts(compose, compose_tls, name)
    target = _flag(service["command"], "--config")
    source = ROOT / mounts[target]
    assert source == ROOT / "deploy/nats" / f"node-{number}-tls.conf" and source.is_file()
    conf = _tls_conf(source)
    # The include resolves beside the TLS config in the container, to this node's own file.
    included = str(Path(target).parent / conf["include"])
    assert (ROOT / mounts[included]).resolve() == (ROOT / "deploy/nats" /
                                                  f"node-{number}.conf").resolve()
    node = NodeConfig.read(ROOT / mounts[included])
    assert node.server_name == name
    # `cluster` replaces the included block whole: it must be that block, plus its tls.
    cluster = dict(conf["cluster"])
    route_tls = cluster.pop("tls")
    assert cluster == node.settings["cluster"]
    assert "verify" not in route_tls  # routes always verify both ways
    client_tls = conf["tls"]
    assert client_tls["verify"] is True  # mutual: the client certificate is the way in
    assert "allow_non_tls" not in client_tls and "allow_non_tls" not in conf
    assert "insecure" not in route_tls and "insecure" not in client_tls
    for block in (client_tls, route_tls):
        for key in ("cert_file", "key_file", "ca_file"):
            folder, file = block[key].rsplit("/", 1)
            assert folder == CERTS_IN_NODE, block
    assert mounts[CERTS_IN_NODE] == "./deploy/nats/certs"
    assert any(v == f"./deploy/nats/certs:{CERTS_IN_NODE}:ro" for v in service["volumes"])


def test_the_tls_configs_name_the_files_agentlab_certs_writes(deployment_certs):
    from agentlab.core.tls import LabCertificates

    written = {p.name for p in deployment_certs.directory.iterdir()}
    assert written == {LabCertificates.CA, LabCertificates.SERVER_CERT,
                       LabCertificates.SERVER_KEY, LabCertificates.CLIENT_CERT,
                       LabCertificates.CLIENT_KEY, "context.json", "host-context.json"}
    for number in (1, 2, 3):
        conf = _tls_conf(ROOT / "deploy/nats" / f"node-{number}-tls.conf")
        for block in (conf["tls"], conf["cluster"]["tls"]):
            assert {block[k].rsplit("/", 1)[1] for k in ("cert_file", "key_file", "ca_file")} \
                == {LabCertificates.SERVER_CERT, LabCertificates.SERVER_KEY, LabCertificates.CA}
    assert all(p.stat().st_mode & 0o077 == 0 for p in deployment_certs.directory.iterdir())


def test_the_server_certificate_names_every_node_its_routes_dial(deployment_certs):
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(deployment_certs.server_cert.read_bytes())
    dns = set(cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    for number in (1, 2, 3):
        node = NodeConfig.read(ROOT / "deploy/nats" / f"node-{number}.conf")
        assert {host for host, _ in node.route_targets()} <= dns
    assert "localhost" in dns


def test_every_agentlab_service_connects_over_tls_with_the_mounted_context(compose, compose_tls,
                                                                          deployment_certs):
    import json

    context = json.loads((deployment_certs.directory / "context.json").read_text())
    tls_url = ",".join(f"tls://{n}:{_config(compose, n).client_port}" for n in NODES)
    assert context["url"] == tls_url
    clients = [name for name, s in compose["services"].items()
               if "AGENTLAB_NATS_URL" in (s.get("environment") or {})
               or "python -m agentlab metrics" in " ".join(map(str, s.get("command") or []))]
    assert set(clients) == {"jupyter", "agentlab-metrics", "streams", "ceo", "cto", "cfo"}
    for name in clients:
        service = compose_tls["services"][name]
        env = service["environment"]
        assert env["AGENTLAB_NATS_URL"] == tls_url, name
        folder, file = env["AGENTLAB_NATS_CREDENTIALS"].rsplit("/", 1)
        assert file == "context.json"
        assert _merged_mounts(compose, compose_tls, name)[folder] == "./deploy/nats/certs"
        assert "--url nats://" not in " ".join(map(str, service.get("command") or
                                                   compose["services"][name].get("command")))
    host = json.loads((deployment_certs.directory / "host-context.json").read_text())
    published = [_published(compose["services"][n])[_config(compose, n).client_port]
                 for n in NODES]
    assert host["url"] == ",".join(f"tls://127.0.0.1:{p}" for p in published)
    assert all(Path(host[k]).is_absolute() and Path(host[k]).is_file()
               for k in ("ca", "cert", "key"))


def _node_in_tmp(deployment_certs, tmp_path: Path, number: int) -> Path:
    """node-N-tls.conf and node-N.conf side by side, the certs where this machine has them."""
    text = (ROOT / "deploy/nats" / f"node-{number}-tls.conf").read_text(encoding="utf-8")
    (tmp_path / f"node-{number}.conf").write_text(
        (ROOT / "deploy/nats" / f"node-{number}.conf").read_text(encoding="utf-8"))
    conf = tmp_path / f"node-{number}-tls.conf"
    conf.write_text(text.replace(CERTS_IN_NODE, str(deployment_certs.directory)))
    return conf


@pytest.mark.parametrize("number", [1, 2, 3])
def test_nats_server_accepts_each_tls_config_with_the_generated_certs(deployment_certs,
                                                                      tmp_path, number):
    checked = subprocess.run([str(find_nats_server()), "-t", "-c",
                              str(_node_in_tmp(deployment_certs, tmp_path, number))],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_a_tls_node_serves_the_generated_context_and_refuses_a_client_without_its_cert(
        deployment_certs, tmp_path, monkeypatch):
    """One node of the TLS variant, run for real on loopback: a client given a context like
    context.json (relative paths) gets in; without the client certificate it is refused."""
    import json
    import socket
    import ssl

    import agentlab
    from agentlab.core.tls import TlsFailed

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [str(find_nats_server()), "-c", str(_node_in_tmp(deployment_certs, tmp_path, 1)),
         "-a", "127.0.0.1", "-p", str(port), "-m", "0", "-sd", str(tmp_path / "data"),
         "--cluster_listen", "nats://127.0.0.1:-1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        context = json.loads((deployment_certs.directory / "context.json").read_text())
        context["url"] = f"tls://127.0.0.1:{port}"
        mine = deployment_certs.directory / "loopback-context.json"
        mine.write_text(json.dumps(context))
        monkeypatch.setenv("AGENTLAB_NATS_CREDENTIALS", str(mine))
        url = context["url"]
        for _ in range(200):  # until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                proc.poll()
                assert proc.returncode is None, "nats-server exited"
                import time

                time.sleep(0.05)
        with agentlab.Client.open(url, name="compose-tls") as client:
            sub = client.subscribe("compose.tls")
            client.publish("compose.tls", "over mutual TLS")
            assert sub.next(timeout=5).text == "over mutual TLS"
        no_cert = ssl.create_default_context(cafile=str(deployment_certs.ca_file))
        with pytest.raises(TlsFailed):
            agentlab.Client.open(url, name="no-cert", tls=no_cert)
    finally:
        proc.terminate()
        proc.wait(10)
