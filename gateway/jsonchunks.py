"""JSON documents that carry large base64 strings, written without copying them through the
JSON encoder (base64 needs no escaping, so it can be spliced in as it is)."""
import json


def json_chunks(document, key, blobs):
    """`document` as JSON byte chunks in which the i-th `"key": ""` (in document order) holds
    blobs[i]. The text `"key": ""` cannot occur inside a JSON string, whose quotes are escaped."""
    marker = f'"{key}": ""'
    first, *rest = json.dumps(document).split(marker)
    chunks = [first.encode()]
    for blob, after in zip(blobs, rest, strict=True):
        chunks += [f'"{key}": "'.encode(), blob, b'"', after.encode()]
    return chunks
