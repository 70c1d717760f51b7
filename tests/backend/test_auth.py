"""Basic auth guards every route, and secrets stay out of the logs and of logged URLs."""

from __future__ import annotations

import logging

import pytest

from backend.redact import redact
from tests.fakes import LABEL_CONFIG, LEGACY_KEY, PASSWORD, USER, basic

# Every route with a body it accepts (/setup refuses schemas without a brush).
ROUTES = [
    ("GET", "/", None),
    ("GET", "/health", None),
    ("POST", "/setup", {"project": "3.1700000000", "schema": LABEL_CONFIG}),
    ("POST", "/predict", {"tasks": [{"id": 1, "data": {}}], "project": "3.1700000000"}),
    ("POST", "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 3}}),
    ("GET", "/metrics", None),
    ("GET", "/versions", None),
]
# Routes whose success needs state (a training run): only their protection is checked here.
STATEFUL_ROUTES = [("GET", "/metrics/plot", None)]


@pytest.mark.parametrize("method,path,body", ROUTES)
def test_every_route_answers_without_auth_configured(make_client, method, path, body):
    client, _, _ = make_client(auth=False)
    response = client.open(path, method=method, json=body)
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("method,path,body", ROUTES + STATEFUL_ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic(USER, "wrong"),
        basic("intruder", PASSWORD),
        basic(USER, PASSWORD + "x"),
        {"Authorization": "Basic !!!"},
        {"Authorization": f"Token {PASSWORD}"},
    ],
    ids=["missing", "wrong-pass", "wrong-user", "longer-pass", "garbled", "not-basic"],
)
def test_every_route_rejects_wrong_credentials(make_client, method, path, body, headers):
    client, jobs, _ = make_client(auth=True)
    response = client.open(path, method=method, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="sugfw"')
    assert jobs.pending() == []  # a rejected webhook or setup queues nothing


@pytest.mark.parametrize("method,path,body", ROUTES)
def test_every_route_accepts_right_credentials(make_client, method, path, body):
    client, _, _ = make_client(auth=True)
    response = client.open(path, method=method, json=body, headers=basic(USER, PASSWORD))
    assert response.status_code == 200, response.get_json()


def test_secrets_in_payloads_never_reach_the_logs(make_client, caplog):
    client, _, _ = make_client(auth=True)
    secrets = [
        "ls-project-token-1f2e",
        "setup-access-token-9a8b",
        "nested-api-key-77",
        "webhook-secret-42",
    ]
    headers = basic(USER, PASSWORD)
    with caplog.at_level(logging.DEBUG):
        client.post(
            "/webhook",
            headers=headers,
            json={
                "action": "ANNOTATION_CREATED",
                "project": {"id": 5, "token": secrets[0], "created_by": {"api_key": secrets[2]}},
                "annotation": {"id": 1, "result": [{"meta": {"Webhook_Secret": secrets[3]}}]},
            },
        )
        client.post(
            "/setup",
            headers=headers,
            json={"project": "5.1", "schema": "<View/>", "access_token": secrets[1]},
        )
        client.post(
            "/predict",
            headers=headers,
            json={"tasks": [], "project": "5.1", "params": {"token": secrets[0]}},
        )
        client.post(
            "/webhook", headers=basic(USER, "wrong"), json={"action": "X", "token": secrets[0]}
        )
    assert "webhook body (redacted)" in caplog.text  # the bodies were logged, redacted
    for secret in secrets + [PASSWORD]:
        assert secret not in caplog.text
        assert all(secret not in str(record.args) for record in caplog.records)


def test_redact_masks_secret_keys_at_any_depth_and_keeps_the_rest():
    payload = {
        "id": 1,
        "Authorization": "Token x",
        "items": [{"password": "p", "name": "n"}],
        "meta": {"refresh_token": "r", "n": 2},
    }
    assert redact(payload) == {
        "id": 1,
        "Authorization": "***",
        "items": [{"password": "***", "name": "n"}],
        "meta": {"refresh_token": "***", "n": 2},
    }
    assert payload["items"][0]["password"] == "p"  # the original is untouched


@pytest.mark.parametrize(
    "url,host,query",
    [
        (f"https://annotator:{PASSWORD}@ls.test/data/upload/1/a.png", "***@ls.test", {}),
        (f"https://ls.test/a.png?token={LEGACY_KEY}&d=x", "ls.test", {"token": "***", "d": "x"}),
        (
            f"https://s3.test/b.png?X-Amz-Date=1&X-Api-Key={LEGACY_KEY}",
            "s3.test",
            {"X-Amz-Date": "1", "X-Api-Key": "***"},
        ),
        (
            f"https://u:{PASSWORD}@evil.test@ls.test/?access_token={LEGACY_KEY}",
            "***@ls.test",
            {"access_token": "***"},
        ),
    ],
    ids=["userinfo", "token-query", "api-key-query", "two-at-signs"],
)
def test_redact_url_removes_the_secret_and_keeps_the_rest(url, host, query):
    from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

    from backend.redact import redact_url

    redacted = redact_url(url)
    for secret in (LEGACY_KEY, PASSWORD, quote(PASSWORD), quote_plus(PASSWORD)):
        assert secret not in redacted
    parts = urlsplit(redacted)
    assert parts.netloc == host
    assert dict(parse_qsl(parts.query)) == query
