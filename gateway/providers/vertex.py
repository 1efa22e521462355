"""Gemini on Vertex AI (docs/providers.md): Google's generateContent body (every `contents[]`
entry has its role, as Vertex requires) and answers, sent to the project's regional endpoint
with an OAuth access token from google-auth instead of an API key."""
import functools
import threading

import google.auth
import google.auth.exceptions
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from ..errors import UpstreamError, UpstreamUnavailable
from . import Provider, gemini, transport

SUBJECT = "Vertex AI"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
CREDENTIALS = "GOOGLE_APPLICATION_CREDENTIALS (or the default credentials) and its roles/aiplatform.user role"


def base_url_for(location):
    """Vertex's endpoint for a location: `global` has no regional prefix."""
    host = "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"
    return f"https://{host}"


class AccessTokens:
    """One google-auth credentials object per process, loaded on first use; its access token is
    refreshed before it expires (google-auth counts a token that has under 3 min 45 s left as
    expired, which is longer than any call may take), by one caller at a time: the others wait
    for that refresh instead of starting their own or using an expired token."""

    def __init__(self, credentials_file, session, timeout):
        self.credentials_file, self.credentials = credentials_file, None
        self.request = functools.partial(Request(session), timeout=timeout)
        self.lock = threading.Lock()

    def _load(self):
        if self.credentials_file:
            return service_account.Credentials.from_service_account_file(self.credentials_file, scopes=[SCOPE])
        credentials, _ = google.auth.default(scopes=[SCOPE])
        return credentials

    def token(self):
        with self.lock:
            try:
                if self.credentials is None:
                    self.credentials = self._load()
                if not self.credentials.valid:
                    self.credentials.refresh(self.request)
            except google.auth.exceptions.TransportError as error:
                raise UpstreamUnavailable(f"Could not reach Google's token endpoint for {SUBJECT} "
                                          f"({type(error).__name__}).", cause="token_unreachable") from None
            except (google.auth.exceptions.GoogleAuthError, OSError, ValueError) as error:
                first = error.args[0] if error.args else ""
                reason = transport.scrub(first if isinstance(first, str) else str(error))[:200]
                raise UpstreamError(f"{SUBJECT} access token could not be had ({type(error).__name__}: {reason}); "
                                    f"the operator should check {CREDENTIALS}.", cause="token_refused") from None
            return self.credentials.token


class VertexProvider(Provider):
    name, subject, missing_setting = "vertex", SUBJECT, "VERTEX_PROJECT"
    build_body = staticmethod(gemini.build_body)

    def __init__(self, settings, session=None):
        super().__init__(settings, session)
        self.project, self.location = settings.vertex_project, settings.vertex_location
        self.base_url = settings.vertex_base_url or base_url_for(self.location)
        self.tokens = AccessTokens(settings.google_application_credentials, session or transport.shared_session(),
                                   settings.upstream_connect_timeout)

    @property
    def configured(self):
        return bool(self.project)

    def url_for(self, model):
        """The model's URL, without the method (`:generateContent` or `:streamGenerateContent`)."""
        return f"{self.base_url}/v1/projects/{self.project}/locations/{self.location}/publishers/google/models/{model}"

    def generate(self, request, scope, on_partial=None):
        """One image call with a current access token, retried as needed (the shared transport)."""
        headers = {"Authorization": f"Bearer {self.tokens.token()}"}
        return gemini.send(self.transport, self.url_for(request.model), headers, request, scope, on_partial,
                           SUBJECT, credentials=CREDENTIALS)
