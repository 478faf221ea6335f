"""deploy/k8s: valid manifests, and the same numbers as the autoscaler and the compose cluster.

No Kubernetes runs here, so the files are validated, not applied: the Job and the Deployment
against the Kubernetes schemas (kubernetes-validate, strict: an unknown field fails), the
ScaledObject against KEDA's CRD schema vendored in deploy/k8s/schemas (every object closed
to unknown fields, as strict validation would be). Then what must agree does: KEDA's
thresholds, bounds and cooldown are agentlab.org.autoscale's defaults; the Helm values make
a three-node JetStream cluster running the compose file's nats-server; the Deployment runs
the worker for the consumer the trigger watches, in the account deploy/nats gives agentlab.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import kubernetes_validate
import pytest
import yaml

from agentlab.org import TASK_STREAM
from agentlab.org.autoscale import (
    ACTIVATION_LAG,
    COOLDOWN,
    LAG_THRESHOLD,
    MAX_REPLICAS,
    Autoscaler,
)

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.37.0"  # the newest schemas kubernetes-validate 1.37 ships
NO_CLIENT = SimpleNamespace(_bridge=None)  # an autoscaler never started: its settings only

pytestmark = pytest.mark.unit


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")) if d]


def one(name: str, kind: str) -> dict:
    (found,) = [d for d in documents(name) if d["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def scaled_object() -> dict:
    return one("keda-scaledobject.yaml", "ScaledObject")


@pytest.fixture(scope="module")
def deployment() -> dict:
    return one("agents.yaml", "Deployment")


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((K8S / "nats-values.yaml").read_text(encoding="utf-8"))


def closed(schema: dict) -> dict:
    """The schema with every object that lists its properties closed to others (what the API
    server's strict field validation does; a structural CRD schema would prune them)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(schema)
    return schema


def keda_schema() -> dict:
    path = K8S / "schemas" / "keda-scaledobject-v1alpha1.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert "kedacore/keda v2." in schema["$comment"], "the vendored schema names its source"
    return closed(schema)


def container(deployment: dict) -> dict:
    (worker,) = deployment["spec"]["template"]["spec"]["containers"]
    return worker


def flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} is not in {args}"
    return args[args.index(name) + 1]


# -- validity ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["Job", "Deployment"])
def test_the_agents_manifests_are_valid_kubernetes(kind):
    kubernetes_validate.validate(one("agents.yaml", kind), KUBERNETES, strict=True)


def test_kubernetes_validate_does_refuse_a_bad_manifest(deployment):
    bad = copy.deepcopy(deployment)
    container(bad)["envv"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES, strict=True)


def test_the_scaled_object_is_valid_against_kedas_crd_schema(scaled_object):
    jsonschema.validate(scaled_object, keda_schema())
    # ObjectMeta is not in a CRD's schema: the metadata is checked as Kubernetes checks it.
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", scaled_object["metadata"]["name"])


@pytest.mark.parametrize("change", [
    lambda so: so["spec"].update(cooldownPerod=30),                    # a typo
    lambda so: so["spec"]["triggers"][0]["metadata"].update(lagThreshold=10),  # not a string
    lambda so: so["spec"].update(triggers=[]),
])
def test_the_keda_schema_refuses_what_keda_would(scaled_object, change):
    bad = copy.deepcopy(scaled_object)
    change(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, keda_schema())


# -- agreement --------------------------------------------------------------------------------
def test_keda_uses_the_autoscalers_thresholds_bounds_and_cooldown(scaled_object):
    spec = scaled_object["spec"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "nats-jetstream"
    meta = trigger["metadata"]
    defaults = Autoscaler(NO_CLIENT, "cto", lambda n: n)
    assert int(meta["lagThreshold"]) == defaults.lag_threshold == LAG_THRESHOLD
    assert int(meta["activationLagThreshold"]) == defaults.activation_lag == ACTIVATION_LAG
    assert spec["minReplicaCount"] == defaults.min_replicas == 0
    assert spec["maxReplicaCount"] == defaults.max_replicas == MAX_REPLICAS
    assert spec["cooldownPeriod"] == defaults.cooldown == COOLDOWN
    # The autoscaler has no scale-down stabilisation window; the HPA must not have one either.
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 0


def test_the_trigger_watches_the_deployments_role_in_agentlabs_account(scaled_object,
                                                                       deployment, values):
    meta = scaled_object["spec"]["triggers"][0]["metadata"]
    args = container(deployment)["args"]
    assert scaled_object["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (meta["stream"], meta["consumer"]) == (TASK_STREAM, flag(args, "--role"))
    # The account of deploy/nats/node-*.conf, defined in the Helm values too.
    node_conf = (ROOT / "deploy" / "nats" / "node-1.conf").read_text(encoding="utf-8")
    assert f"{meta['account']}: {{" in node_conf
    assert meta["account"] in values["config"]["merge"]["accounts"]
    # The headless service (the chart's "<release>-headless"), on the monitoring port.
    host, port = meta["natsServerMonitoringEndpoint"].rsplit(":", 1)
    assert host.startswith("nats-headless.") and int(port) == values["config"]["monitor"]["port"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"


def test_the_helm_values_make_a_three_node_jetstream_cluster(values):
    config = values["config"]
    assert config["cluster"]["enabled"] and config["cluster"]["replicas"] == 3
    assert config["jetstream"]["enabled"]
    assert config["jetstream"]["memoryStore"]["enabled"], "the tool streams are in memory"
    # The nats-server release docker-compose.yml runs (and that one, the wheel's).
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    image = compose["services"]["nats-1"]["image"]
    assert image == f"nats:{values['container']['image']['tag']}"
    # The password is the Secret's, through the environment; never in the values.
    (user,) = config["merge"]["accounts"]["AGENTLAB"]["users"]
    assert user["password"] == "<< $AGENTLAB_NATS_PASSWORD >>"
    secret = values["container"]["env"]["AGENTLAB_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret["name"] == "agentlab-nats"


def test_the_agents_log_in_with_the_credentials_file_from_the_secret(deployment):
    for kind in ("Job", "Deployment"):
        pod = one("agents.yaml", kind)["spec"]["template"]["spec"]
        (main,) = pod["containers"]
        env = {e["name"]: e for e in main["env"]}
        path = Path(env["AGENTLAB_NATS_CREDENTIALS"]["value"])
        assert env["AGENTLAB_NATS_URL"]["value"].startswith("nats://nats.")
        mount = next(m for m in main["volumeMounts"] if Path(m["mountPath"]) == path.parent)
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == "agentlab-nats" and mount["readOnly"]
        assert {"key": "credentials.json", "path": path.name} in volume["secret"]["items"]
        assert pod["securityContext"]["runAsNonRoot"]


def test_the_deployment_runs_the_worker_with_the_autoscalers_consumer_options(deployment):
    worker = container(deployment)
    args = worker["args"]
    dockerfile = (K8S / "Dockerfile").read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["python", "-m", "agentlab.programs.worker"]' in dockerfile
    assert worker["image"].split(":")[0] == "agentlab-worker"
    assert flag(args, "--instance") == "$(POD_NAME)"  # each pod its own instance name
    # The consumer the autoscaler declares for a role nobody started yet is the worker's.
    spec = Autoscaler(NO_CLIENT, flag(args, "--role"), lambda n: n).consumer_spec
    assert float(flag(args, "--ack-wait")) == spec.ack_wait
    assert int(flag(args, "--max-ack-pending")) == spec.max_ack_pending
    # SIGTERM lets the tasks in hand finish: the grace period covers one ack wait and more.
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(flag(args, "--ack-wait"))
