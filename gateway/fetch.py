"""SSRF-safe fetching of https images for edits (docs/api.md).

Every hop is https, its host is resolved once and every address it resolves to must be public
(unless the host is in IMAGE_FETCH_ALLOW_HOSTS); the connection then goes to that vetted address
with the original name for SNI, the Host header and certificate checks, so a DNS answer that
changes between the check and the connect cannot redirect it. No cookies, no credentials, no
proxies, at most three redirects, a size cap and a deadline."""
import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from .errors import InvalidRequest
from .patches.urllib3 import read_available

MAX_REDIRECTS = 3
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
CHUNK = 64 * 1024


class FetchRefused(Exception):
    """Why a URL will not be (or could not be) fetched; the message is safe to show the client."""


class PinnedAdapter(HTTPAdapter):
    """Connects to one vetted address while speaking TLS to the URL's host name."""

    def __init__(self, address, hostname):
        self.address, self.hostname = address, hostname
        super().__init__(max_retries=0)

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params["host"] = self.address
        pool_kwargs.update(server_hostname=self.hostname, assert_hostname=self.hostname)
        return host_params, pool_kwargs


TRANSLATED_IPV6 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"),
                   ipaddress.ip_network("::ffff:0:0:0/96"))


def _embedded_ipv4(ip):
    """The IPv4 address inside an IPv6 one (mapped, 6to4, Teredo, NAT64, translated), if any."""
    if ip.ipv4_mapped or ip.sixtofour:
        return ip.ipv4_mapped or ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if any(ip in network for network in TRANSLATED_IPV6):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address):
    """True for addresses on the public internet; IPv4 inside IPv6 forms is judged as IPv4."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6:
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public(str(embedded))
        if ip.is_site_local:
            return False
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def resolve(hostname, port):
    """The addresses a host name resolves to, IPv4 first (a seam for tests)."""
    addresses = {info[4][0] for info in socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)}
    return sorted(addresses, key=lambda address: (":" in address, address))


def vetted_address(hostname, port, allow_hosts):
    try:
        addresses = resolve(hostname, port)
    except (socket.gaierror, UnicodeError):
        raise FetchRefused(f"the host {hostname} does not resolve") from None
    if hostname.lower() not in allow_hosts and not all(is_public(a) for a in addresses):
        raise FetchRefused(f"the host {hostname} is not a public address")
    return addresses[0]


def _check_url(url):
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - urlsplit checks some parts only when they are read
    except ValueError:
        raise FetchRefused("the URL is malformed") from None
    try:
        parts.port  # noqa: B018
    except ValueError:
        raise FetchRefused("the URL's port is not valid") from None
    if parts.scheme != "https" or not parts.hostname:
        raise FetchRefused("only https URLs are fetched")
    if parts.username or parts.password:
        raise FetchRefused("URLs with credentials are not fetched")
    return parts


def fetch_image(url, settings):
    """The bytes at an https URL, under the SSRF policy, size cap and deadline."""
    deadline = time.monotonic() + settings.image_fetch_timeout
    for _ in range(MAX_REDIRECTS + 1):
        parts = _check_url(url)
        address = vetted_address(parts.hostname, parts.port or 443, settings.image_fetch_allow_hosts)
        response = _get(url, parts, address, settings, deadline)
        if response.status_code not in REDIRECT_STATUSES:
            return _read_body(response, settings.image_fetch_max_bytes, deadline)
        response.close()
        url = urljoin(url, response.headers.get("Location", ""))
    raise FetchRefused(f"more than {MAX_REDIRECTS} redirects")


def _get(url, parts, address, settings, deadline):
    host_header = parts.hostname if parts.port in (None, 443) else f"{parts.hostname}:{parts.port}"
    request = requests.Request("GET", url, headers={
        "Host": host_header, "Accept": "image/*", "User-Agent": "gemini-image-gateway"}).prepare()
    remaining = max(0.1, deadline - time.monotonic())
    try:
        response = PinnedAdapter(address, parts.hostname).send(
            request, stream=True, timeout=(min(10, remaining), remaining), verify=settings.ca_bundle or True)
    except requests.exceptions.SSLError:
        raise FetchRefused(f"the TLS certificate of {parts.hostname} is not trusted") from None
    except requests.exceptions.Timeout:
        raise FetchRefused(f"{parts.hostname} did not answer in time") from None
    except requests.exceptions.RequestException:
        raise FetchRefused(f"could not connect to {parts.hostname}") from None
    if response.status_code not in REDIRECT_STATUSES and response.status_code != 200:
        response.close()
        raise FetchRefused(f"{parts.hostname} answered HTTP {response.status_code}")
    return response


def _read_body(response, max_bytes, deadline):
    with response:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise FetchRefused(f"the image is larger than {max_bytes} bytes")
        body = bytearray()
        try:
            while chunk := read_available(response, CHUNK):  # returns as soon as some bytes arrive
                body += chunk
                if len(body) > max_bytes:
                    raise FetchRefused(f"the image is larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise FetchRefused("the image took too long to download")
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError):
            raise FetchRefused("the download was interrupted") from None
        return bytes(body)


def fetch_for(label, url, settings):
    """`fetch_image` with refusals as 400s that name the field."""
    try:
        return fetch_image(url, settings)
    except FetchRefused as refusal:
        raise InvalidRequest(f"{label}: could not fetch the image: {refusal}") from None
