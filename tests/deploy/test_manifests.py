"""deploy/k8s and deploy/kserve, proved without a cluster.

- The Kubernetes resources validate strictly against the Kubernetes OpenAPI schemas (kubernetes-validate ships
  them), for the oldest and the newest version it knows; the pods and containers inside KServe's resources too.
- KServe's resources use only fields KServe defines, with the right types (tests/deploy/kserve_schema.yaml,
  transcribed from KServe's Go types, sources noted there), and KServe's own selection rules, re-stated below
  from its code, pick the bnserve runtime for the example InferenceService.
- Each container's command, arguments and environment run here as a plain process: the volume's mount point
  becomes a temporary directory holding an artifact, the container port a free port, ``0.0.0.0`` this machine's
  loopback. The probes the YAML declares must answer, and tritonclient infers through the KServe one under the
  InferenceService's name, as KServe would route to it.

Not proved here: images, scheduling, the storage initializer, Knative's autoscaler, the read-only root file
system (the process runs on this machine's), a real cluster's admission webhooks.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from kubernetes_validate.utils import all_versions
from tritonclient.utils import InferenceServerException

from bench.load import free_port
from tests.service.serving import manifest_of, rows_like_training

ROOT = Path(__file__).resolve().parents[2]
K8S, KSERVE = ROOT / "deploy" / "k8s", ROOT / "deploy" / "kserve"
KUBERNETES_VERSIONS = (all_versions()[0], kubernetes_validate.latest_version())  # 1.25 and the newest
KSERVE_SCHEMA = yaml.safe_load((Path(__file__).parent / "kserve_schema.yaml").read_text())
READY_TIMEOUT_S = 90.0
DOCKERFILE_UID = 10001  # `useradd --uid 10001 bnserve` in the Dockerfile


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resource(path: Path, kind: str) -> dict[str, Any]:
    (found,) = [d for d in documents(path) if d["kind"] == kind]
    return found


def runtime() -> dict[str, Any]:
    return resource(KSERVE / "servingruntime.yaml", "ClusterServingRuntime")


def lean_runtime() -> dict[str, Any]:
    return resource(KSERVE / "servingruntime-lean.yaml", "ClusterServingRuntime")


def inference_service() -> dict[str, Any]:
    return resource(KSERVE / "inferenceservice.yaml", "InferenceService")


def deployment() -> dict[str, Any]:
    return resource(K8S / "deployment.yaml", "Deployment")


def pod_of(containers: list[dict[str, Any]], volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bnserve-check"}, "spec": spec}


# ---------------------------------------------------------------------------------------------- schemas


K8S_FILES = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", K8S_FILES)
def test_every_kubernetes_resource_validates_strictly_against_the_kubernetes_schemas(
    name: str, version: str
) -> None:
    for doc in documents(K8S / name):
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_applies_every_manifest_in_deploy_k8s() -> None:
    assert sorted(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]) == K8S_FILES


def test_kubernetes_validation_catches_a_misspelt_field() -> None:
    broken = copy.deepcopy(deployment())
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {
        "httpGet": {"path": "/", "port": 80}
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    ("name", "document"),
    [("servingRuntime", runtime), ("servingRuntime", lean_runtime), ("inferenceService", inference_service)],
)
def test_kserve_resources_use_only_fields_kserve_defines(name: str, document: Any) -> None:
    schema = {**KSERVE_SCHEMA, "$ref": f"#/$defs/{name}"}
    jsonschema.validate(document(), schema)


def test_the_kserve_schema_catches_a_misspelt_or_mistyped_field() -> None:
    schema = {**KSERVE_SCHEMA, "$ref": "#/$defs/servingRuntime"}
    for path, value in (
        (("protocolVersion",), ["v2"]),
        (("protocolVersions",), ["v3"]),
        (("multiModel",), "no"),
    ):
        broken = copy.deepcopy(runtime())
        broken["spec"][path[0]] = value
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


@pytest.mark.parametrize("served_by", [runtime, lean_runtime], ids=["torch", "lean"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_runtimes_containers_and_volumes_are_a_valid_pod(version: str, served_by: Any) -> None:
    spec = served_by()["spec"]
    kubernetes_validate.validate(pod_of(spec["containers"], spec.get("volumes")), version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_inferenceservice_models_container_fields_are_valid(version: str) -> None:
    model = inference_service()["spec"]["predictor"]["model"]
    kserve_only = {"modelFormat", "runtime", "storageUri", "runtimeVersion", "protocolVersion", "storage"}
    container = {
        "name": "kserve-container",
        "image": "x",
        **{k: v for k, v in model.items() if k not in kserve_only},
    }
    kubernetes_validate.validate(pod_of([container]), version, strict=True)


# ---------------------------------------------------------------------------------------------- KServe's rules


def runtime_supports_model(runtime_spec: dict[str, Any], model: dict[str, Any]) -> bool:
    """KServe's ModelSpec.RuntimeSupportsModel and ServingRuntimeSpec.IsProtocolVersionSupported
    (pkg/apis/serving/v1beta1/predictor_model.go, v1alpha1/servingruntime_types.go), re-stated."""
    explicit = model.get("runtime") is not None
    labels = set()
    for f in runtime_spec.get("supportedModelFormats", []):
        if explicit or f.get("autoSelect"):
            labels.add(f"mt:{f['name']}")
            if "version" in f:
                labels.add(f"mt:{f['name']}:{f['version']}")
    fmt = model["modelFormat"]
    label = f"mt:{fmt['name']}:{fmt['version']}" if "version" in fmt else f"mt:{fmt['name']}"
    protocol = model.get("protocolVersion", "v1")  # GetProtocol: v1 when unset
    versions = runtime_spec.get("protocolVersions") or []
    return label in labels and (not versions or protocol in versions) and not runtime_spec.get("disabled")


def test_kserve_picks_the_bnserve_runtime_for_the_example_inferenceservice() -> None:
    spec, isvc = runtime()["spec"], inference_service()
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime()["metadata"]["name"]
    assert runtime_supports_model(spec, model)
    auto = {k: v for k, v in model.items() if k != "runtime"}  # also when KServe chooses the runtime itself
    assert runtime_supports_model(spec, auto)
    v1 = {k: v for k, v in model.items() if k != "protocolVersion"}  # the v1 default: no v2 runtime serves it
    assert not runtime_supports_model(spec, v1)
    predictor = isvc["spec"]["predictor"]
    assert 0 <= predictor["minReplicas"] <= predictor["maxReplicas"]  # ComponentExtensionSpec.Validate
    assert predictor["scaleMetric"] == "concurrency" and predictor["scaleTarget"] > 0


def test_the_runtime_listens_where_kserve_sends_traffic_and_reads_where_kserve_mounts_the_model() -> None:
    spec = runtime()["spec"]
    assert spec["protocolVersions"] == ["v2"]
    (container,) = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["name"] == "kserve-container"
    assert env["BNSERVE_MODEL_DIR"] == "/mnt/models" and env["BNSERVE_HOST"] == "0.0.0.0"
    assert env["BNSERVE_PORT"] == "8080" == str(container["ports"][0]["containerPort"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert "--model-name={{.Name}}" in container["args"]
    assert spec["annotations"]["prometheus.io/scrape"] == "true"
    assert spec["annotations"]["prometheus.io/port"] == "8080"
    assert (
        container["securityContext"]["runAsNonRoot"]
        and container["securityContext"]["readOnlyRootFilesystem"]
    )
    assert container["securityContext"]["runAsUser"] == DOCKERFILE_UID


def test_deployment_service_and_autoscaler_refer_to_each_other() -> None:
    dep = deployment()
    service = resource(K8S / "service.yaml", "Service")
    hpa = resource(K8S / "hpa.yaml", "HorizontalPodAutoscaler")
    pvc = resource(K8S / "pvc.yaml", "PersistentVolumeClaim")
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    assert (hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"]) == (
        "Deployment",
        "bnserve",
    )
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert (
        "requests" in container["resources"] and "limits" in container["resources"]
    )  # HPA's utilization needs requests
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert (
        pod["spec"]["securityContext"]["runAsNonRoot"]
        and pod["spec"]["securityContext"]["runAsUser"] == DOCKERFILE_UID
    )
    assert container["securityContext"]["readOnlyRootFilesystem"]
    claims = {
        v["name"]: v["persistentVolumeClaim"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    (volume,) = claims
    assert claims[volume]["claimName"] == pvc["metadata"]["name"] and mounts[volume]["readOnly"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["BNSERVE_MODEL_DIR"].startswith(mounts[volume]["mountPath"] + "/")


# ---------------------------------------------------------------------------------------------- as processes


@dataclass
class ContainerProcess:
    """A container spec as a local process: volume mount points map to local directories, the declared
    ports to free local ones, ``{{.Name}}`` to the InferenceService's name, and 0.0.0.0 to the loopback."""

    container: dict[str, Any]
    mounts: dict[str, Path]  # mount path in the container -> local directory
    isvc_name: str = ""

    def __post_init__(self) -> None:
        self.ports = {str(p["containerPort"]): free_port() for p in self.container["ports"]}
        self.named = {p["name"]: str(p["containerPort"]) for p in self.container["ports"]}

    def local(self, value: str) -> str:
        value = value.replace("{{.Name}}", self.isvc_name)
        for target, source in self.mounts.items():
            if value == target or value.startswith(target + "/"):
                value = str(source) + value[len(target) :]
        if value == "0.0.0.0":
            return "127.0.0.1"
        return str(self.ports.get(value, value))

    def argv(self) -> list[str]:
        command = [self.local(a) for a in [*self.container["command"], *self.container.get("args", [])]]
        return [sys.executable if command[0] == "python" else command[0], *command[1:]]

    def env(self) -> dict[str, str]:
        # The container's environment only: none of this shell's BNSERVE_* settings.
        env = {k: v for k, v in os.environ.items() if not k.startswith("BNSERVE_")}
        env.update({e["name"]: self.local(str(e["value"])) for e in self.container.get("env", [])})
        return env

    def url(self, probe: dict[str, Any]) -> str:
        port = str(probe["httpGet"]["port"])
        return f"http://127.0.0.1:{self.ports[self.named.get(port, port)]}{probe['httpGet']['path']}"


@contextmanager
def running(process: ContainerProcess, log: Path, *, until: str = "readinessProbe") -> Iterator[None]:
    """Yields once the probe the YAML declares as ``until`` answers 200; stops the process after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            process.argv(), env=process.env(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = process.url(process.container[until])
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the container's command exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{url} not 200 after {READY_TIMEOUT_S:.0f} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def server_log_on_failure(log: Path) -> Iterator[None]:
    """Adds the server's log to a failure inside the block: a 500 is explained there, not in the client."""
    try:
        yield
    except (AssertionError, InferenceServerException, httpx.HTTPError) as e:
        raise AssertionError(f"{e}\nserver log:\n{log.read_text()[-6000:]}") from e


def probes_answer(process: ContainerProcess) -> None:
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in process.container:
            response = httpx.get(process.url(process.container[probe]), timeout=10)
            assert response.status_code == 200, (probe, response.text)


@pytest.mark.slow
@pytest.mark.parametrize("served_by", [runtime, lean_runtime], ids=["torch", "lean"])
def test_the_kserve_runtime_runs_over_mnt_models_and_tritonclient_infers_under_the_isvc_name(
    breast_cancer_artifact: Path, tmp_path: Path, served_by: Any
) -> None:
    spec, isvc = served_by()["spec"], inference_service()
    mnt_models = Path(
        shutil.copytree(breast_cancer_artifact, tmp_path / "mnt" / "models")
    )  # the storage initializer's job
    process = ContainerProcess(spec["containers"][0], {"/mnt/models": mnt_models}, isvc["metadata"]["name"])
    name = isvc["metadata"]["name"]
    log = tmp_path / "runtime.log"
    with running(process, log), server_log_on_failure(log):
        probes_answer(process)
        port = process.ports[spec["annotations"]["prometheus.io/port"]]
        metrics = httpx.get(f"http://127.0.0.1:{port}{spec['annotations']['prometheus.io/path']}", timeout=10)
        assert metrics.status_code == 200 and "bnserve_requests_total" in metrics.text
        triton = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            assert triton.is_server_ready() and triton.is_model_ready(name)
            assert triton.get_model_metadata(name)["name"] == name
            rows = rows_like_training(breast_cancer_artifact, 4)
            tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows)
            result = triton.infer(name, [tensor])
        finally:
            triton.close()
    labels = manifest_of(breast_cancer_artifact)["class_labels"]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (4, len(labels))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert [v.decode() for v in result.as_numpy("label")] == [labels[i] for i in probabilities.argmax(axis=1)]


@pytest.mark.slow
def test_the_deployment_runs_over_its_artifacts_volume_and_answers_its_probes(
    breast_cancer_artifact: Path, tmp_path: Path
) -> None:
    pod = deployment()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volume = tmp_path / "artifacts"
    env = {e["name"]: e["value"] for e in container["env"]}
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "artifacts")
    shutil.copytree(breast_cancer_artifact, volume / env["BNSERVE_MODEL_DIR"].removeprefix(mount + "/"))
    process = ContainerProcess(container, {mount: volume})
    with running(process, tmp_path / "deployment.log"):
        probes_answer(process)
        base = process.url({"httpGet": {"path": "", "port": "http"}})
        row = manifest_of(breast_cancer_artifact)["canary"]["inputs"][0]
        predict = httpx.post(f"{base}/predict", json={"instances": [row]}, timeout=10)
        assert predict.status_code == 200, predict.text
        name = manifest_of(breast_cancer_artifact)["name"]
        oip = httpx.get(f"{base}/v2/models/{name}/ready", timeout=10)
        assert oip.json() == {"name": name, "ready": True}


@pytest.mark.slow
def test_the_readiness_probe_fails_while_the_artifact_is_missing(tmp_path: Path) -> None:
    (tmp_path / "mnt" / "models").mkdir(parents=True)  # the storage initializer has not run, or failed
    spec = runtime()["spec"]
    process = ContainerProcess(spec["containers"][0], {"/mnt/models": tmp_path / "mnt" / "models"}, "x")
    with running(process, tmp_path / "runtime.log", until="livenessProbe"):
        ready = httpx.get(process.url(process.container["readinessProbe"]), timeout=10)
    assert ready.status_code == 503 and "not ready" in ready.json()["error"]


def test_the_lean_kserve_runtime_is_the_torch_one_on_the_image_without_torch() -> None:
    torch_spec, lean_spec = runtime()["spec"], lean_runtime()["spec"]
    (torch_container,), (lean_container,) = torch_spec["containers"], lean_spec["containers"]
    assert lean_runtime()["metadata"]["name"] == "bnserve-lean"
    assert lean_container["image"] == "bnserve:lean" and torch_container["image"] != "bnserve:lean"
    env = {e["name"]: e["value"] for e in lean_container["env"]}
    assert env.pop("BNSERVE_RUNTIME") == "lean"
    assert env == {e["name"]: e["value"] for e in torch_container["env"]}
    assert not lean_spec["supportedModelFormats"][0]["autoSelect"]  # the example isvc still gets "bnserve"
    for key in ("command", "args", "ports", "readinessProbe", "livenessProbe", "securityContext"):
        assert lean_container[key] == torch_container[key], key
