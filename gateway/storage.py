"""Where images answered as URLs live until they expire (docs/long-generations.md): a directory
whose files the gateway serves under signed URLs, or an S3-compatible bucket whose presigned URLs
clients fetch directly. Images are written whole or not at all, under random names that no client
chooses, and swept once they expire."""
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pybase64

from .config import ConfigError
from .errors import GatewayError

log = logging.getLogger(__name__)

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
NAME = re.compile(r"[A-Za-z0-9_-]{32}\.(png|jpeg|webp)")  # secrets.token_urlsafe(24) and the format
FILES_PATH = "/v1/images/files/"
PARTIAL_PREFIX = ".partial-"  # a file still being written: never a NAME, so never served
SWEEP_EVERY = 60.0  # seconds between two sweeps of one process
PRESIGN_MAX_SECONDS = 7 * 24 * 3600  # S3's limit for a SigV4 presigned URL


class StorageUnavailable(GatewayError):
    """The image store could not be written: a 503 (unreachable, disk full...), or a 502 when the
    store answered with an error of its own. The request's images are not named to the client."""

    def __init__(self, message, status=503):
        super().__init__(status, message, headers={"Retry-After": "5"})


def new_name(extension):
    """An unguessable file name: 192 random bits and the image format."""
    return f"{secrets.token_urlsafe(24)}.{extension}"


class URLSigner:
    """HMAC-SHA256 over a URL's path and expiry, so the gateway can serve a file to whoever holds
    its URL without a key, and to no one once the URL expired."""

    def __init__(self, key):
        self.key = key

    @classmethod
    def for_settings(cls, settings):
        """GATEWAY_URL_SIGNING_KEY, else a key derived from the admin or first client key (every
        instance with the same keys signs alike); with no key at all, no request can make an image,
        and a random key serves."""
        if settings.url_signing_key:
            return cls(settings.url_signing_key.encode())
        secret = settings.admin_key or next(iter(settings.api_keys), "")
        if not secret:
            return cls(secrets.token_bytes(32))
        return cls(hmac.new(secret.encode(), b"gateway image URLs", hashlib.sha256).digest())

    def signature(self, path, expires):
        return hmac.new(self.key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def verify(self, path, expires, signature):
        """True only for this path's signature with this expiry, compared in constant time."""
        return hmac.compare_digest(self.signature(path, expires).encode(), (signature or "").encode("utf-8", "replace"))


def remaining_seconds(signer, name, expires, signature, now=None):
    """The seconds an image URL has left; a 403 for a wrong or missing signature (a made-up name
    included: no signature fits it) and a 410 once it expired."""
    path = FILES_PATH + name
    if not (NAME.fullmatch(name) and expires and expires.isdigit() and signer.verify(path, expires, signature)):
        raise GatewayError(403, "Forbidden: this image URL's signature is wrong or missing.")
    left = int(expires) - int(now if now is not None else time.time())
    if left <= 0:
        raise GatewayError(410, "Gone: this image URL has expired; make the image again for a new one.")
    return left


class Sweeper:
    """Runs `sweep` every SWEEP_EVERY seconds (at most the images' lifetime) on a daemon thread of
    this process, started by its first image: a worker forked after start gets its own."""

    def __init__(self, sweep, every):
        self.sweep, self.every, self.pid, self.lock = sweep, every, None, threading.Lock()

    def ensure_running(self):
        with self.lock:
            if self.pid != os.getpid():
                self.pid = os.getpid()
                threading.Thread(target=self._loop, name="image-sweeper", daemon=True).start()

    def _loop(self):
        while True:
            time.sleep(self.every)
            self.sweep()


class DirectoryStorage:
    """Images as files of one directory, served by the gateway (gateway/images/files.py)."""
    serves_files = True

    def __init__(self, root, ttl, signer):
        self.root, self.ttl, self.signer = Path(root), ttl, signer
        self.sweeper = Sweeper(self.sweep, min(SWEEP_EVERY, ttl))

    def put(self, data, extension):
        """Write the image under a new name: into a temporary file, then renamed, so a reader sees
        the whole file or none (a crash leaves only a partial file for the sweeper)."""
        self.sweeper.ensure_running()
        name, partial = new_name(extension), None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=PARTIAL_PREFIX, delete=False) as file:
                partial = file.name
                file.write(data)
            os.replace(partial, self.root / name)
        except OSError as error:
            if partial:
                with contextlib.suppress(OSError):
                    os.unlink(partial)
            raise StorageUnavailable(f"The image store cannot be written ({error.strerror or error}); "
                                     "the images were made but cannot be answered as URLs.") from None
        return name

    def url_for(self, name, base_url, stored_at=None):
        """The image's URL, expiring a lifetime after it was stored (now, unless said)."""
        expires = int(stored_at if stored_at is not None else time.time()) + self.ttl
        path = FILES_PATH + name
        return f"{base_url}{path}?expires={expires}&sig={self.signer.signature(path, expires)}"

    def get(self, name):
        """The image's bytes, or None once it was swept."""
        try:
            return self.path_for(name).read_bytes()
        except FileNotFoundError:
            return None

    def path_for(self, name):
        """The file of a checked NAME (letters, digits, `_`, `-` and the format: no separator, no dot
        before the format), so it is always inside the directory."""
        if not NAME.fullmatch(name):
            raise ValueError(f"not an image name: {name!r}")
        return self.root / name

    def sweep(self, now=None):
        """Delete every file older than the lifetime, partial ones included: one scan of the directory."""
        cutoff = (now if now is not None else time.time()) - self.ttl
        try:
            with os.scandir(self.root) as entries:
                old = [entry.path for entry in entries
                       if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff]
        except FileNotFoundError:
            return 0
        except OSError as error:
            log.warning("the image sweeper cannot read %s: %s", self.root, error)
            return 0
        for path in old:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return len(old)


class S3Storage:
    """Images as objects of an S3-compatible bucket (AWS, MinIO, R2, GCS's interoperability API),
    handed out as presigned GET URLs; boto3 reads the standard AWS_* variables itself."""
    serves_files = False

    def __init__(self, bucket, prefix, ttl, region=None):
        if ttl > PRESIGN_MAX_SECONDS:
            raise ConfigError(f"GATEWAY_IMAGE_TTL_SECONDS must be at most {PRESIGN_MAX_SECONDS} with S3 storage "
                              f"(S3's limit for a presigned URL), got {ttl}")
        self.bucket, self.prefix, self.ttl, self.region = bucket, prefix, ttl, region or None
        self.sweeper = Sweeper(self.sweep, min(SWEEP_EVERY, ttl))
        self._client, self.lock = None, threading.Lock()

    @property
    def client(self):
        """One boto3 client per process, made at first use: after gunicorn forked and gevent patched."""
        with self.lock:
            if self._client is None:
                import boto3
                from botocore.config import Config
                self._client = boto3.client("s3", region_name=self.region, config=Config(
                    signature_version="s3v4", connect_timeout=5, read_timeout=30,
                    retries={"mode": "standard", "max_attempts": 3}))
            return self._client

    def put(self, data, extension):
        """One PUT of the whole object: S3 stores it whole or not at all."""
        from botocore.exceptions import BotoCoreError, ClientError
        self.sweeper.ensure_running()
        name = new_name(extension)
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data,
                                   ContentType=CONTENT_TYPES[extension])
        except ClientError as error:
            raise StorageUnavailable(f"The image store refused the image ({error.response['Error'].get('Code')}); "
                                     "the images were made but cannot be answered as URLs.", 502) from None
        except BotoCoreError as error:
            raise StorageUnavailable(f"The image store cannot be reached ({type(error).__name__}); "
                                     "the images were made but cannot be answered as URLs.") from None
        return name

    def url_for(self, name, base_url=None, stored_at=None):
        """A presigned GET URL, expiring a lifetime after the image was stored (now, unless said)."""
        left = self.ttl - (time.time() - stored_at) if stored_at is not None else self.ttl
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.prefix + name}, ExpiresIn=max(1, int(left)))

    def get(self, name):
        """The image's bytes, or None once it was swept."""
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
        except ClientError as error:
            if error.response["Error"].get("Code") in ("NoSuchKey", "404"):
                return None
            raise StorageUnavailable(f"The image store refused a read ({error.response['Error'].get('Code')}).",
                                     502) from None
        except BotoCoreError as error:
            raise StorageUnavailable(f"The image store cannot be reached ({type(error).__name__}).") from None

    def sweep(self, now=None):
        """Delete the prefix's objects older than the lifetime (the bucket's lifecycle rule is the
        backstop, docs/long-generations.md); a failure is logged and tried again next time."""
        from botocore.exceptions import BotoCoreError, ClientError
        cutoff = (now if now is not None else time.time()) - self.ttl
        try:
            old = [item["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix) for item in page.get("Contents", ())
                if item["LastModified"].timestamp() < cutoff]
            for start in range(0, len(old), 1000):  # DeleteObjects' limit
                self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": key} for key in old[start:start + 1000]], "Quiet": True})
        except (BotoCoreError, ClientError) as error:
            log.warning("the image sweeper cannot clean s3://%s/%s: %s", self.bucket, self.prefix, error)
            return 0
        return len(old)


def storage_for(settings):
    """The store GATEWAY_STORAGE_URL names."""
    url = urlsplit(settings.storage_url)
    if url.scheme == "s3":
        prefix = url.path.strip("/")
        return S3Storage(url.netloc, prefix + "/" if prefix else "", settings.image_ttl_seconds, settings.s3_region)
    return DirectoryStorage(url.path, settings.image_ttl_seconds, URLSigner.for_settings(settings))


def stored(body, storage):
    """The images body with every image stored whole and named by its name in the storage."""
    names = [storage.put(pybase64.b64decode(item["b64_json"]), body["output_format"]) for item in body["data"]]
    return {**body, "data": [{"name": name, "revised_prompt": item["revised_prompt"]}
                             for name, item in zip(names, body["data"], strict=True)]}


def with_urls(body, storage, base_url, stored_at=None):
    """A stored body (`stored`) with each image named by its URL: every image is stored before
    the answer says it exists."""
    return {**body, "data": [{"url": storage.url_for(item["name"], base_url, stored_at),
                              "revised_prompt": item["revised_prompt"]} for item in body["data"]]}
