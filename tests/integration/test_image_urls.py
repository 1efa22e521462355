"""`response_format: "url"` under gunicorn (docs/long-generations.md): both official SDKs get URLs
that fetch the PNG with no key, the gateway's own URLs refuse wrong signatures (403) and expired
ones (410) and never serve a file outside the store, and with S3 storage (moto's server) the
presigned URLs fetch the image from the bucket."""
import io
import json
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest
import requests
from PIL import Image

from gateway.storage import FILES_PATH, URLSigner
from tests.integration.conftest import AUTH, CLIENT_KEY, generate, raw_http, refused, start_gateway, stop
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration

NODE = Path(__file__).resolve().parents[1] / "node"
SIGNING_KEY = "integration-url-signing-key"
MODEL = "gemini-2.5-flash-image"


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def url_gateway(emulator_url, tmp_path_factory, store_dir):
    process, url = start_gateway(emulator_url, tmp_path_factory.mktemp("urls") / "gateway.log",
                                 GATEWAY_STORAGE_URL=f"file://{store_dir}", GATEWAY_URL_SIGNING_KEY=SIGNING_KEY)
    yield url
    stop(process)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.close()


@pytest.fixture(scope="module")
def s3_gateway(emulator_url, tmp_path_factory, s3):
    bucket = s3.new_bucket()
    process, url = start_gateway(emulator_url, tmp_path_factory.mktemp("s3") / "gateway.log",
                                 GATEWAY_STORAGE_URL=f"s3://{bucket}/generated", **s3.environ)
    yield url, bucket
    stop(process)


def python_sdk(url):
    return openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60)


def fetched_png(url, size):
    """The image at `url`, fetched with no key: a PNG of `size` (WxH)."""
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, "x".join(map(str, image.size))) == ("PNG", size)
    return response


def test_python_sdk_gets_urls_that_fetch_the_png(url_gateway):
    result = python_sdk(url_gateway).images.generate(prompt="a fox in snow", model=MODEL, n=2, response_format="url")
    assert [item.b64_json for item in result.data] == [None, None]
    assert result.data[0].url.startswith(url_gateway + FILES_PATH) and result.data[0].revised_prompt
    response = fetched_png(result.data[0].url, result.size)
    assert response.headers["Cache-Control"].startswith("private, max-age=")
    fetched_png(result.data[1].url, result.size)


def test_python_sdk_edit_in_multipart_gets_a_url(url_gateway):
    source = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(source, "PNG")
    result = python_sdk(url_gateway).images.edit(image=("in.png", source.getvalue(), "image/png"), model=MODEL,
                                                 prompt="make it blue", response_format="url")
    fetched_png(result.data[0].url, result.size)


def test_node_sdk_gets_a_url_that_fetches_the_png(url_gateway):
    done = subprocess.run(["node", str(NODE / "sdk_url.mjs"), url_gateway + "/v1", CLIENT_KEY, "a node fox"],
                          capture_output=True, text=True, timeout=120, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["url"].startswith(url_gateway + FILES_PATH) and seen["b64_json"] is None
    assert (seen["status"], seen["contentType"], seen["png"]) == (200, "image/png", True)
    assert seen["length"] > 1000


def test_the_image_is_stored_whole_before_the_answer_names_it(url_gateway, store_dir):
    url = generate(url_gateway, "stored first", response_format="url").json()["data"][0]["url"]
    name = urlsplit(url).path.removeprefix(FILES_PATH)
    assert (store_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [path for path in store_dir.iterdir() if path.name.startswith(".partial-")]


def test_a_wrong_or_missing_signature_is_403_and_an_expired_url_410(url_gateway):
    url = generate(url_gateway, "signed", response_format="url").json()["data"][0]["url"]
    path = urlsplit(url).path
    refused(requests.get(url[:-1] + ("0" if url[-1] != "0" else "1"), timeout=10), 403, "signature")
    refused(requests.get(url_gateway + path, timeout=10), 403, "signature")
    refused(requests.get(f"{url_gateway}{FILES_PATH}{'A' * 32}.png?expires={int(time.time()) + 60}&sig={'ab' * 32}",
                         timeout=10), 403)
    past = int(time.time()) - 1
    expired = f"{url_gateway}{path}?expires={past}&sig={URLSigner(SIGNING_KEY.encode()).signature(path, past)}"
    refused(requests.get(expired, timeout=10), 410, "expired")


@pytest.mark.parametrize("target", [
    "..%2F..%2Fgateway.db", "%2e%2e%2fgateway.db", "..%252F..%252Fgateway.db", "%2Fetc%2Fpasswd",
    "x.png%00.png", "..\\..\\gateway.db", ".partial-x",
])
def test_no_name_reaches_outside_the_store(url_gateway, target):
    expires = int(time.time()) + 60
    signature = URLSigner(SIGNING_KEY.encode()).signature(FILES_PATH + target, expires)
    request = (f"GET {FILES_PATH}{target}?expires={expires}&sig={signature} HTTP/1.1\r\nHost: x\r\n"
               "Connection: close\r\n\r\n").encode()
    status, headers, body = raw_http(url_gateway, request)
    assert status.split()[1] in ("400", "403", "404"), status
    assert b"SQLite" not in body and b"root:" not in body


def test_stream_with_url_is_a_400_naming_response_format(url_gateway):
    refused(generate(url_gateway, "streamed url", response_format="url", stream=True), 400, "response_format")


def test_b64_json_stays_the_default(url_gateway):
    response = requests.post(url_gateway + "/v1/images/generations", headers=AUTH, json={"prompt": "a b64 fox"},
                             timeout=60)
    assert set(response.json()["data"][0]) == {"b64_json", "revised_prompt"}


def test_s3_storage_answers_presigned_urls_fetched_from_the_bucket(s3_gateway, s3):
    url, bucket = s3_gateway
    result = python_sdk(url).images.generate(prompt="a fox in a bucket", model=MODEL, response_format="url")
    assert result.data[0].url.startswith(f"{s3.url}/{bucket}/generated/") and "X-Amz-Signature=" in result.data[0].url
    fetched_png(result.data[0].url, result.size)
    keys = [item["Key"] for item in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [urlsplit(result.data[0].url).path.removeprefix(f"/{bucket}/")]
