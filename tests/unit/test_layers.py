"""Data flows one way, blueprint -> service -> provider: the exceptions and the providers know
nothing of the web framework, so a provider can be used (and tested) without Flask."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMPORT_THE_PROVIDERS = """
import importlib, pkgutil, sys
import gateway.errors, gateway.providers
for module in pkgutil.iter_modules(gateway.providers.__path__):
    importlib.import_module(f"gateway.providers.{module.name}")
print(sorted({name.split(".")[0] for name in sys.modules} & {"flask", "werkzeug", "gunicorn"}))
"""


def test_the_exceptions_and_every_provider_import_neither_flask_nor_its_servers():
    """In a fresh interpreter, since this test process has long imported Flask."""
    loaded = subprocess.run([sys.executable, "-c", IMPORT_THE_PROVIDERS], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert loaded.stdout.strip() == "[]"
