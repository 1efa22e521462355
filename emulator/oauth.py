"""Google's OAuth token endpoint as far as a service account uses it: a throwaway service-account
file whose `token_uri` points at the emulator, and the JWT-bearer grant google-auth sends with
it (RFC 7523: a JWT signed with the account's key, exchanged for an access token)."""
import base64
import json
import os
import secrets
import threading
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # the audience google-auth puts in every grant


def write_service_account(path, token_uri):
    """A new service account with a fresh key, written (owner-only) to `path`; returns its fields."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    account = {
        "type": "service_account", "project_id": "emulator-project", "private_key_id": secrets.token_hex(20),
        "private_key": pem, "client_email": "gateway@emulator-project.iam.gserviceaccount.com",
        "client_id": "100000000000000000001", "token_uri": token_uri,
    }
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(account, file)
    return account


def _part(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Checks a JWT-bearer grant against one service account and hands out access tokens that
    expire after `lifetime` seconds; remembers them, so the Vertex route can check them."""

    def __init__(self, account, lifetime=3600):
        self.account, self.lifetime = account, lifetime
        self.public_key = serialization.load_pem_private_key(account["private_key"].encode(), None).public_key()
        self.tokens, self.issued, self.lock = {}, 0, threading.Lock()

    def grant(self, form):
        """(access token answer, None) or (None, (OAuth error, description)) for a token request's form."""
        if form.get("grant_type") != JWT_BEARER:
            return None, ("unsupported_grant_type", "only the JWT-bearer grant is served")
        try:
            header, claims, signature = form["assertion"].split(".")
            self.public_key.verify(_part(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(),
                                   hashes.SHA256())
            claims = json.loads(_part(claims))
        except Exception:  # noqa: BLE001 - any malformed or forged assertion gets the same answer
            return None, ("invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        if claims.get("iss") != self.account["client_email"] or \
                claims.get("aud") not in (self.account["token_uri"], GOOGLE_TOKEN_URI):
            return None, ("invalid_grant", "Invalid issuer or audience.")
        if not claims.get("iat", 0) - 60 <= now < claims.get("exp", 0):
            return None, ("invalid_grant", "Invalid JWT: Token must be a short-lived token.")
        if SCOPE not in str(claims.get("scope", "")).split():
            return None, ("invalid_scope", "The cloud-platform scope is missing.")
        token = "ya29.emulated-" + secrets.token_hex(16)
        with self.lock:
            self.tokens[token] = now + self.lifetime
            self.issued += 1
        return {"access_token": token, "expires_in": self.lifetime, "token_type": "Bearer"}, None

    def valid(self, token):
        with self.lock:
            return self.tokens.get(token, 0) > time.time()
