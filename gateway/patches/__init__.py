"""The few places where the gateway reaches into a library's internals, one module per library.
Each library is pinned in requirements.txt, and tests/unit/test_patches.py checks what each
patch relies on, so an upgrade that changes it fails there, naming the library and the version
the patch was written against. docs/decisions.md lists them, with what each buys or why it is
needed. This package imports nothing itself: a provider may use the urllib3 module without
importing gunicorn."""
