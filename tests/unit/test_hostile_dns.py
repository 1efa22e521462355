"""DNS rebinding against the edit-image fetcher (docs/api.md): a host whose DNS answer
changes between the check and the connection (public first, 127.0.0.1 on every later ask).

The fetch must connect to the address it vetted, resolving each hop exactly once and never
again behind its own back. DNS is `gateway.fetch.resolve`, replaced in every test here. Two
levels of proof:

- with `responses` (HTTP mocked at HTTPAdapter.send): which address each PinnedAdapter was
  built with, how often each host was resolved, which requests were made;
- at the socket: urllib3's `create_connection` is replaced by a dialer that records every
  (address, port) dialed and only connects the vetted public addresses, to a real TLS server on
  127.0.0.1 whose certificate names the hosts, so SNI, the certificate check and the Host header
  are the real ones. The system resolver refuses every name, so only the seam can resolve."""
import ipaddress
import socket

import pytest
import responses
import urllib3.util.connection

from gateway import fetch
from gateway.fetch import FetchRefused, fetch_image
from tests.support import GENERATE, FakeDNS, gemini_answer, png_bytes, redirect, requested
from tests.tls import TlsServer, self_signed_certificate

PUBLIC, PUBLIC_2 = "93.184.216.34", "93.184.216.35"
LOOPBACK = "127.0.0.1"
PNG = png_bytes((40, 30), (10, 120, 220))
REBIND_URL = "https://rebind.example/a.png"


@pytest.fixture
def dns(monkeypatch):
    fake = FakeDNS({"img.example": [PUBLIC]},
                        rebinding={"rebind.example": PUBLIC, "rebind2.example": PUBLIC_2})
    monkeypatch.setattr(fetch, "resolve", fake)
    return fake


def test_the_fake_dns_really_rebinds(dns):
    assert dns("rebind.example", 443) == [PUBLIC]
    assert dns("rebind.example", 443) == [LOOPBACK]
    assert dns("rebind.example", 443) == [LOOPBACK]


# --- one hop ------------------------------------------------------------------------------------

def test_rebinding_host_is_fetched_from_the_address_vetted_first(settings, dns, pinned, web):
    web.add(responses.GET, REBIND_URL, body=PNG)
    assert fetch_image(REBIND_URL, settings) == PNG
    assert pinned == [(PUBLIC, "rebind.example")]
    assert dns.asked == [("rebind.example", 443)]  # resolved once: nothing asks again before connecting
    assert requested(web) == [REBIND_URL]


def test_rebinding_host_that_answers_private_first_is_refused_without_a_request(settings, monkeypatch, pinned, web):
    flipped = FakeDNS()
    answers = iter([[LOOPBACK], [PUBLIC], [PUBLIC]])
    monkeypatch.setattr(fetch, "resolve", lambda hostname, port: (flipped.asked.append((hostname, port)),
                                                                  next(answers))[1])
    web.add(responses.GET, REBIND_URL, body=PNG)
    with pytest.raises(FetchRefused, match="the host rebind.example is not a public address"):
        fetch_image(REBIND_URL, settings)
    assert flipped.asked == [("rebind.example", 443)]
    assert (pinned, requested(web)) == ([], [])


def test_rebinding_host_through_the_endpoint_is_fetched_once_from_the_vetted_address(client, auth, upstream, dns,
                                                                                     pinned):
    upstream.add(responses.GET, REBIND_URL, body=PNG, content_type="image/png")
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = client.post("/v1/images/edits", headers=auth,
                           json={"prompt": "make it blue", "images": [{"image_url": REBIND_URL}]})
    assert response.status_code == 200, response.json
    assert pinned == [(PUBLIC, "rebind.example")]
    assert dns.hosts == ["rebind.example"]
    assert [url for url in requested(upstream) if not GENERATE.match(url)] == [REBIND_URL]


# --- redirects ----------------------------------------------------------------------------------

def test_redirect_target_that_rebinds_is_fetched_from_its_vetted_address(settings, dns, pinned, web):
    """img.example (stable) redirects to rebind2.example, which answers public, then private."""
    target = "https://rebind2.example/b.png"
    redirect(web, "https://img.example/a.png", target)
    web.add(responses.GET, target, body=PNG)
    assert fetch_image("https://img.example/a.png", settings) == PNG
    assert pinned == [(PUBLIC, "img.example"), (PUBLIC_2, "rebind2.example")]
    assert dns.asked == [("img.example", 443), ("rebind2.example", 443)]  # exactly once per hop
    assert requested(web) == ["https://img.example/a.png", target]


def test_rebinding_host_redirecting_to_itself_is_refused_on_the_second_hop(settings, dns, pinned, web):
    """Each hop is resolved and vetted afresh: the second look at rebind.example sees 127.0.0.1."""
    redirect(web, REBIND_URL, "/b.png")
    web.add(responses.GET, "https://rebind.example/b.png", body=PNG)
    with pytest.raises(FetchRefused, match="^the host rebind.example is not a public address$"):
        fetch_image(REBIND_URL, settings)
    assert pinned == [(PUBLIC, "rebind.example")]
    assert dns.hosts == ["rebind.example", "rebind.example"]
    assert requested(web) == [REBIND_URL]


def test_redirect_target_that_rebinds_through_the_endpoint(client, auth, upstream, dns, pinned):
    target = "https://rebind2.example/b.png"
    redirect(upstream, "https://img.example/a.png", target)
    upstream.add(responses.GET, target, body=PNG, content_type="image/png")
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = client.post("/v1/images/edits", headers=auth,
                           json={"prompt": "make it blue", "images": [{"image_url": "https://img.example/a.png"}]})
    assert response.status_code == 200, response.json
    assert pinned == [(PUBLIC, "img.example"), (PUBLIC_2, "rebind2.example")]
    assert dns.hosts == ["img.example", "rebind2.example"]


def test_self_redirecting_rebinding_host_through_the_endpoint_is_a_400(client, auth, upstream, dns, pinned):
    redirect(upstream, REBIND_URL, "https://rebind.example/b.png")
    upstream.add(responses.GET, "https://rebind.example/b.png", body=PNG)
    response = client.post("/v1/images/edits", headers=auth,
                           json={"prompt": "make it blue", "images": [{"image_url": REBIND_URL}]})
    assert response.status_code == 400
    assert response.json == {"error": True, "status": 400, "message": (
        "images[0].image_url: could not fetch the image: the host rebind.example is not a public address")}
    assert requested(upstream) == [REBIND_URL]
    assert pinned == [(PUBLIC, "rebind.example")]


# --- at the socket ------------------------------------------------------------------------------

class FakeInternet(TlsServer):
    """A TLS server on 127.0.0.1 standing in for the public hosts. `routes` maps a path to
    (status, headers, body); every request is recorded with its Host header and TLS SNI."""

    def __init__(self, cert_path, key_path):
        self.routes, self.seen = {}, []
        super().__init__(cert_path, key_path)

    def answer(self, request):
        self.seen.append((request.headers["Host"], request.path))
        status, headers, body = self.routes.get(request.path, (404, {}, b""))
        request.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)


@pytest.fixture
def internet(tmp_path):
    cert_path, key_path = self_signed_certificate(tmp_path, ("rebind.example", "rebind2.example", "img.example"))
    server = FakeInternet(cert_path, key_path)
    server.cert_path = cert_path
    yield server
    server.close()


@pytest.fixture
def dialed(monkeypatch, internet):
    """Every (address, port) urllib3 dials. Only the vetted public addresses on 443 connect (to
    the fake internet); anything else, 127.0.0.1 included, is recorded and refused. The system
    resolver is closed to names, so a lookup behind the seam's back would fail loudly."""
    calls = []
    real_create_connection, real_getaddrinfo = urllib3.util.connection.create_connection, socket.getaddrinfo

    def dial(address, timeout=None, source_address=None, socket_options=None):
        calls.append(address)
        if address in ((PUBLIC, 443), (PUBLIC_2, 443)):
            return real_create_connection(("127.0.0.1", internet.port), timeout)
        raise ConnectionRefusedError(f"the test refuses to dial {address}")

    def getaddrinfo(host, *args, **kwargs):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, f"the test resolves no names ({host})") from None
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", dial)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


@pytest.fixture
def tls_settings(settings, internet):
    from dataclasses import replace
    return replace(settings, ca_bundle=str(internet.cert_path))


def test_socket_level_rebinding_host_dials_only_the_vetted_address(tls_settings, dns, dialed, internet):
    internet.routes["/a.png"] = (200, {"Content-Type": "image/png"}, PNG)
    assert fetch_image(REBIND_URL, tls_settings) == PNG
    assert dialed == [(PUBLIC, 443)]
    assert dns.asked == [("rebind.example", 443)]
    assert internet.seen == [("rebind.example", "/a.png")]
    assert internet.sni == ["rebind.example"]  # TLS speaks to the name, the socket goes to the address


def test_socket_level_redirect_to_a_rebinding_host_dials_each_vetted_address_once(tls_settings, dns, dialed,
                                                                                   internet):
    internet.routes["/a.png"] = (302, {"Location": "https://rebind2.example/b.png"}, b"")
    internet.routes["/b.png"] = (200, {"Content-Type": "image/png"}, PNG)
    assert fetch_image("https://img.example/a.png", tls_settings) == PNG
    assert dialed == [(PUBLIC, 443), (PUBLIC_2, 443)]
    assert LOOPBACK not in {address for address, _ in dialed}
    assert dns.asked == [("img.example", 443), ("rebind2.example", 443)]
    assert internet.seen == [("img.example", "/a.png"), ("rebind2.example", "/b.png")]
    assert internet.sni == ["img.example", "rebind2.example"]


def test_socket_level_self_redirect_of_a_rebinding_host_never_dials_loopback(tls_settings, dns, dialed, internet):
    internet.routes["/a.png"] = (302, {"Location": "/b.png"}, b"")
    internet.routes["/b.png"] = (200, {"Content-Type": "image/png"}, PNG)
    with pytest.raises(FetchRefused, match="the host rebind.example is not a public address"):
        fetch_image(REBIND_URL, tls_settings)
    assert dialed == [(PUBLIC, 443)]
    assert internet.seen == [("rebind.example", "/a.png")]


def test_socket_level_certificate_for_another_name_is_refused(tls_settings, monkeypatch, dialed, internet):
    """The pinned address does not weaken the certificate check: a host whose name the server's
    certificate does not carry is refused, though its address is the vetted one."""
    monkeypatch.setattr(fetch, "resolve", FakeDNS(rebinding={"other.example": PUBLIC}))
    internet.routes["/a.png"] = (200, {"Content-Type": "image/png"}, PNG)
    with pytest.raises(FetchRefused, match="the TLS certificate of other.example is not trusted"):
        fetch_image("https://other.example/a.png", tls_settings)
    assert dialed == [(PUBLIC, 443)]
    assert internet.seen == []
