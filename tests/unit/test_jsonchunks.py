"""JSON with base64 spliced in is the same JSON the encoder would write."""
import json

from gateway.jsonchunks import json_chunks


def test_blobs_land_in_order_in_the_marked_fields():
    document = {"a": [{"data": ""}, {"data": ""}], "text": 'say "data": "" here'}
    body = b"".join(json_chunks(document, "data", [b"QUJD", b"REVG"]))
    assert json.loads(body) == {"a": [{"data": "QUJD"}, {"data": "REVG"}], "text": 'say "data": "" here'}
