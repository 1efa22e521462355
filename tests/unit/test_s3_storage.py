"""S3 storage against moto's S3 server on 127.0.0.1 (the real protocol): objects written whole,
presigned URLs that fetch them for the images' lifetime, the sweeper, and failures as 502/503."""
import dataclasses
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from gateway import create_app
from gateway.errors import GatewayError
from gateway.storage import S3Storage
from tests.s3_server import S3Server
from tests.support import gemini_answer, image_part, png_bytes
from tests.unit.conftest import GENERATE


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.close()


@pytest.fixture
def aws(s3, monkeypatch):
    """The standard AWS variables pointing boto3 at moto, as a deploy sets them."""
    for name, value in s3.environ.items():
        monkeypatch.setenv(name, value)
    return s3


@pytest.fixture
def store(aws):
    return S3Storage(aws.new_bucket(), "images/", 600)


def objects(s3, bucket):
    return sorted(item["Key"] for item in s3.client().list_objects_v2(Bucket=bucket).get("Contents", ()))


def test_an_image_is_one_object_under_the_prefix(store, aws):
    name = store.put(b"\x89PNG whole", "png")
    assert objects(aws, store.bucket) == [f"images/{name}"]
    stored = aws.client().get_object(Bucket=store.bucket, Key=f"images/{name}")
    assert (stored["Body"].read(), stored["ContentType"]) == (b"\x89PNG whole", "image/png")


def test_the_presigned_url_fetches_the_image_for_its_lifetime(store):
    url = store.url_for(store.put(b"jpeg bytes", "jpeg"))
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["600"] and "X-Amz-Signature" in query
    fetched = requests.get(url, timeout=10)
    assert (fetched.status_code, fetched.content, fetched.headers["Content-Type"]) == (200, b"jpeg bytes",
                                                                                       "image/jpeg")


def test_the_sweeper_deletes_expired_objects_of_its_prefix_only(store, aws):
    aws.client().put_object(Bucket=store.bucket, Key="other/keep.png", Body=b"x")
    name = store.put(b"png", "png")
    assert store.sweep() == 0
    assert store.sweep(now=time.time() + 601) == 1
    assert objects(aws, store.bucket) == ["other/keep.png"]
    assert name


def test_a_missing_bucket_is_a_502(aws):
    with pytest.raises(GatewayError) as error:
        S3Storage("no-such-bucket-here", "", 600).put(b"png", "png")
    assert error.value.status == 502 and "NoSuchBucket" in error.value.message


def test_an_unreachable_store_is_a_503(aws, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard: nothing listens
    with pytest.raises(GatewayError) as error:
        S3Storage("bucket", "", 600).put(b"png", "png")
    assert error.value.status == 503 and "cannot be reached" in error.value.message


def test_an_unreachable_store_does_not_stop_the_sweeper(monkeypatch, aws):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert S3Storage("bucket", "", 600).sweep() == 0


def test_url_answers_are_presigned_urls_of_the_bucket(settings, aws, upstream):
    bucket = aws.new_bucket()
    app = create_app(dataclasses.replace(settings, storage_url=f"s3://{bucket}/answers"))
    image = png_bytes((40, 30))
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part(image)))
    upstream.add_passthru(aws.url)
    response = app.test_client().post("/v1/images/generations", json={"prompt": "a fox", "response_format": "url"},
                                      headers={"Authorization": f"Bearer {settings.api_keys[0]}"})
    url = response.json["data"][0]["url"]
    assert url.startswith(f"{aws.url}/{bucket}/answers/")
    assert requests.get(url, timeout=10).content == image
    app.config["STORE"].close()


def test_the_sweeper_deletes_an_image_once_its_lifetime_ended(aws):
    """moto does not expire presigned URLs itself; the process's sweeper deletes the object."""
    short = S3Storage(aws.new_bucket(), "", 1)
    url = short.url_for(short.put(b"png", "png"))
    time.sleep(2.5)
    short.sweeper.sweep = lambda: 0  # its thread outlives the test (and moto's server)
    assert requests.get(url, timeout=10).status_code == 404
    assert objects(aws, short.bucket) == []
