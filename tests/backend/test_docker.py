"""Docker files checked without a Docker engine: the compose file parsed with PyYAML, the
Dockerfile's instructions read as text, and the health probe run against a local HTTP server.
(tests/live/test_docker_image.py builds and runs the image with podman.)"""

from __future__ import annotations

import base64
import importlib.util
import ipaddress
import json
import re
import shlex
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from backend._wsgi import build_parser, check_gunicorn_binds
from backend.local.server import LABEL_STUDIO_VERSION
from sugfw.errors import SugfwError

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
LS, BACKEND = SERVICES["label-studio"], SERVICES["sugfw-backend"]
# ${NAME}, ${NAME:-default}, ${NAME:?message}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = (DOCKER / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def instruction(name: str) -> list[str]:
    return [arguments for keyword, arguments in dockerfile_instructions() if keyword == name]


def exec_form(arguments: str) -> list[str]:
    # Exec (JSON) form runs without a shell, so signals reach the server and the command is exact.
    assert arguments.startswith("["), f"expected the JSON exec form, got {arguments!r}"
    return json.loads(arguments)


def container_port(mapping: str) -> int:
    return int(str(mapping).rsplit(":", 1)[1].split("/")[0])


def volume_targets(service: dict) -> set[str]:
    # Short syntax SOURCE:TARGET[:MODE]; a "${X:-./dir}" source holds a colon of its own.
    return {VARIABLE.sub("SOURCE", str(volume)).split(":")[1] for volume in service["volumes"]}


def interpolated(value: str) -> set[str]:
    return set(VARIABLE.findall(str(value)))


def env_example() -> dict[str, str]:
    lines = (DOCKER / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def resolved(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation of ${NAME}, ${NAME:-default} and ${NAME:?message} from ``env``."""

    def one(match: re.Match) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if operator == ":?":
            raise ValueError(f"{name}: {argument}")
        return argument if operator == ":-" else ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}", one, str(value))


def backend_environment(env: dict[str, str]) -> dict[str, str]:
    return {name: resolved(value, env) for name, value in BACKEND["environment"].items()}


# -- compose
# ----------------------------------------------------------------------------------------------


def test_compose_runs_the_label_studio_version_the_tests_use_beside_the_backend():
    assert set(SERVICES) == {"label-studio", "sugfw-backend"}
    assert LS["image"] == f"heartexlabs/label-studio:{LABEL_STUDIO_VERSION}"
    assert BACKEND["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (
        DOCKER / BACKEND["build"]["context"] / BACKEND["build"]["dockerfile"]
    ).resolve() == DOCKER / "Dockerfile"


def test_backend_reaches_label_studio_by_service_name_and_container_port():
    url = urlsplit(BACKEND["environment"]["LABEL_STUDIO_URL"])
    assert url.scheme == "http" and url.hostname == "label-studio" and url.hostname in SERVICES
    assert url.port in {container_port(mapping) for mapping in LS["ports"]}
    assert BACKEND["depends_on"]["label-studio"]["condition"] == "service_healthy"


def test_label_studio_and_backend_share_one_required_api_key():
    server_token = interpolated(LS["environment"]["LABEL_STUDIO_USER_TOKEN"])
    backend_key = interpolated(BACKEND["environment"]["LABEL_STUDIO_API_KEY"])
    assert server_token == backend_key == {"LABEL_STUDIO_API_KEY"}
    # ":?" makes compose stop with a message when the key is unset or empty.
    assert ":?" in BACKEND["environment"]["LABEL_STUDIO_API_KEY"]


def test_label_studio_settings_a_backend_on_the_compose_network_needs():
    env = LS["environment"]
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    # Both services see the served files at the same path, so the backend can read them from disk.
    root = env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    assert BACKEND["environment"]["LOCAL_FILES_DOCUMENT_ROOT"] == root
    for service in (LS, BACKEND):
        assert root in volume_targets(service)


def test_label_studio_is_published_on_the_hosts_loopback_only():
    assert LS["ports"] and all(str(mapping).startswith("127.0.0.1:") for mapping in LS["ports"])
    assert BACKEND["ports"] and all(
        str(mapping).startswith("127.0.0.1:") for mapping in BACKEND["ports"]
    )


# Addresses a forged request must not reach: loopback, the private ranges (other Docker networks
# included), link-local (cloud metadata), shared, unspecified and IPv4-mapped IPv6 addresses.
FORBIDDEN = (
    "127.0.0.1 127.255.255.254 10.0.0.1 10.255.0.9 192.168.1.1 169.254.169.254 100.64.0.1 0.0.0.0 "
    "172.16.0.1 172.17.0.2 172.23.1.1 172.27.0.1 172.30.255.254 ::1 :: ::ffff:127.0.0.1 "
    "::ffff:10.0.0.1 fd00::1 fe80::1 ff02::1"
).split()


def test_label_studio_guards_against_forged_requests_except_to_the_backend_network():
    env = LS["environment"]
    # The guard on (Label Studio's own default; the old file switched both off).
    assert env.get("LABEL_STUDIO_SSRF_PROTECTION_ENABLED", "true") == "true"
    assert env.get("LABEL_STUDIO_ML_BLOCK_LOCAL_IP", "true") == "true"
    # Label Studio bans its default list unless told not to, then only the additional list.
    assert env.get("LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS") == "false"
    additional = env["LABEL_STUDIO_USER_ADDITIONAL_BANNED_SUBNETS"]
    assert " " not in additional  # Label Studio splits on "," and does not strip
    banned = [ipaddress.ip_network(subnet) for subnet in additional.split(",")]
    (pool,) = COMPOSE["networks"]["default"]["ipam"]["config"]
    network = ipaddress.ip_network(pool["subnet"])
    assert network.is_private

    def is_banned(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == subnet.version and ip in subnet for subnet in banned)

    # The backend's address on the compose network is let through, so its webhook is created.
    assert not any(is_banned(str(host)) for host in (network[1], network[2], network[-2]))
    assert [address for address in FORBIDDEN if not is_banned(address)] == []
    # Every other private /16 of 172.16.0.0/12 (where Docker puts its networks) stays banned.
    for other in ipaddress.ip_network("172.16.0.0/12").subnets(new_prefix=16):
        if other != network:
            assert is_banned(str(other[1])), other


def test_state_dir_and_label_studio_data_are_named_volumes():
    state_dir = BACKEND["environment"]["SUGFW_STATE_DIR"]
    assert f"sugfw-state:{state_dir}" in BACKEND["volumes"]
    assert "label-studio-data:/label-studio/data" in LS["volumes"]
    assert {"sugfw-state", "label-studio-data"} <= set(COMPOSE["volumes"])
    assert "/checkpoints" in volume_targets(BACKEND)


def test_backend_reserves_a_gpu():
    devices = BACKEND["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        device["driver"] == "nvidia" and "gpu" in device["capabilities"] for device in devices
    )


def test_env_example_defines_every_variable_the_compose_file_reads():
    used = interpolated((DOCKER / "docker-compose.yml").read_text())
    example = (DOCKER / ".env.example").read_text().splitlines()
    defined = {
        line.split("=", 1)[0] for line in example if "=" in line and not line.startswith("#")
    }
    assert used - defined == set()


# -- Dockerfile
# ---------------------------------------------------------------------------------------------


def load_gunicorn_config():
    spec = importlib.util.spec_from_file_location("gunicorn_conf", DOCKER / "gunicorn.conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_serves_the_backend_with_gunicorn_one_worker_and_threads():
    assert (
        instruction("ENTRYPOINT") == []
    )  # so `docker run IMAGE sugfw score ...` replaces the command
    command = exec_form(instruction("CMD")[-1])
    assert command[:3] == ["gunicorn", "--config", "/app/docker/gunicorn.conf.py"]
    assert "docker/gunicorn.conf.py ./docker/gunicorn.conf.py" in instruction("COPY")
    # The app spec names a factory of backend._wsgi (gunicorn's "module:function()" form).
    module, _, factory = command[3].partition(":")
    assert module == "backend._wsgi" and factory.endswith("()")
    import backend._wsgi as wsgi

    assert callable(getattr(wsgi, factory[:-2]))
    conf = load_gunicorn_config()
    # One worker: each process runs its own job worker and would train a project twice.
    assert conf.workers == 1 and conf.threads > 1 and conf.worker_class == "gthread"
    (bind,) = conf.bind
    host, port = bind.rsplit(":", 1)
    assert host == "0.0.0.0"  # inside the container; compose publishes it on the host's loopback
    assert instruction("EXPOSE") == [port]
    assert {container_port(mapping) for mapping in BACKEND["ports"]} == {int(port)}
    assert all(str(mapping).startswith("127.0.0.1:") for mapping in BACKEND["ports"])
    assert "command" not in BACKEND and "entrypoint" not in BACKEND  # one source: the image
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    assert any(line.startswith("gunicorn>=") for line in requirements)


class FakeArbiter:
    def __init__(self, binds: list[str]) -> None:
        self.cfg = type("Cfg", (), {"bind": binds})()
        self.errors: list[str] = []
        errors = self.errors
        self.log = type("Log", (), {"error": lambda _, *args: errors.append(args[0] % args[1:])})()


@pytest.mark.parametrize(
    "env,binds,starts",
    [
        ({}, ["0.0.0.0:9090"], False),
        ({}, ["[::]:9090"], False),
        ({}, ["127.0.0.1:9090"], True),
        ({"SUGFW_ALLOW_UNAUTHENTICATED": "1"}, ["0.0.0.0:9090"], True),
        ({"BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "p"}, ["0.0.0.0:9090"], True),
    ],
    ids=["any-no-auth", "any-v6-no-auth", "loopback", "explicit-allow", "basic-auth"],
)
def test_gunicorn_refuses_a_public_bind_without_auth(monkeypatch, env, binds, starts):
    for name in ("SUGFW_ALLOW_UNAUTHENTICATED", "BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    arbiter = FakeArbiter(binds)
    if starts:
        load_gunicorn_config().on_starting(arbiter)
        assert arbiter.errors == []
    else:
        with pytest.raises(SystemExit) as exited:
            load_gunicorn_config().on_starting(arbiter)
        assert exited.value.code == 2
        assert "without Basic auth" in arbiter.errors[0]


@pytest.mark.parametrize(
    "changes,starts",
    [
        ({}, False),  # .env.example as copied: Basic auth not filled in
        ({"BASIC_AUTH_USER": "sugfw", "BASIC_AUTH_PASS": "s3cret"}, True),
        ({"SUGFW_ALLOW_UNAUTHENTICATED": "1"}, True),  # told to
        (None, False),  # no .env at all: the file's own defaults
    ],
    ids=["env-example", "basic-auth", "told-to", "defaults"],
)
def test_compose_does_not_start_the_backend_without_credentials_unless_told(changes, starts):
    env = {} if changes is None else {**env_example(), **changes}
    env["LABEL_STUDIO_API_KEY"] = "0" * 40  # the secret the compose file itself requires
    environment = backend_environment(env)
    binds = load_gunicorn_config().bind  # what the image's gunicorn binds without SUGFW_BIND
    assert "SUGFW_BIND" not in environment
    if starts:
        check_gunicorn_binds(binds, environ=environment)
    else:
        with pytest.raises(SugfwError, match="Basic auth"):
            check_gunicorn_binds(binds, environ=environment)


def test_local_entry_point_binds_loopback_by_default():
    args = build_parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 9090)


def test_image_runs_as_a_non_root_user_and_keeps_state_writable():
    user = instruction("USER")[-1]
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))
    assert "SUGFW_STATE_DIR=/state" in " ".join(instruction("ENV"))
    assert "chown sugfw /state" in " ".join(instruction("RUN"))


def test_health_check_is_the_same_probe_in_image_and_compose():
    options, _, command = instruction("HEALTHCHECK")[-1].partition("CMD ")
    probe = exec_form(command.strip())
    assert BACKEND["healthcheck"]["test"] == ["CMD", *probe]
    assert probe == ["python", "/app/docker/healthcheck.py"]
    assert "docker/healthcheck.py ./docker/healthcheck.py" in instruction("COPY")


def test_copied_sources_exist_and_are_let_into_the_build_context():
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore  # an allow-list: .venv and .venv-ls (gigabytes) stay out of the context
    for arguments in instruction("COPY"):
        for source in shlex.split(arguments)[:-1]:
            assert (ROOT / source).exists(), source
            assert f"!{source.rstrip('/')}" in ignore, source


# -- the health probe
# ---------------------------------------------------------------------------------------


def load_probe():
    spec = importlib.util.spec_from_file_location("healthcheck", DOCKER / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_backend():
    """/health with Basic auth admin:pw; /down answers 200 with status DOWN."""
    expected = "Basic " + base64.b64encode(b"admin:pw").decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"status": "UP" if self.path == "/health" else "DOWN"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_probe_is_healthy_only_when_health_says_up(fake_backend):
    probe = load_probe()
    assert probe.DEFAULT_URL == "http://127.0.0.1:9090/health"
    assert probe.healthy(f"{fake_backend}/health", "admin", "pw") is True
    assert probe.healthy(f"{fake_backend}/health", "admin", "wrong") is False  # 401
    assert probe.healthy(f"{fake_backend}/health", None, None) is False  # no credentials sent
    assert probe.healthy(f"{fake_backend}/down", "admin", "pw") is False


def test_probe_reports_an_unreachable_backend_as_unhealthy():
    import socket

    with socket.socket() as probe_socket:  # a port nothing listens on once closed
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    assert load_probe().healthy(f"http://127.0.0.1:{port}/health", None, None, timeout_s=2) is False
