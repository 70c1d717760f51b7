"""Task images: local files from the document root only, Label Studio's uploads with its key, the
key never sent to another host, and download errors that name task and URL but no secret."""

from __future__ import annotations

import json
import time

import httpx
import jwt
import numpy as np
import pytest

from backend.labelstudio.connection import label_studio_auth
from backend.labelstudio.images import ImageFetcher, ImageFetchError
from tests.fakes import LEGACY_KEY, PASSWORD, png_bytes

LS_URL = "http://ls.test:8080"
JWT_KEY = "signing-key-of-the-fake-server-0123456789"


def PUBLIC(host: str, port: int) -> list[str]:
    """Resolver for the fake image hosts: a public address (test_exposure.py covers
    the refused ones)."""
    return ["93.184.216.34"]


def keyed_fetcher(transport: httpx.MockTransport, **kwargs) -> ImageFetcher:
    """A fetcher for the Label Studio at ``LS_URL`` holding the legacy key."""
    return ImageFetcher(
        LS_URL, lambda: {"Authorization": f"Token {LEGACY_KEY}"}, transport=transport, **kwargs
    )


def mock_label_studio(
    routes: dict[str, httpx.Response | Exception], seen: list[httpx.Request]
) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = routes.get(str(request.url), httpx.Response(404))
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle)


def test_local_file_is_read_from_the_document_root(tmp_path):
    root = tmp_path / "root"
    (root / "case1").mkdir(parents=True)
    pixels = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    (root / "case1" / "slice 0.png").write_bytes(png_bytes(pixels))
    fetcher = ImageFetcher(local_files_root=root)
    task = {"id": 5, "data": {"image": "/data/local-files/?d=case1/slice%200.png"}}
    np.testing.assert_array_equal(fetcher.fetch(task, "image"), pixels.astype(np.float32))


@pytest.mark.parametrize(
    "relative", ["../outside.png", "case1/../../outside.png", "/../outside.png", "link/outside.png"]
)
def test_local_files_path_escaping_the_root_is_refused(tmp_path, relative):
    root = tmp_path / "root"
    (root / "case1").mkdir(parents=True)
    (tmp_path / "outside.png").write_bytes(png_bytes(np.zeros((10, 10), np.uint8)))
    (root / "link").symlink_to(
        tmp_path, target_is_directory=True
    )  # a symlink out of the root is an escape too
    fetcher = ImageFetcher(local_files_root=root)
    with pytest.raises(
        ImageFetchError, match=r"task 5: .*resolves outside LOCAL_FILES_DOCUMENT_ROOT"
    ):
        fetcher.fetch({"id": 5, "data": {"image": f"/data/local-files/?d={relative}"}}, "image")


def test_task_without_the_image_key_is_an_error_naming_it():
    with pytest.raises(
        ImageFetchError, match=r"task 9 has no image under data\['image'\] \(data keys: \['img'\]\)"
    ):
        ImageFetcher().fetch({"id": 9, "data": {"img": "/data/upload/1/a.png"}}, "image")


def test_upload_is_fetched_from_label_studio_with_the_legacy_token(tmp_path):
    pixels = np.full((9, 11), 7, dtype=np.uint8)
    seen: list[httpx.Request] = []
    transport = mock_label_studio(
        {f"{LS_URL}/data/upload/3/abc-slice.png": httpx.Response(200, content=png_bytes(pixels))},
        seen,
    )
    auth = label_studio_auth(LS_URL, LEGACY_KEY, transport=transport)
    fetcher = ImageFetcher(LS_URL, auth, transport=transport)
    image = fetcher.fetch({"id": 1, "data": {"image": "/data/upload/3/abc-slice.png"}}, "image")
    np.testing.assert_array_equal(image, pixels.astype(np.float32))
    assert seen[-1].headers["Authorization"] == f"Token {LEGACY_KEY}"


def test_personal_access_token_is_exchanged_before_fetching():
    now = int(time.time())
    refresh = jwt.encode(
        {"token_type": "refresh", "exp": now + 3600, "user_id": 1}, JWT_KEY, algorithm="HS256"
    )
    access = jwt.encode(
        {"token_type": "access", "exp": now + 300, "user_id": 1}, JWT_KEY, algorithm="HS256"
    )
    seen: list[httpx.Request] = []
    transport = mock_label_studio(
        {f"{LS_URL}/api/token/refresh/": httpx.Response(200, json={"access": access})}, seen
    )
    headers = label_studio_auth(LS_URL, refresh, transport=transport)()
    assert headers == {"Authorization": f"Bearer {access}"}
    assert json.loads(seen[0].content) == {"refresh": refresh}


def test_expired_personal_access_token_is_refused_up_front():
    expired = jwt.encode(
        {"token_type": "refresh", "exp": int(time.time()) - 10}, JWT_KEY, algorithm="HS256"
    )
    with pytest.raises(ImageFetchError, match="LABEL_STUDIO_API_KEY is not usable: .*expired"):
        label_studio_auth(LS_URL, expired)


def test_absolute_url_elsewhere_never_gets_the_key():
    seen: list[httpx.Request] = []
    url = "https://images.example.org/a.png"
    transport = mock_label_studio(
        {url: httpx.Response(200, content=png_bytes(np.zeros((8, 8), np.uint8)))}, seen
    )
    fetcher = keyed_fetcher(
        transport,
        allowed_hosts=["images.example.org"],
        resolver=PUBLIC,
    )
    fetcher.fetch({"id": 2, "data": {"image": url}}, "image")
    assert "Authorization" not in seen[0].headers


@pytest.mark.parametrize(
    "answer,message",
    [
        (httpx.Response(404), "not found \\(HTTP 404\\)"),
        (httpx.Response(401), "Label Studio refused the API key \\(HTTP 401\\)"),
        (
            httpx.Response(200, content=b"\x89PNG\r\n\x1a\n broken"),
            "not a PNG, JPEG, TIFF image",
        ),
        (httpx.ReadTimeout("timed out"), "no answer within 30.0 s"),
        (httpx.ConnectError("connection refused"), "cannot be downloaded: ConnectError"),
    ],
    ids=["404", "401", "broken-bytes", "timeout", "unreachable"],
)
def test_download_errors_name_task_and_url_but_not_the_token(answer, message):
    transport = mock_label_studio({f"{LS_URL}/data/upload/3/slice.png": answer}, [])
    fetcher = keyed_fetcher(transport)
    with pytest.raises(
        ImageFetchError, match=rf"^task 44: image /data/upload/3/slice\.png(:| is) .*{message}"
    ) as caught:
        fetcher.fetch({"id": 44, "data": {"image": "/data/upload/3/slice.png"}}, "image")
    assert LEGACY_KEY not in str(caught.value)


def test_download_error_message_carries_no_secret_of_the_url():
    url = f"https://annotator:{PASSWORD}@images.test/a.png?api_key={LEGACY_KEY}"
    transport = mock_label_studio({}, [])  # every URL answers 404
    fetcher = keyed_fetcher(
        transport,
        allowed_hosts=["images.test"],
        resolver=PUBLIC,
    )
    with pytest.raises(ImageFetchError, match="not found") as caught:
        fetcher.fetch({"id": 3, "data": {"image": url}}, "image")
    assert LEGACY_KEY not in str(caught.value) and PASSWORD not in str(caught.value)
    assert "images.test/a.png" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://ls.test/a.png",
        "javascript:alert(1)",
        "gopher://ls.test:8080/a.png",
    ],
)
def test_unsupported_url_schemes_are_refused_without_a_request(url):
    seen: list[httpx.Request] = []
    fetcher = keyed_fetcher(
        mock_label_studio({}, seen),
    )
    scheme = url.split(":", 1)[0]
    with pytest.raises(
        ImageFetchError, match=rf"^task 4: image .*URL scheme '{scheme}' is not supported"
    ):
        fetcher.fetch({"id": 4, "data": {"image": url}}, "image")
    assert seen == []


def test_download_above_the_byte_cap_is_refused():
    content = png_bytes(np.zeros((64, 64), np.uint8))
    url = f"{LS_URL}/data/upload/3/big.png"
    fetcher = keyed_fetcher(
        mock_label_studio({url: httpx.Response(200, content=content)}, []),
        max_bytes=len(content) - 1,
    )
    with pytest.raises(ImageFetchError, match=rf"larger than {len(content) - 1} bytes; refused"):
        fetcher.fetch({"id": 6, "data": {"image": "/data/upload/3/big.png"}}, "image")
    fetcher.max_bytes = len(content)  # exactly at the cap: accepted
    assert fetcher.fetch({"id": 6, "data": {"image": "/data/upload/3/big.png"}}, "image").shape == (
        64,
        64,
    )


def test_redirect_to_another_host_drops_the_key():
    seen: list[httpx.Request] = []
    elsewhere = "https://bucket.storage.test/a.png?X-Amz-Signature=abc"
    routes = {
        f"{LS_URL}/tasks/5/presign/?fileuri=czM6Ly9iL2EucG5n": httpx.Response(
            303, headers={"Location": elsewhere}
        ),
        elsewhere: httpx.Response(200, content=png_bytes(np.full((8, 8), 3, np.uint8))),
    }
    fetcher = keyed_fetcher(
        mock_label_studio(routes, seen),
        resolver=PUBLIC,
    )
    image = fetcher.fetch({"id": 5, "data": {"image": "s3://b/a.png"}}, "image")
    assert float(image.max()) == 3.0
    assert [str(request.url) for request in seen] == list(routes)
    assert (
        seen[0].headers["Authorization"] == f"Token {LEGACY_KEY}"
    )  # the presign call is Label Studio's
    assert "Authorization" not in seen[1].headers


def test_redirect_within_label_studio_keeps_the_key():
    seen: list[httpx.Request] = []
    moved = f"{LS_URL}/data/upload/3/moved.png"
    routes = {
        f"{LS_URL}/data/upload/3/a.png": httpx.Response(302, headers={"Location": moved}),
        moved: httpx.Response(200, content=png_bytes(np.zeros((8, 8), np.uint8))),
    }
    fetcher = keyed_fetcher(
        mock_label_studio(routes, seen),
    )
    fetcher.fetch({"id": 5, "data": {"image": "/data/upload/3/a.png"}}, "image")
    assert [request.headers.get("Authorization") for request in seen] == [f"Token {LEGACY_KEY}"] * 2


@pytest.mark.parametrize(
    "url",
    [
        "http://ls.test:8080@evil.test/data/upload/1/a.png",  # Label Studio's host as the user name
        "http://ls.test.evil.test:8080/data/upload/1/a.png",  # a longer host name
        "http://evil.test/ls.test:8080/data/upload/1/a.png",  # in the path
        "https://ls.test:8080/data/upload/1/a.png",  # another scheme
        "http://ls.test:8081/data/upload/1/a.png",  # another port
        "http://user@ls.test:8080/data/upload/1/a.png",  # user info: not Label Studio's URL as set
    ],
)
def test_lookalike_of_the_label_studio_host_never_gets_the_key(url):
    seen: list[httpx.Request] = []
    # Lookalike hosts allow-listed on purpose, so the request goes out: without the key.
    fetcher = keyed_fetcher(
        mock_label_studio({}, seen),
        resolver=PUBLIC,
        allowed_hosts=["evil.test", "ls.test.evil.test", "ls.test"],
    )
    with pytest.raises(ImageFetchError, match="not found"):
        fetcher.fetch({"id": 8, "data": {"image": url}}, "image")
    (request,) = seen
    # httpx sends a URL's own user info as Basic auth; the key itself must never go out.
    assert all(LEGACY_KEY not in value for value in request.headers.values())
    assert LEGACY_KEY not in str(request.url)


@pytest.mark.parametrize("url", ["http://ls.test:8080.evil.test/a.png", "http://[::1/a.png"])
def test_malformed_url_is_an_error_of_its_task(url):
    # Anything but ImageFetchError escapes the score job's per-task handling and fails the job.
    fetcher = keyed_fetcher(
        mock_label_studio({}, []),
    )
    with pytest.raises(ImageFetchError, match=r"^task 8: image .* is not a valid URL"):
        fetcher.fetch({"id": 8, "data": {"image": url}}, "image")


def test_upload_without_label_studio_url_is_an_error():
    with pytest.raises(ImageFetchError, match="LABEL_STUDIO_URL is not set"):
        ImageFetcher().fetch({"id": 1, "data": {"image": "/data/upload/1/a.png"}}, "image")
