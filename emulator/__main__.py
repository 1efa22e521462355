"""`python -m emulator --port 8090`: serve the offline emulator (Gemini API, Vertex AI, OpenRouter) on 127.0.0.1."""
import argparse
import os

from werkzeug.serving import run_simple

from . import create_emulator
from .oauth import TokenIssuer, write_service_account

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=int(os.environ.get("EMULATOR_PORT", "8090")))
parser.add_argument("--api-key", default=os.environ.get("EMULATOR_API_KEY"),
                    help="refuse any other x-goog-api-key or OpenRouter key (default: accept any non-empty key)")
parser.add_argument("--service-account", metavar="PATH",
                    help="write a throwaway service-account file whose token_uri is this emulator, and accept "
                         "its grants (point GOOGLE_APPLICATION_CREDENTIALS at it for the Vertex route)")
parser.add_argument("--token-lifetime", type=int, default=3600, help="seconds an access token lasts")
args = parser.parse_args()
issuer = None
if args.service_account:
    account = write_service_account(args.service_account, f"http://{args.host}:{args.port}/token")
    issuer = TokenIssuer(account, args.token_lifetime)
run_simple(args.host, args.port, create_emulator(args.api_key, issuer), threaded=True)
