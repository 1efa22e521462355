"""JSON documents that carry large base64 strings, written without copying them through the
JSON encoder (base64 needs no escaping, so it can be spliced in as it is)."""
import json
import re


def json_chunks(document, key, blobs):
    """`document` as JSON byte chunks in which the i-th `"key": ""` (in document order) holds
    blobs[i]. The text `"key": ""` cannot occur inside a JSON string, whose quotes are escaped."""
    marker = f'"{key}": ""'
    first, *rest = json.dumps(document).split(marker)
    chunks = [first.encode()]
    for blob, after in zip(blobs, rest, strict=True):
        chunks += [f'"{key}": "'.encode(), blob, b'"', after.encode()]
    return chunks


CARVED = "\x00carved:"  # what a carved-out string reads as in the parsed skeleton, before it is put back
_KEY_BEFORE = re.compile(rb'"(?:data|url)"\s*:\s*$')


def loads_carving(body, min_length=4096):
    """`json.loads(body)`, with each long string value of a `"data"` or `"url"` key (an image's
    base64 or data URL) carved out of the text first and put back as ASCII bytes, not decoded
    through the JSON parser: such strings are megabytes and need no unescaping. A string that
    holds an escape (a backslash) is parsed as usual, so the result means what the JSON says."""
    pieces, blobs, start = [], [], 0
    position = body.find(b'"')
    while position != -1:
        end = _string_end(body, position)
        if end == -1:
            break  # unterminated: let the parser say so
        if end - position > min_length and body.find(b"\\", position, end) == -1 \
                and _KEY_BEFORE.search(body, max(0, position - 32), position):
            pieces += [body[start:position], b'"\\u0000carved:%d"' % len(blobs)]
            blobs.append(body[position + 1:end])
            start = end + 1
        position = body.find(b'"', end + 1)
    if not blobs:
        return json.loads(body)
    return _put_back(json.loads(b"".join([*pieces, body[start:]])), blobs)


def _string_end(body, opening):
    """The index of the quote that closes the JSON string opened at `opening`, or -1."""
    end = body.find(b'"', opening + 1)
    while end != -1:
        escapes = 0
        while end - 1 - escapes > opening and body[end - 1 - escapes] == 0x5C:  # backslashes before the quote
            escapes += 1
        if escapes % 2 == 0:
            return end
        end = body.find(b'"', end + 1)
    return -1


def _put_back(value, blobs):
    if isinstance(value, dict):
        return {key: _put_back(item, blobs) for key, item in value.items()}
    if isinstance(value, list):
        return [_put_back(item, blobs) for item in value]
    if isinstance(value, str) and value.startswith(CARVED):
        return blobs[int(value[len(CARVED):])]
    return value
