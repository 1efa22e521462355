"""deploy/nginx.conf in front of the gateway: the real nginx, on 127.0.0.1."""
import base64
import io

import pytest
import requests
from PIL import Image

from tests.integration.conftest import AUTH, start_nginx, stop

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def nginx(gateway_url, tls_certificate, tmp_path_factory):
    process, url, plain = start_nginx(gateway_url, tls_certificate, tmp_path_factory.mktemp("nginx"))
    yield url, plain
    stop(process)


@pytest.fixture
def nginx_url(nginx):
    return nginx[0]


@pytest.fixture(autouse=True)
def trust_the_test_certificate(monkeypatch, tls_certificate):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_certificate[0]))


def test_generation_through_nginx(nginx_url):
    response = requests.post(f"{nginx_url}/v1/images/generations", headers=AUTH, timeout=60,
                             json={"prompt": "through the proxy", "size": "1536x1024"})
    assert response.status_code == 200
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
    assert (image.format, image.size) == ("PNG", (1264, 848))
    assert len(response.headers["X-Request-ID"]) == 32  # nginx's $request_id, used by the gateway


def test_multipart_edit_through_nginx(nginx_url):
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (10, 200, 10)).save(buffer, "PNG")
    response = requests.post(f"{nginx_url}/v1/images/edits", headers=AUTH, timeout=60,
                             files=[("image", ("a.png", buffer.getvalue(), "image/png"))],
                             data={"prompt": "proxy edit", "n": "2"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2


def test_client_request_id_passes_through_nginx(nginx_url):
    response = requests.get(f"{nginx_url}/health", headers={"X-Request-ID": "edge-77"}, timeout=10)
    assert response.headers["X-Request-ID"] == "edge-77"


def test_gateway_errors_pass_through_as_json(nginx_url):
    response = requests.post(f"{nginx_url}/v1/images/generations", headers=AUTH, json={}, timeout=30)
    assert response.status_code == 400
    assert response.json() == {"error": True, "status": 400, "message": "Invalid request parameters: prompt: Required"}


def test_nginx_own_413_is_json(nginx_url):
    response = requests.post(f"{nginx_url}/v1/images/generations", data=b"x" * (50 * 1024 * 1024 + 1),
                             headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 413
    assert response.json()["status"] == 413 and response.json()["error"] is True


def test_plain_http_is_redirected_to_https(nginx):
    response = requests.get(nginx[1] + "/v1/models", allow_redirects=False, timeout=10)
    assert response.status_code == 301
    assert response.headers["Location"].startswith("https://")


def test_nginx_own_errors_answer_openais_sdks_in_openais_body(nginx_url):
    response = requests.post(f"{nginx_url}/v1/images/generations", data=b"x" * (50 * 1024 * 1024 + 1),
                             headers={**AUTH, "Content-Type": "application/json", "X-Stainless-Lang": "python"},
                             timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_nginx_own_errors_follow_the_openai_format_when_told(gateway_url, tls_certificate, tmp_path):
    process, url, _ = start_nginx(gateway_url, tls_certificate, tmp_path, openai_errors=True)
    try:
        response = requests.post(f"{url}/v1/images/generations", data=b"x" * (50 * 1024 * 1024 + 1),
                                 headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
    finally:
        stop(process)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"
