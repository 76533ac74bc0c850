"""docker-compose.yml and the Dockerfile: no Docker engine runs here, so check their structure."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from st2common import config

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("st2api", "st2sensorcontainer", "st2rulesengine", "st2actionrunner", "st2workflowengine")
CONFIG_AT = "/etc/st2/st2.conf"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_backing_services_have_healthchecks(compose):
    # Given the compose file, Then MongoDB 7 and RabbitMQ with management run with healthchecks
    services = compose["services"]
    assert services["mongo"]["image"] == "mongo:7"
    assert services["rabbitmq"]["image"] == "rabbitmq:3-management"
    for name in ("mongo", "rabbitmq"):
        assert services[name]["healthcheck"]["test"], name


@pytest.mark.parametrize("name", SERVICES + ("register",))
def test_platform_services_share_one_image_and_the_prod_config(compose, name):
    # Given each platform service, Then it is built from this repository's Dockerfile,
    # runs its console script, reads conf/st2.prod.conf at /etc/st2/st2.conf,
    # and waits for healthy MongoDB and RabbitMQ
    service = compose["services"][name]
    assert service["image"] == compose["services"]["st2api"]["image"]
    build = service["build"]
    if isinstance(build, str):
        build = {"context": build}
    assert (REPO / build["context"]).resolve() == REPO
    assert build.get("dockerfile", "Dockerfile") == "Dockerfile"
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
    assert (REPO / mounts[CONFIG_AT]).resolve() == REPO / "conf" / "st2.prod.conf"
    assert service["environment"]["ST2_CONFIG_PATH"] == CONFIG_AT
    for dependency in ("mongo", "rabbitmq"):
        assert service["depends_on"][dependency]["condition"] == "service_healthy"
    command = service["command"]
    assert command[0] == ("st2ctl" if name == "register" else name)


def test_register_is_one_shot_and_registers_everything(compose):
    register = compose["services"]["register"]
    assert register["command"] == ["st2ctl", "reload", "--register-all"]
    assert register["restart"] == "no"


def test_api_port_is_published(compose):
    published = [str(port) for port in compose["services"]["st2api"]["ports"]]
    assert any(re.fullmatch(r"(\d+\.\d+\.\d+\.\d+:)?9101:9101", port) for port in published)


def test_named_volumes_are_declared(compose):
    used = {volume.split(":")[0] for service in compose["services"].values()
            for volume in service.get("volumes", []) if not volume.startswith((".", "/"))}
    assert used <= set(compose["volumes"])


def test_every_console_script_used_exists(compose):
    scripts = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
    for name, service in compose["services"].items():
        if "command" in service:
            assert service["command"][0] in scripts, name


def test_prod_config_serves_on_all_interfaces():
    # The API must listen beyond the container's loopback for the published port to work.
    settings = config.load(REPO / "conf" / "st2.prod.conf", env={})
    assert settings.api.host == "0.0.0.0"
    assert settings.api.port == 9101


def test_dockerfile_basics(dockerfile):
    # Given the Dockerfile, Then it builds on python:3.11-slim, installs the project,
    # copies the prod config where ST2_CONFIG_PATH points, and runs as a non-root user
    assert dockerfile[0] == "FROM python:3.11-slim"
    assert any(re.match(r"RUN pip install (--no-cache-dir )?\.( |$)", line) for line in dockerfile)
    assert f"COPY conf/st2.prod.conf {CONFIG_AT}" in dockerfile
    assert any(f"ST2_CONFIG_PATH={CONFIG_AT}" in line for line in dockerfile)
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    copied = {line.split()[1] for line in dockerfile if line.startswith("COPY ")}
    for package in SERVICES + ("st2common", "st2client"):
        assert package in copied, package
    assert "pyproject.toml" in copied and "contrib/packs" in copied


def test_the_datastore_key_is_generated_once_before_any_service_starts(compose):
    # Given the prod config's key path
    key_dir = str(config.load(REPO / "conf" / "st2.prod.conf", env={}).keyvalue.encryption_key_path.parent)
    keygen = compose["services"]["keygen"]
    # Then a one-shot step runs the key tool with the prod config, keeping a key that exists
    assert keygen["command"] == ["st2-generate-symmetric-crypto-key", "--if-missing"]
    assert keygen["restart"] == "no"
    assert keygen["environment"]["ST2_CONFIG_PATH"] == CONFIG_AT
    keygen_mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in keygen["volumes"]}
    assert (REPO / keygen_mounts[CONFIG_AT]).resolve() == REPO / "conf" / "st2.prod.conf"
    # And it writes into a named volume mounted where the key is read
    volume = keygen_mounts[key_dir]
    assert volume in compose["volumes"]
    # And every platform service waits for it to succeed and sees the same volume there
    for name in SERVICES + ("register",):
        service = compose["services"][name]
        assert service["depends_on"]["keygen"]["condition"] == "service_completed_successfully", name
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        assert mounts[key_dir] == volume, name


def test_the_image_keeps_the_key_folder_to_its_owner(dockerfile):
    # A new named volume starts with the image folder's owner and mode: st2 only.
    key_dir = str(config.load(REPO / "conf" / "st2.prod.conf", env={}).keyvalue.encryption_key_path.parent)
    assert any(line.startswith("RUN ") and f"chmod 700 {key_dir}" in line for line in dockerfile)
    chowns = [line for line in dockerfile if "chown -R st2:st2 /opt/stackstorm" in line]
    assert chowns and f"chmod 700 {key_dir}" in chowns[-1].split("chown", 1)[1]


def test_the_api_serves_auth_and_keeps_users_and_roles_in_volumes(compose, dockerfile):
    api = compose["services"]["st2api"]
    assert "9100:9100" in [str(port) for port in api["ports"]]
    assert api["environment"]["ST2_CONFIG_PATH"] == CONFIG_AT
    assert "ST2_ADMIN_PASSWORD" in api["environment"]
    mounts = {volume.split(":")[1] for volume in api["volumes"]}
    assert {"/opt/stackstorm/var/auth", "/opt/stackstorm/var/rbac", "/opt/stackstorm/keys"} <= mounts
    prod = config.load(REPO / "conf" / "st2.prod.conf", env={})
    assert str(prod.auth.flat_file_path).startswith("/opt/stackstorm/var/auth/")
    assert str(prod.rbac.assignments_path).startswith("/opt/stackstorm/var/rbac/")
    assert any("chmod 700" in line and "/opt/stackstorm/var/auth" in line for line in dockerfile)
