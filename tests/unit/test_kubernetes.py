"""deploy/kubernetes/, checked offline: yamllint, the Kubernetes API schemas (kubernetes-validate
ships them; strict, so a misspelt field fails), and how the files fit together and with the app:
probes on real routes, the grace period above the drain and the upstream timeout, the image's
user and writable directories, and a Secret that holds only placeholders."""
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from gateway import create_app
from gateway.config import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
MANIFESTS = ("configmap.yaml", "secret.example.yaml", "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml")
VERSIONS = ("1.30", "1.37")  # the oldest with every API used here as stable, and the newest the schemas know
GUNICORN_GRACE_MARGIN = 30  # gunicorn.conf.py: graceful_timeout = UPSTREAM_TIMEOUT + 30


def manifest(name):
    return yaml.safe_load((KUBERNETES / name).read_text())


@pytest.fixture(scope="module")
def pod():
    return manifest("deployment.yaml")["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod):
    (gateway,) = pod["spec"]["containers"]
    return gateway


def test_yamllint_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-c", str(ROOT / ".yamllint.yaml"),
                           str(KUBERNETES)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_the_manifest_matches_the_kubernetes_schema(name, version):
    kubernetes_validate.validate(manifest(name), version, strict=True)


def test_kustomization_applies_everything_but_the_secret_example():
    resources = manifest("kustomization.yaml")["resources"]
    assert sorted(resources) == sorted(set(MANIFESTS) - {"secret.example.yaml"})


def test_kustomization_names_the_deployments_image(container):
    (image,) = manifest("kustomization.yaml")["images"]
    assert container["image"] == f"{image['name']}:{image['newTag']}"


def test_three_replicas_and_the_autoscaler_starts_from_them():
    deployment, hpa = manifest("deployment.yaml"), manifest("hpa.yaml")
    assert deployment["spec"]["replicas"] == hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}


def test_probes_ask_the_apps_health_routes(container):
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    routes = {rule.rule for rule in create_app(Settings()).url_map.iter_rules()}
    assert {"/health/ready", "/health/live"} <= routes


def test_the_grace_period_covers_prestop_drain_and_in_flight_requests(pod, container):
    settings = Settings.from_env(manifest("configmap.yaml")["data"])
    (command, seconds) = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command == "sleep"
    needed = int(seconds) + settings.drain_seconds + settings.upstream_timeout + GUNICORN_GRACE_MARGIN
    assert pod["spec"]["terminationGracePeriodSeconds"] > needed


def test_it_runs_as_the_images_non_root_user_on_a_read_only_root(pod, container):
    dockerfile = (ROOT / "Dockerfile").read_text()
    (image_user,) = re.findall(r"^USER (\d+)$", dockerfile, re.M)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == int(image_user)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_tmp_and_the_apps_var_dir_are_writable_volumes(pod, container):
    (workdir,) = re.findall(r"^WORKDIR (\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    empty_dirs = {volume["name"] for volume in pod["spec"]["volumes"] if "emptyDir" in volume}
    mounted = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert {"/tmp", f"{workdir}/var"} <= set(mounted)
    assert {mounted["/tmp"], mounted[f"{workdir}/var"]} <= empty_dirs


def test_resources_are_requested_and_memory_is_limited(container):
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]


def test_service_and_disruption_budget_select_the_pods(pod, container):
    labels = pod["metadata"]["labels"]
    service, pdb = manifest("service.yaml"), manifest("pdb.yaml")
    assert service["spec"]["selector"] == labels and pdb["spec"]["selector"]["matchLabels"] == labels
    (port,) = container["ports"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_settings_come_from_the_configmap_and_the_secret(container):
    sources = {next(iter(source)): source[next(iter(source))]["name"] for source in container["envFrom"]}
    assert sources == {"configMapRef": manifest("configmap.yaml")["metadata"]["name"],
                       "secretRef": manifest("secret.example.yaml")["metadata"]["name"]}


def test_every_configmap_setting_is_one_the_gateway_reads():
    read = (ROOT / "gateway" / "config.py").read_text() + (ROOT / "gunicorn.conf.py").read_text()
    assert [name for name in manifest("configmap.yaml")["data"] if f'"{name}"' not in read] == []


def test_the_configmap_holds_nothing_secret():
    assert not [name for name in manifest("configmap.yaml")["data"]
                if re.search(r"KEY|SECRET|TOKEN|PASSWORD|_URL$", name)]


def test_the_secret_example_holds_placeholders_only():
    secret = manifest("secret.example.yaml")["stringData"]
    assert set(secret) == {"GATEWAY_DATABASE_URL", "GATEWAY_REDIS_URL", "GATEWAY_API_KEYS", "GATEWAY_ADMIN_KEY",
                           "GEMINI_API_KEY"}
    assert secret["GATEWAY_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert secret["GATEWAY_REDIS_URL"].startswith("redis://")
    assert all("CHANGE-ME" in value for value in secret.values())
    assert all(".example.invalid" in secret[name] for name in ("GATEWAY_DATABASE_URL", "GATEWAY_REDIS_URL"))
