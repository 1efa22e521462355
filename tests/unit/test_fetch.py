"""SSRF-safe fetching of edit images (docs/api.md): `fetch_image` and `is_public`
directly, and the same policy seen through POST /v1/images/edits.

HTTP is mocked with `responses` (it patches HTTPAdapter.send, which PinnedAdapter inherits) and
DNS by replacing `gateway.fetch.resolve`, for every test in this module: nothing here touches the
network or a real resolver."""
import base64
import json
from dataclasses import replace

import pytest
import requests
import responses

from gateway import create_app, fetch
from gateway.fetch import FetchRefused, fetch_image, is_public
from tests.support import GENERATE, FakeDNS, gemini_answer, png_bytes, redirect, requested

PUBLIC = "93.184.216.34"
PNG = png_bytes((40, 30), (10, 120, 220))
IMAGE_URL = "https://img.example/a.png"
NOT_HTTPS = "images[0].image_url must be an https URL or a base64 data URL"


@pytest.fixture(autouse=True)
def dns(monkeypatch):
    fake = FakeDNS({
        "img.example": [PUBLIC],
        "cdn.example": ["93.184.216.35"],
        "localhost": ["127.0.0.1", "::1"],
        "internal.example": ["10.0.0.9"],
        "mixed.example": [PUBLIC, "10.1.2.3"],
        "images.internal": ["127.0.0.1"],
        "other.internal": ["127.0.0.1"],
    })
    monkeypatch.setattr(fetch, "resolve", fake)
    return fake


def refusal(url, settings):
    with pytest.raises(FetchRefused) as caught:
        fetch_image(url, settings)
    return str(caught.value)


def edit_from_url(client, auth, url):
    return client.post("/v1/images/edits", headers=auth,
                       json={"prompt": "make it blue", "images": [{"image_url": url}]})


def fetch_error(reason):
    return f"images[0].image_url: could not fetch the image: {reason}"


PRIVATE_LITERALS = [
    ("https://127.0.0.1/", "127.0.0.1"),
    ("https://10.0.0.5/", "10.0.0.5"),
    ("https://172.16.0.1/", "172.16.0.1"),
    ("https://192.168.1.1/", "192.168.1.1"),
    ("https://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("https://[::1]/", "::1"),
    ("https://[fe80::1]/", "fe80::1"),
    ("https://[fc00::1]/", "fc00::1"),
    ("https://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
    ("https://[::ffff:10.0.0.1]/", "::ffff:10.0.0.1"),
    ("https://100.64.0.1/", "100.64.0.1"),
    ("https://224.0.0.1/", "224.0.0.1"),
    ("https://0.0.0.0/", "0.0.0.0"),
    ("https://[2002:0a00:0001::1]/", "2002:0a00:0001::1"),
]
NOT_PUBLIC = [
    "127.0.0.1", "10.0.0.5", "172.16.0.1", "192.168.1.1", "169.254.169.254", "::1", "fe80::1",
    "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "100.64.0.1", "224.0.0.1", "0.0.0.0",
    "2002:a00:1::1", "ff02::1", "::",
    "fec0::1",  # deprecated IPv6 site-local
    "::127.0.0.1",  # IPv4-compatible IPv6, reserved ::/8
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "::ffff:0:a00:1",  # IPv4-translated 10.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo whose client is 10.0.0.1
]


# --- is_public ---------------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", PUBLIC])
def test_is_public_accepts_public_addresses(address):
    assert is_public(address) is True


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_is_public_refuses_private_and_special_addresses(address):
    assert is_public(address) is False


def test_is_public_judges_an_ipv4_mapped_public_address_as_public():
    assert is_public("::ffff:8.8.8.8") is True


def test_is_public_judges_a_6to4_address_by_its_embedded_ipv4():
    assert (is_public("2002:0808:0808::1"), is_public("2002:c0a8:0101::1")) == (True, False)


# --- scheme and URL shape ----------------------------------------------------------------------

def test_http_url_is_refused_by_fetch_image(settings, web, dns):
    assert refusal("http://img.example/a.png", settings) == "only https URLs are fetched"
    assert (dns.asked, requested(web)) == ([], [])


def test_http_url_is_refused_by_the_endpoint(client, auth, upstream, dns):
    response = edit_from_url(client, auth, "http://img.example/a.png")
    assert response.status_code == 400
    assert response.json["message"] == NOT_HTTPS
    assert (dns.asked, requested(upstream)) == ([], [])


def test_ftp_url_is_refused_by_the_endpoint(client, auth, upstream, dns):
    response = edit_from_url(client, auth, "ftp://img.example/a.png")
    assert (response.status_code, response.json["message"]) == (400, NOT_HTTPS)
    assert (dns.asked, requested(upstream)) == ([], [])


def test_bare_path_is_refused_by_the_endpoint(client, auth, upstream, dns):
    response = edit_from_url(client, auth, "/etc/passwd")
    assert (response.status_code, response.json["message"]) == (400, NOT_HTTPS)
    assert (dns.asked, requested(upstream)) == ([], [])


def test_ftp_url_is_refused_by_fetch_image(settings, web, dns):
    assert refusal("ftp://img.example/a.png", settings) == "only https URLs are fetched"
    assert (dns.asked, requested(web)) == ([], [])


def test_url_with_credentials_is_refused_by_fetch_image(settings, web, dns):
    web.add(responses.GET, IMAGE_URL, body=PNG)
    assert refusal("https://user:pass@img.example/a.png", settings) == "URLs with credentials are not fetched"
    assert (dns.asked, requested(web)) == ([], [])


def test_url_with_credentials_is_refused_by_the_endpoint(client, auth, upstream, dns):
    upstream.add(responses.GET, IMAGE_URL, body=PNG)
    response = edit_from_url(client, auth, "https://user:pass@img.example/a.png")
    assert response.status_code == 400
    assert response.json["message"] == fetch_error("URLs with credentials are not fetched")
    assert (dns.asked, requested(upstream)) == ([], [])


def test_url_with_an_invalid_port_is_a_400_naming_the_field(client, auth, upstream, dns):
    response = edit_from_url(client, auth, "https://img.example:99999/a.png")
    assert response.status_code == 400
    assert response.json["message"] == fetch_error("the URL's port is not valid")
    assert dns.asked == []
    assert requested(upstream) == []


# --- private and special addresses -------------------------------------------------------------

@pytest.mark.parametrize("url, host", PRIVATE_LITERALS, ids=[host for _, host in PRIVATE_LITERALS])
def test_private_address_literal_is_refused_by_fetch_image(settings, web, dns, url, host):
    web.add(responses.GET, url, body=PNG)
    assert refusal(url, settings) == f"the host {host} is not a public address"
    assert dns.asked == [(host, 443)]
    assert requested(web) == []


@pytest.mark.parametrize("url, host", [
    ("https://127.0.0.1/", "127.0.0.1"),
    ("https://10.0.0.5/", "10.0.0.5"),
    ("https://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("https://[::1]/", "::1"),
    ("https://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
])
def test_private_address_literal_is_refused_by_the_endpoint(client, auth, upstream, dns, url, host):
    upstream.add(responses.GET, url, body=PNG)
    response = edit_from_url(client, auth, url)
    assert response.status_code == 400
    assert response.json["message"] == fetch_error(f"the host {host} is not a public address")
    assert dns.hosts == [host]
    assert requested(upstream) == []


def test_localhost_is_refused_by_fetch_image(settings, web, dns):
    assert refusal("https://localhost/", settings) == "the host localhost is not a public address"
    assert dns.asked == [("localhost", 443)]
    assert requested(web) == []


def test_localhost_is_refused_by_the_endpoint(client, auth, upstream, dns):
    response = edit_from_url(client, auth, "https://localhost/a.png")
    assert response.status_code == 400
    assert response.json["message"] == fetch_error("the host localhost is not a public address")
    assert dns.hosts == ["localhost"]
    assert requested(upstream) == []


def test_hostname_resolving_to_a_private_address_is_refused(settings, web, dns):
    web.add(responses.GET, "https://internal.example/a.png", body=PNG)
    assert refusal("https://internal.example/a.png", settings) == \
        "the host internal.example is not a public address"
    assert dns.hosts == ["internal.example"]
    assert requested(web) == []


def test_hostname_resolving_to_a_private_address_is_refused_by_the_endpoint(client, auth, upstream, dns):
    upstream.add(responses.GET, "https://internal.example/a.png", body=PNG)
    response = edit_from_url(client, auth, "https://internal.example/a.png")
    assert response.status_code == 400
    assert response.json["message"] == fetch_error("the host internal.example is not a public address")
    assert dns.hosts == ["internal.example"]
    assert requested(upstream) == []


def test_hostname_resolving_to_one_public_and_one_private_address_is_refused(settings, web, dns):
    web.add(responses.GET, "https://mixed.example/a.png", body=PNG)
    assert refusal("https://mixed.example/a.png", settings) == "the host mixed.example is not a public address"
    assert dns.hosts == ["mixed.example"]
    assert requested(web) == []


def test_unresolvable_host_is_refused(settings, web, dns):
    assert refusal("https://nowhere.example/a.png", settings) == "the host nowhere.example does not resolve"
    assert dns.hosts == ["nowhere.example"]
    assert requested(web) == []


# --- the connection goes to the vetted address -------------------------------------------------

def test_connection_is_pinned_to_the_address_resolved_at_vetting(settings, web, dns, pinned):
    web.add(responses.GET, IMAGE_URL, body=PNG)
    assert fetch_image(IMAGE_URL, settings) == PNG
    assert pinned == [(PUBLIC, "img.example")]
    assert dns.asked == [("img.example", 443)]


def test_pinned_adapter_dials_the_address_but_checks_tls_against_the_name():
    request = requests.Request("GET", IMAGE_URL).prepare()
    host_params, pool_kwargs = fetch.PinnedAdapter(PUBLIC, "img.example").build_connection_pool_key_attributes(
        request, True)
    assert (host_params["scheme"], host_params["host"]) == ("https", PUBLIC)
    assert (pool_kwargs["server_hostname"], pool_kwargs["assert_hostname"]) == ("img.example", "img.example")


# --- redirects ---------------------------------------------------------------------------------

def test_redirect_to_a_private_host_is_refused_and_never_requested(settings, web, dns):
    redirect(web, IMAGE_URL, "https://internal.example/secret.png")
    web.add(responses.GET, "https://internal.example/secret.png", body=PNG)
    assert refusal(IMAGE_URL, settings) == "the host internal.example is not a public address"
    assert dns.hosts == ["img.example", "internal.example"]
    assert requested(web) == [IMAGE_URL]


def test_redirect_to_the_metadata_address_is_refused_by_the_endpoint(client, auth, upstream, dns):
    metadata = "https://169.254.169.254/latest/meta-data/"
    redirect(upstream, IMAGE_URL, metadata)
    upstream.add(responses.GET, metadata, body=PNG)
    response = edit_from_url(client, auth, IMAGE_URL)
    assert response.status_code == 400
    assert response.json["message"] == fetch_error("the host 169.254.169.254 is not a public address")
    assert requested(upstream) == [IMAGE_URL]


def test_redirect_to_http_is_refused(settings, web, dns):
    redirect(web, IMAGE_URL, "http://img.example/a.png")
    web.add(responses.GET, "http://img.example/a.png", body=PNG)
    assert refusal(IMAGE_URL, settings) == "only https URLs are fetched"
    assert requested(web) == [IMAGE_URL]


def test_three_redirects_ending_in_a_png_are_followed(settings, web, dns):
    hops = [f"https://img.example/{i}" for i in range(4)]
    for here, there in zip(hops, hops[1:], strict=False):
        redirect(web, here, there)
    web.add(responses.GET, hops[-1], body=PNG, content_type="image/png")
    assert fetch_image(hops[0], settings) == PNG
    assert requested(web) == hops
    assert dns.hosts == ["img.example"] * 4


def test_relative_redirect_is_resolved_against_the_current_url(settings, web, dns):
    redirect(web, "https://img.example/dir/start", "../b.png")
    web.add(responses.GET, "https://img.example/b.png", body=PNG)
    assert fetch_image("https://img.example/dir/start", settings) == PNG
    assert requested(web) == ["https://img.example/dir/start", "https://img.example/b.png"]


def test_four_redirects_are_refused(settings, web, dns):
    hops = [f"https://img.example/{i}" for i in range(5)]
    for here, there in zip(hops, hops[1:], strict=False):
        redirect(web, here, there)
    web.add(responses.GET, hops[-1], body=PNG)
    assert refusal(hops[0], settings) == "more than 3 redirects"
    assert requested(web) == hops[:4]


def test_redirect_loop_is_refused(settings, web, dns):
    redirect(web, "https://img.example/a", "https://img.example/b")
    redirect(web, "https://img.example/b", "https://img.example/a")
    assert refusal("https://img.example/a", settings) == "more than 3 redirects"
    assert requested(web) == ["https://img.example/a", "https://img.example/b"] * 2


def test_cookie_set_by_a_redirect_is_not_sent_to_the_next_hop(settings, web, dns):
    redirect(web, "https://img.example/start", IMAGE_URL, **{"Set-Cookie": "session=abc123; Path=/"})
    web.add(responses.GET, IMAGE_URL, body=PNG)
    assert fetch_image("https://img.example/start", settings) == PNG
    assert web.calls[0].response.headers["Set-Cookie"] == "session=abc123; Path=/"
    final = web.calls[1].request
    assert final.url == IMAGE_URL
    assert "Cookie" not in final.headers
    assert "Authorization" not in final.headers


# --- size limits -------------------------------------------------------------------------------

def test_declared_content_length_over_the_limit_is_refused(settings, web):
    small = replace(settings, image_fetch_max_bytes=1024)
    # The body itself is small: only the declared length can cause this refusal.
    web.add(responses.GET, IMAGE_URL, body=PNG, headers={"Content-Length": "1025"})
    assert len(PNG) < 1024
    assert refusal(IMAGE_URL, small) == "the image is larger than 1024 bytes"


def test_streamed_body_over_the_limit_without_content_length_is_refused(settings, web):
    small = replace(settings, image_fetch_max_bytes=1024)
    web.add(responses.GET, IMAGE_URL, body=PNG + b"\0" * 4096)
    assert refusal(IMAGE_URL, small) == "the image is larger than 1024 bytes"
    assert "Content-Length" not in web.calls[0].response.headers


def test_body_of_exactly_the_limit_is_accepted(settings, web):
    exact = replace(settings, image_fetch_max_bytes=len(PNG))
    web.add(responses.GET, IMAGE_URL, body=PNG)
    assert fetch_image(IMAGE_URL, exact) == PNG


def test_oversize_image_is_refused_by_the_endpoint(app, client, auth, upstream):
    app.config["SETTINGS"] = replace(app.config["SETTINGS"], image_fetch_max_bytes=1024)
    upstream.add(responses.GET, IMAGE_URL, body=PNG + b"\0" * 4096)
    response = edit_from_url(client, auth, IMAGE_URL)
    assert response.status_code == 400
    assert response.json["message"] == fetch_error("the image is larger than 1024 bytes")
    assert not any(GENERATE.match(url) for url in requested(upstream))


# --- upstream answers and failures -------------------------------------------------------------

def test_non_image_body_is_a_400_naming_the_image(client, auth, upstream):
    upstream.add(responses.GET, IMAGE_URL, body="<html>not an image</html>", content_type="text/html")
    response = edit_from_url(client, auth, IMAGE_URL)
    assert response.status_code == 400
    assert response.json["message"].startswith("images[0]: not a decodable image")
    assert requested(upstream) == [IMAGE_URL]


def test_upstream_404_is_refused_naming_the_status(settings, web):
    web.add(responses.GET, IMAGE_URL, status=404, body="missing")
    assert refusal(IMAGE_URL, settings) == "img.example answered HTTP 404"


def test_upstream_404_is_a_400_naming_the_status_through_the_endpoint(client, auth, upstream):
    upstream.add(responses.GET, IMAGE_URL, status=404, body="missing")
    response = edit_from_url(client, auth, IMAGE_URL)
    assert response.status_code == 400
    assert response.json["message"] == fetch_error("img.example answered HTTP 404")


def test_connection_error_is_refused_with_a_clear_message(settings, web):
    web.add(responses.GET, IMAGE_URL, body=requests.exceptions.ConnectionError("connection refused"))
    assert refusal(IMAGE_URL, settings) == "could not connect to img.example"


def test_read_timeout_is_refused(settings, web):
    web.add(responses.GET, IMAGE_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    assert refusal(IMAGE_URL, settings) == "img.example did not answer in time"


def test_connect_timeout_is_refused(settings, web):
    web.add(responses.GET, IMAGE_URL, body=requests.exceptions.ConnectTimeout("connect timed out"))
    assert refusal(IMAGE_URL, settings) == "img.example did not answer in time"


def test_untrusted_certificate_is_refused(settings, web):
    web.add(responses.GET, IMAGE_URL, body=requests.exceptions.SSLError("certificate verify failed"))
    assert refusal(IMAGE_URL, settings) == "the TLS certificate of img.example is not trusted"


def test_connection_error_is_a_400_through_the_endpoint(client, auth, upstream):
    upstream.add(responses.GET, IMAGE_URL, body=requests.exceptions.ConnectionError("connection refused"))
    response = edit_from_url(client, auth, IMAGE_URL)
    assert response.status_code == 400
    assert response.json["message"] == fetch_error("could not connect to img.example")


def test_fetch_timeout_setting_bounds_the_request_timeout(settings, web):
    web.add(responses.GET, IMAGE_URL, body=PNG)
    fetch_image(IMAGE_URL, replace(settings, image_fetch_timeout=7))
    connect, read = web.calls[0].request.req_kwargs["timeout"]
    assert connect <= 7 and 6 < read <= 7


# --- IMAGE_FETCH_ALLOW_HOSTS -------------------------------------------------------------------

def test_allow_hosts_exempts_a_named_host_resolving_to_loopback(settings, web, dns):
    allowed = replace(settings, image_fetch_allow_hosts=("images.internal",))
    web.add(responses.GET, "https://images.internal/a.png", body=PNG)
    assert fetch_image("https://images.internal/a.png", allowed) == PNG
    assert dns.hosts == ["images.internal"]


def test_allow_hosts_does_not_exempt_other_hosts(settings, web, dns):
    allowed = replace(settings, image_fetch_allow_hosts=("images.internal",))
    web.add(responses.GET, "https://other.internal/a.png", body=PNG)
    assert refusal("https://other.internal/a.png", allowed) == "the host other.internal is not a public address"
    assert requested(web) == []


def test_allow_hosts_does_not_exempt_a_redirect_target(settings, web, dns):
    allowed = replace(settings, image_fetch_allow_hosts=("images.internal",))
    redirect(web, "https://images.internal/a.png", "https://other.internal/a.png")
    web.add(responses.GET, "https://other.internal/a.png", body=PNG)
    assert refusal("https://images.internal/a.png", allowed) == "the host other.internal is not a public address"
    assert requested(web) == ["https://images.internal/a.png"]


def test_allow_hosts_exempts_the_host_through_the_endpoint(app, client, auth, upstream, dns):
    app.config["SETTINGS"] = replace(app.config["SETTINGS"], image_fetch_allow_hosts=("images.internal",))
    upstream.add(responses.GET, "https://images.internal/a.png", body=PNG)
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = edit_from_url(client, auth, "https://images.internal/a.png")
    assert response.status_code == 200
    assert requested(upstream)[0] == "https://images.internal/a.png"
    assert dns.hosts == ["images.internal"]


# --- success end to end ------------------------------------------------------------------------

def test_fetched_image_is_sent_upstream_before_the_prompt(client, auth, upstream, dns):
    upstream.add(responses.GET, IMAGE_URL, body=PNG, content_type="image/png")
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = edit_from_url(client, auth, IMAGE_URL)
    assert response.status_code == 200
    assert response.json["data"][0]["b64_json"]
    assert dns.asked == [("img.example", 443)]
    generate = [call for call in upstream.calls if GENERATE.match(call.request.url)]
    assert len(generate) == 1
    parts = json.loads(generate[0].request.body)["contents"][0]["parts"]
    assert parts[0] == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode("ascii")}}
    assert parts[1] == {"text": "make it blue"}
    assert len(parts) == 2


def test_image_request_carries_no_gateway_credentials(client, auth, upstream):
    upstream.add(responses.GET, IMAGE_URL, body=PNG, content_type="image/png")
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    assert edit_from_url(client, auth, IMAGE_URL).status_code == 200
    sent = upstream.calls[0].request
    assert sent.url == IMAGE_URL
    assert sent.headers["Host"] == "img.example"
    for header in ("Authorization", "Cookie", "x-goog-api-key"):
        assert header not in sent.headers


def test_fetched_images_together_may_not_exceed_max_content_length(settings, auth, upstream):
    limit = 3 * len(PNG) - 1  # two fetched images fit, the third does not
    client = create_app(replace(settings, max_content_length=limit)).test_client()
    for name in ("a", "b", "c"):
        upstream.add(responses.GET, f"https://img.example/{name}.png", body=PNG)
    response = client.post("/v1/images/edits", headers=auth, json={
        "prompt": "three", "images": [{"image_url": f"https://img.example/{name}.png"} for name in "abc"]})
    assert response.status_code == 413
    assert response.get_json()["message"] == (
        f"Request Entity Too Large: images[2]: the input images add up to more than {limit} bytes "
        "(MAX_CONTENT_LENGTH).")
    assert not [call for call in upstream.calls if "generateContent" in call.request.url]
