"""The backend's door and exposure: bad input gets its 4xx, image fetching refuses server-side
request forgery before any request is sent, secrets of signed URLs stay out of the logs, and the
server will not listen beyond loopback without Basic auth unless told to."""

from __future__ import annotations

import base64
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from backend import _wsgi
from backend.config import BackendConfig
from backend.jobs.queue import JobQueue
from backend.labelstudio import image_policy, images
from backend.labelstudio.images import ImageFetcher, ImageFetchError, refused_address
from backend.model import SugfwModel
from backend.redact import redact, redact_url
from backend.server.app import create_app
from tests.fakes import LABEL_CONFIG, Recorder, png_bytes

POLYGON_CONFIG = (
    '<View><Image name="image" value="$image"/><PolygonLabels name="p" toName="image">'
    '<Label value="a"/></PolygonLabels></View>'
)
CHOICES_CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="c" toName="image">'
    '<Choice value="a"/></Choices></View>'
)
LS_URL = "http://127.0.0.1:8080"  # Label Studio on loopback, as the launcher runs it
KEY = "0123456789abcdef0123456789abcdef01234567"
PUBLIC_IP = "93.184.216.34"


def png(side: int = 8, value: int = 5) -> bytes:
    return png_bytes(np.full((side, side), value, np.uint8))


def data_url(content: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(content).decode()


def public(host: str, port: int) -> list[str]:
    return [PUBLIC_IP]


def fetcher(recorder: Recorder, **kwargs) -> ImageFetcher:
    kwargs.setdefault("resolver", public)
    return ImageFetcher(
        LS_URL, lambda: {"Authorization": f"Token {KEY}"}, transport=recorder.transport, **kwargs
    )


def fetch(fetcher: ImageFetcher, url: str, task_id: int = 1) -> np.ndarray:
    return fetcher.fetch({"id": task_id, "data": {"image": url}}, "image")


# -- input at the door ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "project", ["abc", "3abc", "3.x", "-1", "0", "", "3; drop", 0, 1.5, None, True]
)
def test_setup_with_a_project_id_that_is_no_id_is_a_400_and_queues_nothing(door, project):
    client, jobs, _ = door()
    response = client.post("/setup", json={"project": project, "schema": LABEL_CONFIG})
    assert response.status_code == 400, response.get_json()
    assert "project" in response.get_json()["error"]
    assert jobs.pending() == []


@pytest.mark.parametrize("project", ["3.1700000000", "3", 3])
def test_setup_accepts_the_forms_label_studio_sends(door, project):
    client, jobs, _ = door()
    response = client.post("/setup", json={"project": project, "schema": LABEL_CONFIG})
    assert response.status_code == 200, response.get_json()
    assert [(job.kind, job.project) for job in jobs.pending()] == [("score", "3")]


@pytest.mark.parametrize("project", ["abc", {"id": "abc"}, {"id": "4.5.6"}, {"id": -2}, {"id": 0}])
def test_webhook_with_a_project_id_that_is_no_id_is_a_400_and_queues_nothing(door, project):
    client, jobs, _ = door()
    response = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": project})
    assert response.status_code == 400
    assert "project id" in response.get_json()["error"]
    assert jobs.pending() == []


def test_webhook_with_a_numeric_string_id_is_queued_under_the_number(door):
    client, jobs, _ = door()
    assert (
        client.post(
            "/webhook", json={"action": "START_TRAINING", "project": {"id": "7"}}
        ).status_code
        == 200
    )
    assert [(job.kind, job.project) for job in jobs.pending()] == [("train", "7")]


def test_setup_with_a_schema_without_brush_or_polygon_is_a_400(door):
    client, jobs, _ = door()
    response = client.post("/setup", json={"project": "3.1", "schema": CHOICES_CONFIG})
    assert response.status_code == 400
    assert "no BrushLabels or PolygonLabels tag" in response.get_json()["error"]
    assert jobs.pending() == []
    assert client.post("/setup", json={"project": "3.1", "schema": "<View"}).status_code == 400
    assert (
        client.post("/setup", json={"project": "3.1", "schema": POLYGON_CONFIG}).status_code == 200
    )


def test_body_over_the_size_limit_is_a_413_and_queues_nothing(door):
    client, jobs, _ = door(max_request_bytes=2048)
    padding = "x" * 4096
    for path, body in (
        ("/webhook", {"action": "START_TRAINING", "project": {"id": 3}, "pad": padding}),
        ("/setup", {"project": "3.1", "schema": LABEL_CONFIG, "pad": padding}),
        ("/predict", {"tasks": [], "pad": padding}),
    ):
        response = client.post(path, json=body)
        assert response.status_code == 413, path
        assert "error" in response.get_json()
    assert jobs.pending() == []
    small = {"action": "START_TRAINING", "project": {"id": 3}}
    assert client.post("/webhook", json=small).status_code == 200  # under the limit: served


def test_request_size_limit_defaults_to_8_mib_and_reads_the_environment():
    assert BackendConfig().max_request_bytes == 8 * 1024 * 1024
    assert BackendConfig.from_env({"SUGFW_MAX_REQUEST_BYTES": "1000"}).max_request_bytes == 1000


@pytest.mark.parametrize("url", ["http://[x/", "http://[::1/a.png", "https://host:99999/a.png"])
def test_predict_with_a_malformed_image_url_is_a_400_naming_the_task(door, url):
    client, _, _ = door()
    body = {"tasks": [{"id": 5, "data": {"image": url}}], "label_config": LABEL_CONFIG}
    response = client.post("/predict", json=body)
    assert response.status_code == 400, response.get_json()
    assert (
        "task 5" in response.get_json()["error"]
        and "not a valid URL" in response.get_json()["error"]
    )


# -- /predict stores nothing for tasks Label Studio does not hold ----------------------------------


class StubScorer:
    """A whole-image mask per slice: the storage decision is under test, not the scoring."""

    def __init__(self) -> None:
        self.scored: list[str] = []

    def score(self, image: np.ndarray, slice_id: str) -> SimpleNamespace:
        self.scored.append(slice_id)
        return SimpleNamespace(union_mask=np.ones(image.shape, bool))


def predict_model(
    tmp_path, routes: dict[str, httpx.Response] | None, recorder_out: list
) -> SugfwModel:
    settings = (
        {}
        if routes is None
        else {"label_studio_url": "http://ls.test:8080", "label_studio_api_key": KEY}
    )
    config = BackendConfig(state_dir=tmp_path / "state", **settings)
    recorder = Recorder(routes)
    recorder_out.append(recorder)
    return SugfwModel(
        config,
        scorer=StubScorer(),
        fetcher=lambda: ImageFetcher(),
        label_studio_transport=recorder.transport,
    )


def test_predict_for_a_task_label_studio_does_not_know_is_answered_but_never_stored(tmp_path):
    image = data_url(png())
    known = {"id": 78, "data": {"image": image}}
    routes = {
        "http://ls.test:8080/api/tasks/78/": httpx.Response(
            200, json={"id": 78, "data": {"image": image}}
        ),
        # Label Studio holds task 79, but with another image: an attacker's URL under a real id.
        "http://ls.test:8080/api/tasks/79/": httpx.Response(
            200, json={"id": 79, "data": {"image": "/x.png"}}
        ),
    }
    recorders: list[Recorder] = []
    model = predict_model(tmp_path, routes, recorders)
    client = create_app(model.config, model, JobQueue(model.config.state_dir)).test_client()
    tasks = [{"id": 77, "data": {"image": image}}, known, {"id": 79, "data": {"image": image}}]
    response = client.post("/predict", json={"tasks": tasks, "label_config": LABEL_CONFIG})
    assert response.status_code == 200
    assert [len(item["result"]) for item in response.get_json()["results"]] == [1, 1, 1]
    assert model.predictions.get(77) is None  # unknown to Label Studio (404)
    assert model.predictions.get(79) is None  # known id, other image
    assert model.predictions.get(78) is not None  # verified: stored
    assert [url.split("/api/")[1] for url in recorders[0].seen] == [
        "tasks/77/",
        "tasks/78/",
        "tasks/79/",
    ]
    assert all(request.startswith("http://ls.test:8080/") for request in recorders[0].seen)


def test_predict_without_label_studio_configured_stores_nothing(tmp_path):
    recorders: list[Recorder] = []
    model = predict_model(tmp_path, None, recorders)
    (result,) = model.predict(
        [{"id": 5, "data": {"image": data_url(png())}}], label_config=LABEL_CONFIG
    )
    assert len(result["result"]) == 1
    assert model.predictions.get(5) is None and recorders[0].seen == []


# -- SSRF: refused before a request is sent --------------------------------------------------------


@pytest.mark.parametrize(
    "url,reason",
    [
        ("http://127.0.0.1:9000/a.png", "loopback"),
        ("http://[::1]:9000/a.png", "loopback"),
        ("http://[::ffff:127.0.0.1]/a.png", "loopback"),
        ("http://169.254.169.254/latest/meta-data/iam/", "link-local"),
        ("http://10.0.0.5/a.png", "private"),
        ("http://192.168.1.10/a.png", "private"),
        ("http://0.0.0.0/a.png", "unspecified"),
        ("http://224.0.0.1/a.png", "multicast"),
    ],
)
def test_private_targets_are_refused_without_a_request_even_when_listed(url, reason):
    recorder = Recorder()
    host = httpx.URL(url).host
    # Listed on purpose: the address rules hold for listed hosts too (a literal resolves to
    # itself).
    guarded = fetcher(recorder, allowed_hosts=[host], resolver=images.resolve_host)
    with pytest.raises(ImageFetchError, match=rf"{reason} address; refused"):
        fetch(guarded, url)
    assert recorder.seen == []


def test_hostname_resolving_to_a_private_address_is_refused_without_a_request(monkeypatch):
    answers = {
        "images.example.org": ["10.20.30.40"],
        "mixed.example.org": [PUBLIC_IP, "192.168.0.9"],
    }
    monkeypatch.setattr(images, "resolve_host", lambda host, port: answers[host])
    recorder = Recorder()
    guarded = ImageFetcher(
        LS_URL,
        transport=recorder.transport,
        allowed_hosts=["images.example.org", "mixed.example.org"],
    )
    with pytest.raises(
        ImageFetchError, match=r"'images.example.org' resolves to 10.20.30.40, a private"
    ):
        fetch(guarded, "https://images.example.org/a.png")
    # Every address is checked, not just the first.
    with pytest.raises(ImageFetchError, match=r"resolves to 192.168.0.9, a private address"):
        fetch(guarded, "https://mixed.example.org/a.png")
    assert recorder.seen == []


def test_host_outside_the_allow_list_is_refused_without_resolving_or_sending(monkeypatch):
    def resolver(host, port):
        raise AssertionError("an unlisted host must not even be resolved")

    recorder = Recorder()
    guarded = fetcher(
        recorder, allowed_hosts=["images.example.org", "*.s3.amazonaws.com"], resolver=resolver
    )
    for url in (
        "https://evil.example.com/a.png",
        "https://images.example.org.evil.com/a.png",
        "https://s3.amazonaws.com.evil.com/a.png",
    ):
        with pytest.raises(
            ImageFetchError, match="neither Label Studio's nor listed in SUGFW_IMAGE_HOSTS"
        ):
            fetch(guarded, url)
    assert recorder.seen == []


def test_listed_hosts_ports_and_wildcards_are_fetched():
    urls = [
        "https://images.example.org/a.png",
        "https://bucket.s3.amazonaws.com/a.png",
        "http://pacs.example.org:8042/a.png",
    ]
    recorder = Recorder({url: httpx.Response(200, content=png()) for url in urls})
    guarded = fetcher(
        recorder,
        allowed_hosts=["images.example.org", "*.s3.amazonaws.com", "pacs.example.org:8042"],
    )
    for url in urls:
        assert fetch(guarded, url).shape == (8, 8)
    with pytest.raises(ImageFetchError, match="nor listed"):
        fetch(guarded, "http://pacs.example.org:8043/a.png")  # listed with another port
    assert recorder.seen == urls


@pytest.mark.parametrize(
    "location",
    [
        "http://10.0.0.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/x",
        "http://internal.example.org/a.png",
        "file:///etc/passwd",
    ],
)
def test_redirect_from_an_allowed_host_to_a_private_target_is_refused_unsent(monkeypatch, location):
    start = "https://images.example.org/a.png"
    monkeypatch.setattr(
        images,
        "resolve_host",
        lambda host, port: (
            {
                "images.example.org": [PUBLIC_IP],
                "internal.example.org": ["10.9.9.9"],
            }.get(host)
            or [host]
        ),
    )
    recorder = Recorder({start: httpx.Response(302, headers={"Location": location})})
    guarded = ImageFetcher(
        "http://ls.test:8080",
        transport=recorder.transport,
        allowed_hosts=[
            "images.example.org",
            "internal.example.org",
            "10.0.0.1",
            "169.254.169.254",
            "127.0.0.1",
        ],
    )
    with pytest.raises(ImageFetchError, match="refused"):
        fetch(guarded, start)
    assert recorder.seen == [start]  # the redirect target never got a request


def test_redirect_issued_by_label_studio_is_still_address_checked(monkeypatch):
    monkeypatch.setattr(images, "resolve_host", lambda host, port: ["172.16.0.3"])
    presign = f"{LS_URL}/tasks/4/presign/?fileuri=czM6Ly9iL2EucG5n"
    recorder = Recorder(
        {presign: httpx.Response(303, headers={"Location": "https://bucket.internal/a"})}
    )
    with pytest.raises(ImageFetchError, match="172.16.0.3, a private address; refused"):
        fetch(fetcher(recorder, resolver=None), "s3://b/a.png", task_id=4)
    assert recorder.seen == [presign]


def test_redirects_are_capped():
    loop = "https://images.example.org/loop"
    recorder = Recorder({loop: httpx.Response(302, headers={"Location": loop})})
    with pytest.raises(ImageFetchError, match="more than 3 redirects; refused"):
        fetch(fetcher(recorder, allowed_hosts=["images.example.org"], max_redirects=3), loop)
    assert len(recorder.seen) == 4


def test_label_studio_on_loopback_is_still_fetched_with_its_key():
    def resolver(host, port):
        raise AssertionError("Label Studio's own origin is the configured server: not resolved")

    seen: list[httpx.Request] = []

    def handle(request):
        seen.append(request)
        return httpx.Response(200, content=png(value=9))

    guarded = ImageFetcher(
        LS_URL,
        lambda: {"Authorization": f"Token {KEY}"},
        transport=httpx.MockTransport(handle),
        resolver=resolver,
    )
    assert float(fetch(guarded, "/data/upload/1/a.png").max()) == 9.0
    assert float(fetch(guarded, f"{LS_URL}/data/upload/1/b.png").max()) == 9.0
    assert [request.headers["Authorization"] for request in seen] == [f"Token {KEY}"] * 2


def test_private_addresses_of_listed_hosts_only_with_the_explicit_setting():
    url = "http://pacs.hospital.lan/a.png"
    recorder = Recorder({url: httpx.Response(200, content=png())})
    resolver = lambda host, port: ["10.1.1.1"]  # noqa: E731
    with pytest.raises(ImageFetchError, match="private address"):
        fetch(fetcher(recorder, allowed_hosts=["pacs.hospital.lan"], resolver=resolver), url)
    allowed = fetcher(
        recorder, allowed_hosts=["pacs.hospital.lan"], resolver=resolver, allow_private=True
    )
    assert fetch(allowed, url).shape == (8, 8)
    assert refused_address("169.254.169.254", allow_private=True) == "a link-local address"
    assert refused_address("fe80::1", allow_private=True) == "a link-local address"


class CountingServer:
    """A real HTTP server on 127.0.0.1 that counts the requests it gets."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append(self.headers.get("Host", ""))
                body = png(value=3)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting_server():
    server = CountingServer()
    yield server
    server.close()


def test_real_connection_to_loopback_is_never_opened(counting_server):
    guarded = ImageFetcher("http://ls.test:8080", allowed_hosts=["127.0.0.1", "localhost"])
    for url in (
        f"http://127.0.0.1:{counting_server.port}/a.png",
        f"http://localhost:{counting_server.port}/a.png",
    ):
        with pytest.raises(ImageFetchError, match="loopback address; refused"):
            fetch(guarded, url)
    assert counting_server.requests == []


def test_connection_goes_to_the_checked_address_not_a_second_dns_answer(counting_server):
    # "images.test" has no DNS entry: the request can only arrive if the connection uses the
    # address the check resolved (pinned), with the host name kept in the Host header.
    answers = iter([["127.0.0.1"], ["203.0.113.7"]])  # a rebinding resolver would answer anew
    guarded = ImageFetcher(
        allowed_hosts=["images.test"], allow_private=True, resolver=lambda host, port: next(answers)
    )
    assert float(fetch(guarded, f"http://images.test:{counting_server.port}/a.png").max()) == 3.0
    assert counting_server.requests == [f"images.test:{counting_server.port}"]


# -- caps on bytes, pixels and time ----------------------------------------------------------------


def test_declared_and_streamed_sizes_over_the_byte_cap_are_refused():
    url = f"{LS_URL}/data/upload/1/big.png"
    declared = Recorder(
        {url: httpx.Response(200, headers={"Content-Length": "999999"}, content=b"x")}
    )
    with pytest.raises(ImageFetchError, match="larger than 1000 bytes; refused"):
        fetch(fetcher(declared, max_bytes=1000), url)
    streamed = Recorder({url: httpx.Response(200, content=png(side=256, value=1) + b"\0" * 2000)})
    with pytest.raises(ImageFetchError, match="larger than 1000 bytes; refused"):
        fetch(fetcher(streamed, max_bytes=1000), url)


def test_image_over_the_pixel_cap_is_refused_before_decoding():
    url = f"{LS_URL}/data/upload/1/wide.png"
    recorder = Recorder({url: httpx.Response(200, content=png(side=200))})
    with pytest.raises(ImageFetchError, match=r"200 x 200 pixels, more than 10000; refused"):
        fetch(fetcher(recorder, max_pixels=10_000), url)
    assert fetch(fetcher(recorder, max_pixels=40_000), url).shape == (200, 200)
    assert BackendConfig().image_max_pixels == 4096 * 4096


def test_download_slower_than_the_deadline_is_refused():
    now = [0.0]

    class Drip(httpx.SyncByteStream):
        def __iter__(self):
            for _ in range(10):
                now[0] += 10.0  # each chunk arrives 10 s after the last, within the read timeout
                yield b"\0" * 10

    url = f"{LS_URL}/data/upload/1/slow.png"
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Drip()))
    slow = ImageFetcher(
        LS_URL, lambda: {}, transport=transport, deadline_s=25.0, clock=lambda: now[0]
    )
    with pytest.raises(ImageFetchError, match="not downloaded within 25.0 s; refused"):
        fetch(slow, url)
    assert now[0] == 30.0  # stopped at the first chunk past the deadline


def test_each_request_waits_at_most_the_time_left():
    timeouts: list[dict] = []
    loop = f"{LS_URL}/data/upload/1/moved.png"

    def handle(request):
        timeouts.append(request.extensions["timeout"])
        return httpx.Response(302, headers={"Location": loop})

    now = [0.0]

    def clock():
        now[0] += 4.0
        return now[0]

    slow = ImageFetcher(
        LS_URL,
        lambda: {},
        transport=httpx.MockTransport(handle),
        timeout_s=30.0,
        deadline_s=10.0,
        clock=clock,
    )
    with pytest.raises(ImageFetchError, match="not downloaded within 10.0 s"):
        fetch(slow, loop)
    # Deadline at 14 s: the first request may wait 6 s, the redirected one 2 s, never 30 s.
    assert [item["read"] for item in timeouts] == [6.0, 2.0]


def test_config_carries_the_image_limits_to_every_fetcher(door):
    door(
        image_hosts=("images.example.org",),
        image_max_pixels=1234,
        image_max_bytes=4321,
        image_deadline_s=7.0,
    )
    try:
        plain = ImageFetcher()  # as the jobs build it, without explicit limits
        assert (plain.max_pixels, plain.max_bytes, plain.deadline_s) == (1234, 4321, 7.0)
        assert plain.allowed_hosts == (("images.example.org", None),)
    finally:
        image_policy.set_default_policy(image_policy.ImagePolicy())
    assert BackendConfig.from_env({"SUGFW_IMAGE_HOSTS": "a.org, *.b.org c.org:81"}).image_hosts == (
        "a.org",
        "*.b.org",
        "c.org:81",
    )


# -- redaction of signed URLs ----------------------------------------------------------------------

AMZ_SIGNATURE = "4f1c7be3a0d5e8b2c9f64a17d3e05b8c21f9a6d47e3b0c58a2d1f7e9b6c4a305"
AMZ_CREDENTIAL = "AKIAIOSFODNN7EXAMPLE/20261201/eu-west-1/s3/aws4_request"
SAS_SIG = "q8Zr3x%2BTn1kVw4Yp0mJc6sLd9Hf2Ag5Bn7Qe1Rt3Uo%3D"
GOOG_SIGNATURE = "7a9c1e3b5d7f90a2c4e6b8d0f1a3c5e7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a9"
SIGNED_URL = (
    "https://bucket.s3.eu-west-1.amazonaws.com/slices/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential={AMZ_CREDENTIAL}&X-Amz-Signature={AMZ_SIGNATURE}&X-Amz-Expires=3600"
)
OTHER_SIGNED = [
    f"https://acct.blob.core.windows.net/c/a.png?sv=2022-11-02&se=2026-12-02&sp=r&sig={SAS_SIG}",
    "https://storage.googleapis.com/b/a.png?X-Goog-Algorithm=GOOG4"
    f"&X-Goog-Signature={GOOG_SIGNATURE}",
    "https://cdn.example.org/a.png?token=eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.sig&w=512",
    "https://cdn.example.org/a.png?access_token=ya29.a0AfH6SMBx-secret-access&signature=abcdef0123",
]
SECRETS = [
    AMZ_SIGNATURE,
    "AKIAIOSFODNN7EXAMPLE",
    "q8Zr3x",
    GOOG_SIGNATURE,
    "c2VjcmV0LXRva2Vu",
    "ya29.a0AfH6SMBx",
    "abcdef0123",
]


@pytest.mark.parametrize("url", [SIGNED_URL, *OTHER_SIGNED])
def test_redact_url_masks_signed_url_parameters(url):
    redacted = redact_url(url)
    assert all(secret not in redacted for secret in SECRETS)
    assert redacted.split("?")[0] == url.split("?")[0]  # where it points stays readable
    assert "X-Amz-Expires=3600" in redact_url(SIGNED_URL) and "sv=2022-11-02" in redact_url(
        OTHER_SIGNED[0]
    )


def test_signed_urls_in_payload_values_are_masked():
    payload = {"tasks": [{"id": 1, "data": {"image": SIGNED_URL, "note": "plain"}}]}
    text = json.dumps(redact(payload))
    assert AMZ_SIGNATURE not in text and "plain" in text


def test_signed_url_secrets_never_reach_the_logs(caplog):
    # httpx itself logs each request URL at INFO; a failing download logs the URL in its error.
    ok, missing = SIGNED_URL, OTHER_SIGNED[0]
    recorder = Recorder({ok: httpx.Response(200, content=png())})
    guarded = fetcher(recorder, allowed_hosts=["*.amazonaws.com", "*.windows.net"])
    with caplog.at_level(logging.DEBUG):
        fetch(guarded, ok)
        with pytest.raises(ImageFetchError) as caught:
            fetch(guarded, missing)
        logging.getLogger("backend").warning("no prediction: %s", caught.value)
    assert "HTTP Request: GET https://bucket.s3.eu-west-1.amazonaws.com/slices/a.png" in caplog.text
    assert recorder.seen == [ok, missing]  # the real URLs were requested
    for secret in SECRETS:
        assert secret not in caplog.text
        assert all(secret not in str(record.args) for record in caplog.records)


def test_predict_body_with_signed_urls_is_logged_redacted(door, caplog):
    client, _, _ = door()
    body = {
        "tasks": [{"id": 1, "data": {"image": url}} for url in [SIGNED_URL, *OTHER_SIGNED]],
        "label_config": LABEL_CONFIG,
    }
    with caplog.at_level(logging.DEBUG, logger="backend"):
        assert client.post("/predict", json=body).status_code == 200
    assert "predict body (redacted)" in caplog.text
    for secret in SECRETS:
        assert secret not in caplog.text


# -- exposure: the bind ----------------------------------------------------------------------------


@pytest.fixture
def no_auth_env(monkeypatch, tmp_path):
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "SUGFW_ALLOW_UNAUTHENTICATED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUGFW_STATE_DIR", str(tmp_path / "state"))
    served: list[str] = []

    class App:
        def run(self, host, port, **kwargs):
            served.append(host)

    monkeypatch.setattr(_wsgi, "build_app", lambda config: App())
    return monkeypatch, served


def test_non_loopback_bind_without_auth_is_refused(no_auth_env, capsys):
    _, served = no_auth_env
    assert _wsgi.main(["--host", "0.0.0.0"]) == 2
    assert "refusing to listen on 0.0.0.0 without Basic auth" in capsys.readouterr().err
    assert _wsgi.main(["--host", "::"]) == 2
    assert served == []


@pytest.mark.parametrize(
    "argv,env",
    [
        ([], {}),
        (["--host", "::1"], {}),
        (["--host", "0.0.0.0", "--allow-unauthenticated"], {}),
        (["--host", "0.0.0.0"], {"SUGFW_ALLOW_UNAUTHENTICATED": "1"}),
        (["--host", "0.0.0.0"], {"BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "p"}),
    ],
    ids=["default-loopback", "v6-loopback", "flag", "env", "basic-auth"],
)
def test_bind_is_served_on_loopback_with_auth_or_when_allowed(no_auth_env, argv, env):
    monkeypatch, served = no_auth_env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _wsgi.main(argv) == 0
    assert served == [argv[1] if argv else "127.0.0.1"]


# -- /setup when Label Studio cannot be reached (a real one: tests/live/test_setup_api_key.py) -----


def test_setup_against_an_unreachable_label_studio_is_a_502(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = BackendConfig(
        state_dir=tmp_path, label_studio_url=f"http://127.0.0.1:{port}", label_studio_api_key=KEY
    )
    client = create_app(config, SugfwModel(config), JobQueue(tmp_path)).test_client()
    response = client.post("/setup", json={"project": "3.1", "schema": LABEL_CONFIG})
    assert response.status_code == 502 and "cannot be reached" in response.get_json()["error"]
