"""Images answered as URLs (docs/long-generations.md): signed, expiring URLs of the directory
store, the files they name and nothing else, the sweeper, and `response_format: "url"` on both
endpoints."""
import base64
import dataclasses
import io
import os
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from sqlalchemy import select

from gateway import create_app
from gateway.config import ConfigError, Settings
from gateway.errors import GatewayError
from gateway.storage import FILES_PATH, DirectoryStorage, S3Storage, URLSigner, remaining_seconds, storage_for
from gateway.store import ledger
from tests.support import fetch, gemini_answer, image_part, png_bytes
from tests.unit.conftest import GENERATE

SIGNER = URLSigner(b"k" * 32)
NOW = 1_900_000_000


@pytest.fixture
def store(tmp_path):
    return DirectoryStorage(tmp_path / "images", 3600, SIGNER)


def url_parts(url):
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    return parts.path.removeprefix(FILES_PATH), query["expires"], query["sig"]


def test_a_stored_image_is_a_file_under_a_random_name(store):
    first, second = store.put(b"one", "png"), store.put(b"two", "png")
    assert first != second and len(first) == len("x" * 32 + ".png")
    assert store.path_for(first).read_bytes() == b"one"
    assert [path.name for path in store.root.iterdir() if path.name.startswith(".")] == []  # no partial left


def test_a_url_is_signed_over_its_path_and_expiry(store):
    name = store.put(b"png", "png")
    url = store.url_for(name, "https://gw.example", stored_at=NOW)
    assert url.startswith(f"https://gw.example{FILES_PATH}{name}?expires={NOW + 3600}&sig=")
    assert remaining_seconds(SIGNER, *url_parts(url), now=NOW) == 3600


@pytest.mark.parametrize("tamper", [
    lambda name, expires, sig: (name, expires, sig[:-1] + ("0" if sig[-1] != "0" else "1")),  # one hex digit off
    lambda name, expires, sig: (name, expires, ""),  # missing
    lambda name, expires, sig: (name, expires, None),
    lambda name, expires, sig: (name, str(int(expires) + 3600), sig),  # a later expiry
    lambda name, expires, sig: (name, None, sig),
    lambda name, expires, sig: ("A" * 32 + ".png", expires, sig),  # a made-up id
    lambda name, expires, sig: (name.replace(".png", ".webp"), expires, sig),
    lambda name, expires, sig: (name, expires, sig.upper()),
    lambda name, expires, sig: (name, expires, "é" * 64),
], ids=["wrong", "empty", "missing", "later-expiry", "no-expiry", "made-up-id", "other-format", "uppercase",
        "non-ascii"])
def test_a_wrong_or_missing_signature_is_403(store, tamper):
    url = store.url_for(store.put(b"png", "png"), "http://h", stored_at=NOW)
    with pytest.raises(GatewayError) as error:
        remaining_seconds(SIGNER, *tamper(*url_parts(url)), now=NOW)
    assert error.value.status == 403


def test_a_made_up_id_with_a_valid_looking_signature_is_403():
    with pytest.raises(GatewayError) as error:
        remaining_seconds(SIGNER, "B" * 32 + ".png", str(NOW + 60), "ab" * 32, now=NOW)
    assert error.value.status == 403


def test_an_expired_url_is_410(store):
    url = store.url_for(store.put(b"png", "png"), "http://h", stored_at=NOW)
    with pytest.raises(GatewayError) as error:
        remaining_seconds(SIGNER, *url_parts(url), now=NOW + 3600)
    assert error.value.status == 410


def test_another_signing_key_does_not_verify(store):
    url = store.url_for(store.put(b"png", "png"), "http://h", stored_at=NOW)
    with pytest.raises(GatewayError):
        remaining_seconds(URLSigner(b"o" * 32), *url_parts(url), now=NOW)


@pytest.mark.parametrize("name", [
    "../gateway.db", "..%2Fgateway.db", "%2e%2e/x.png", "/etc/passwd", "images/../../x.png", "x.png\x00.png",
    "..", ".", "", "a" * 31 + ".png", "a" * 32 + ".gif", "a" * 32 + ".png/", ".partial-abc", "a" * 32 + "..png",
    "\\..\\" + "a" * 28 + ".png",
])
def test_names_that_are_not_image_ids_are_refused(store, name):
    with pytest.raises(ValueError):
        store.path_for(name)
    with pytest.raises(GatewayError) as error:
        remaining_seconds(SIGNER, name, str(NOW + 60), SIGNER.signature(FILES_PATH + name, NOW + 60), now=NOW)
    assert error.value.status == 403  # even with a signature that fits the name


def test_signing_key_is_the_setting_else_derived_from_a_gateway_key():
    def signer(**fields):
        return URLSigner.for_settings(Settings(**fields))
    assert signer(url_signing_key="s").key == b"s"
    assert signer(admin_key="admin").key == signer(admin_key="admin", api_keys=("c",)).key
    assert signer(api_keys=("c", "d")).key == signer(api_keys=("c",)).key != signer(api_keys=("d",)).key
    assert b"c" not in signer(api_keys=("c",)).key
    assert signer().key != signer().key  # no key at all: random, since no request can make an image


def test_the_sweeper_deletes_expired_files_and_partial_ones_only(store):
    old, fresh = store.put(b"old", "png"), store.put(b"new", "png")
    partial = store.root / ".partial-crashed"
    partial.write_bytes(b"half")
    os.utime(store.path_for(old), (time.time() - 3601, time.time() - 3601))
    os.utime(partial, (time.time() - 3601, time.time() - 3601))
    assert store.sweep() == 2
    assert sorted(path.name for path in store.root.iterdir()) == [fresh]


def test_the_sweeper_of_a_missing_directory_does_nothing(tmp_path):
    assert DirectoryStorage(tmp_path / "none", 60, SIGNER).sweep() == 0


def test_an_unwritable_directory_is_a_503_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(GatewayError) as error:
        DirectoryStorage(blocker / "images", 60, SIGNER).put(b"png", "png")
    assert error.value.status == 503 and "cannot be written" in error.value.message


@pytest.mark.parametrize(("url", "kind", "where"), [
    ("file:var/images", DirectoryStorage, "var/images"),
    ("file:///srv/images", DirectoryStorage, "/srv/images"),
    ("s3://bucket-1/images/day", S3Storage, "images/day/"),
    ("s3://bucket-1", S3Storage, ""),
])
def test_the_storage_url_names_the_store(url, kind, where):
    storage = storage_for(Settings.from_env({"GATEWAY_STORAGE_URL": url}))
    assert isinstance(storage, kind)
    assert str(storage.root) == where if kind is DirectoryStorage else storage.prefix == where


@pytest.mark.parametrize(("environ", "named"), [
    ({"GATEWAY_STORAGE_URL": "/srv/images"}, "GATEWAY_STORAGE_URL must be"),
    ({"GATEWAY_STORAGE_URL": "s3://"}, "GATEWAY_STORAGE_URL must be"),
    ({"GATEWAY_STORAGE_URL": "gs://bucket"}, "GATEWAY_STORAGE_URL must be"),
    ({"GATEWAY_IMAGE_TTL_SECONDS": "0"}, "GATEWAY_IMAGE_TTL_SECONDS must be at least 1"),
    ({"GATEWAY_PUBLIC_URL": "images.example.com"}, "GATEWAY_PUBLIC_URL must be an http"),
])
def test_bad_storage_settings_name_the_variable(environ, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(environ)


def test_s3_refuses_a_lifetime_longer_than_a_presigned_url_can_have():
    with pytest.raises(ConfigError, match="GATEWAY_IMAGE_TTL_SECONDS must be at most 604800"):
        storage_for(Settings(storage_url="s3://bucket", image_ttl_seconds=604801))


# --- response_format: "url" through the app --------------------------------------------------------

@pytest.fixture
def settings(settings, tmp_path):
    return dataclasses.replace(settings, storage_url=f"file://{tmp_path}/images", url_signing_key="test-signing")


def generate_url(client, auth, upstream, image=None, **params):
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part(image or png_bytes((40, 30)))))
    return client.post("/v1/images/generations", json={"prompt": "a fox", "response_format": "url", **params},
                       headers=auth)


def test_url_answers_name_each_stored_image(client, auth, upstream):
    image = png_bytes((40, 30))
    response = generate_url(client, auth, upstream, image, n=2)
    assert response.status_code == 200
    data = response.json["data"]
    assert [set(item) for item in data] == [{"url", "revised_prompt"}] * 2
    assert data[0]["url"].startswith("http://localhost/v1/images/files/") and data[0]["url"] != data[1]["url"]
    fetched = fetch(client, data[0]["url"])
    assert (fetched.status_code, fetched.data, fetched.mimetype) == (200, image, "image/png")
    assert fetched.headers["Cache-Control"].startswith("private, max-age=")
    assert 3590 <= int(fetched.headers["Cache-Control"].split("max-age=")[1].split(",")[0]) <= 3600


def test_a_file_url_needs_no_key_but_its_signature(client, auth, upstream):
    url = generate_url(client, auth, upstream).json["data"][0]["url"]
    assert fetch(client, url, headers={"Authorization": "Bearer wrong"}).status_code == 200
    assert client.get(url.split("&sig=")[0]).status_code == 403
    assert client.get(url.split("?")[0]).status_code == 403


def test_a_url_whose_file_was_swept_is_410(app, client, auth, upstream):
    url = generate_url(client, auth, upstream).json["data"][0]["url"]
    name = urlsplit(url).path.removeprefix(FILES_PATH)
    app.config["STORAGE"].path_for(name).unlink()
    assert client.get(url).status_code == 410


def test_the_public_url_setting_roots_the_urls(app, client, auth, upstream):
    app.config["SETTINGS"] = dataclasses.replace(app.config["SETTINGS"], public_url="https://img.example/gw")
    url = generate_url(client, auth, upstream).json["data"][0]["url"]
    assert url.startswith("https://img.example/gw/v1/images/files/")


def test_url_answers_keep_the_asked_format(client, auth, upstream):
    response = generate_url(client, auth, upstream, output_format="webp")
    fetched = fetch(client, response.json["data"][0]["url"])
    assert fetched.mimetype == "image/webp" and fetched.data[8:12] == b"WEBP"


def test_a_multipart_edit_answers_urls(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part(png_bytes((40, 30)))))
    response = client.post("/v1/images/edits", headers=auth, content_type="multipart/form-data", data={
        "prompt": "make it blue", "response_format": "url",
        "image": (io.BytesIO(png_bytes((40, 30))), "in.png")})
    assert response.status_code == 200, response.json
    assert fetch(client, response.json["data"][0]["url"]).status_code == 200


def test_a_storage_failure_is_a_503_naming_the_store(app, client, auth, upstream, tmp_path):
    (tmp_path / "images").write_bytes(b"not a directory")
    response = generate_url(client, auth, upstream)
    assert response.status_code == 503
    assert "image store cannot be written" in response.json["message"]
    with app.config["STORE"].read() as conn:  # the images were made and paid for, but never delivered
        row = conn.execute(select(ledger)).mappings().one()
    assert (row["n_made"], row["status"]) == (1, 503)


def test_b64_json_answers_store_nothing(client, auth, upstream, tmp_path):
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part()))
    response = client.post("/v1/images/generations", json={"prompt": "a fox"}, headers=auth)
    assert base64.b64decode(response.json["data"][0]["b64_json"])
    assert not (tmp_path / "images").exists()


def test_files_are_not_served_with_s3_storage(settings):
    app = create_app(dataclasses.replace(settings, storage_url="s3://bucket"))
    assert app.test_client().get(FILES_PATH + "A" * 32 + ".png?expires=1&sig=0").status_code == 404
    app.config["STORE"].close()


def test_the_api_description_has_url_answers_and_the_files_path(client):
    spec = client.get("/openapi.json").json
    schemas = spec["components"]["schemas"]
    assert schemas["GenerationRequest"]["properties"]["response_format"]["enum"] == ["b64_json", "url"]
    assert set(schemas["ImageData"]["properties"]) == {"b64_json", "url", "revised_prompt"}
    files = spec["paths"]["/v1/images/files/{name}"]["get"]
    assert files["security"] == [] and {"200", "403", "410"} <= set(files["responses"])
