"""`python -m emulator --port 8090`: serve the offline Gemini emulator on 127.0.0.1."""
import argparse
import os

from werkzeug.serving import run_simple

from . import create_emulator

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=int(os.environ.get("EMULATOR_PORT", "8090")))
parser.add_argument("--api-key", default=os.environ.get("EMULATOR_API_KEY"),
                    help="refuse any other x-goog-api-key (default: accept any non-empty key)")
args = parser.parse_args()
run_simple(args.host, args.port, create_emulator(args.api_key), threaded=True)
