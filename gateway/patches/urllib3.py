"""Where the gateway reaches into urllib3's internals (urllib3==2.8.0, requests==2.34.2, pinned
in requirements.txt). Not a speed-up: it bounds an upstream answer's body by the call's
deadline. tests/unit/test_patches.py checks what it relies on."""
PINNED = "2.8.0"


def read_available(response, size, within=None, decode=False):
    """Up to `size` bytes of a streamed requests `response`'s body, as soon as some have arrived
    (b"" at its end). With `within`, the wait for them is at most `within` seconds (urllib3's
    ReadTimeoutError then): requests' read timeout bounds each socket read, so a body that
    trickles one byte at a time would otherwise never time out. Relies on `response.raw` being
    urllib3's HTTPResponse, whose `read1` returns after one socket read, and whose `connection`
    keeps the socket (`.sock`) it reads from."""
    if within is not None:
        connection = response.raw.connection
        if connection is not None and connection.sock is not None:
            connection.sock.settimeout(within)
    return response.raw.read1(size, decode_content=decode)
