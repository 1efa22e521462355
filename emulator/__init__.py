"""An offline stand-in for the Gemini Developer API's generateContent, for development and tests."""
from .server import create_emulator

__all__ = ["create_emulator"]
