"""An offline stand-in for the upstream APIs (the Gemini API, Vertex AI, OpenRouter), for development and tests."""
from .server import create_emulator

__all__ = ["create_emulator"]
