"""A local https image server with a self-signed certificate for `localhost`, for edit tests."""
import datetime
import http.server
import ipaddress
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed_certificate(directory, names=("localhost",)):
    """(cert path, key path) of a self-signed CA certificate for `names` and 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [*(x509.DNSName(n) for n in names), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsServer:
    """A threaded https server on 127.0.0.1 that records the path of every GET (`requested`) and
    the server name each TLS client asked for (`sni`), and answers each GET with `answer(request)`,
    which a subclass writes through the request (an http.server.BaseHTTPRequestHandler)."""

    def __init__(self, cert_path, key_path):
        self.requested, self.sni = [], []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        context.sni_callback = lambda sock, name, context: self.sni.append(name)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requested.append(self.path)
                server.answer(self)

            def log_message(self, *args):
                pass

        return Handler

    def answer(self, request):
        raise NotImplementedError

    def url(self, path):
        return f"https://localhost:{self.port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class ImageServer(TlsServer):
    """Serves `files` ({path: bytes})."""

    def __init__(self, cert_path, key_path, files):
        self.files = files
        super().__init__(cert_path, key_path)

    def answer(self, request):
        body = self.files.get(request.path)
        request.send_response(200 if body is not None else 404)
        request.send_header("Content-Type", "image/png")
        request.send_header("Content-Length", str(len(body or b"")))
        request.end_headers()
        request.wfile.write(body or b"")
