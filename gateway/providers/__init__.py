"""Adapters that call upstream image models; none of them knows about Flask. A provider has a
`name` and a `title`, says whether it is `configured` and which `missing_setting` would
configure it, builds the upstream request once per client request (`request_for`) and makes one
call with it (`generate`)."""
from .gemini import GeminiProvider


def build_providers(settings):
    """Every provider by name, built once per process (by create_app, in the worker)."""
    return {provider.name: provider for provider in (GeminiProvider(settings),)}
