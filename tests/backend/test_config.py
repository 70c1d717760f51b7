"""The backend configuration: read from the environment and flags, checked, and shown redacted."""

from __future__ import annotations

import json

import pytest

from backend.config import BackendConfig
from sugfw.errors import InvalidInputError
from tests.fakes import LEGACY_KEY, PASSWORD, USER


def test_config_from_env_and_redacted_view(tmp_path):
    env = {
        "LABEL_STUDIO_URL": "http://admin:pw@ls:8080",
        "LABEL_STUDIO_API_KEY": LEGACY_KEY,
        "SUGFW_K": "4",
        "SUGFW_BUDGET": "35",
        "SUGFW_STATE_DIR": str(tmp_path),
        "BASIC_AUTH_USER": USER,
        "BASIC_AUTH_PASS": PASSWORD,
        "SUGFW_DEVICE": "",  # empty means unset
    }
    config = BackendConfig.from_env(env)
    assert (config.k, config.budget, config.state_dir, config.device, config.auth_enabled) == (
        4,
        35,
        tmp_path,
        "auto",
        True,
    )
    assert BackendConfig.from_env({"SUGFW_BUDGET": "0.005"}).budget == 0.005
    view = config.redacted()
    assert (view["label_studio_api_key"], view["basic_auth_pass"], view["label_studio_url"]) == (
        "***",
        "***",
        "http://***@ls:8080",
    )
    for secret in (LEGACY_KEY, PASSWORD, "admin:pw"):
        assert secret not in json.dumps(view) and secret not in repr(config)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"BASIC_AUTH_USER": USER}, "BASIC_AUTH_PASS is not set"),
        ({"SUGFW_BUDGET": "1.5"}, "SUGFW_BUDGET=1.5: a ratio must lie strictly between 0 and 1"),
        ({"SUGFW_BUDGET": "0"}, "SUGFW_BUDGET=0: a count must be at least 1"),
        ({"SUGFW_BUDGET": "many"}, "SUGFW_BUDGET='many': expected a count"),
        ({"SUGFW_K": "ten"}, "SUGFW_K='ten': expected an integer"),
        ({"SUGFW_MODEL": "unet"}, "SUGFW_MODEL='unet' is unknown"),
        ({"LABEL_STUDIO_URL": "ls:8080"}, "expected an http\\(s\\) URL"),
        ({"LOCAL_FILES_DOCUMENT_ROOT": "/"}, "LOCAL_FILES_DOCUMENT_ROOT=/ is refused"),
    ],
)
def test_bad_environment_is_an_error_naming_the_variable(env, message):
    with pytest.raises(InvalidInputError, match=message):
        BackendConfig.from_env(env)


def test_cli_flags_override_the_environment(monkeypatch, tmp_path):
    from backend._wsgi import build_parser, config_from_args

    monkeypatch.setenv("SUGFW_K", "4")
    monkeypatch.setenv("SUGFW_BUDGET", "0.02")
    monkeypatch.setenv("SUGFW_STATE_DIR", str(tmp_path / "env"))
    args = build_parser().parse_args(["--k", "6", "--state-dir", str(tmp_path / "flag")])
    config = config_from_args(args)
    assert (config.k, config.budget, config.state_dir) == (6, 0.02, tmp_path / "flag")
