"""GET /openapi.json describes the API, generated from the marshmallow schemas."""
from openapi_spec_validator import validate

from gateway.providers import provider_types


def test_the_spec_is_valid_openapi_3(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json
    assert spec["openapi"].startswith("3.")
    validate(spec)


def test_it_covers_both_endpoints_and_both_edit_bodies(client):
    spec = client.get("/openapi.json").json
    generation = spec["paths"]["/v1/images/generations"]["post"]
    edit = spec["paths"]["/v1/images/edits"]["post"]
    assert set(generation["requestBody"]["content"]) == {"application/json"}
    assert set(edit["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    form = edit["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert form["image"]["items"]["format"] == "binary" and form["mask"]["format"] == "binary"
    assert "image[]" in form and "file" in form and "images" not in form


def test_request_schemas_come_from_the_marshmallow_schemas(client):
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    generation = schemas["GenerationRequest"]
    assert generation["required"] == ["prompt"]
    assert generation["additionalProperties"] is False
    assert generation["properties"]["n"] == {"type": "integer", "default": 1, "minimum": 1, "maximum": 10}
    assert generation["properties"]["quality"]["enum"] == ["standard", "hd", "low", "medium", "high", "auto"]
    assert schemas["EditRequest"]["required"] == ["images", "prompt"]
    assert schemas["EditRequest"]["properties"]["input_fidelity"]["enum"] == ["high", "low"]


def test_responses_and_errors_are_described(client):
    spec = client.get("/openapi.json").json
    responses = spec["paths"]["/v1/images/generations"]["post"]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ImagesResponse"}
    for status in ("400", "401", "413", "415", "429", "500", "502", "503", "504"):
        assert responses[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    error = spec["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "status", "message"}
    assert set(spec["components"]["schemas"]["ImagesResponse"]["required"]) >= {"created", "data"}


def test_both_auth_schemes_are_declared(client):
    spec = client.get("/openapi.json").json
    assert spec["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    }
    assert spec["paths"]["/v1/images/edits"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]


def test_deeply_nested_json_is_a_400_not_a_crash(client, auth):
    body = "[" * 100000 + "]" * 100000
    response = client.post("/v1/images/generations", data=body, content_type="application/json", headers=auth)
    assert response.status_code == 400
    assert response.json["message"] == "Invalid JSON in request body: nested too deeply"


def test_the_admin_api_usage_and_rate_limit_headers_are_described(client):
    spec = client.get("/openapi.json").json
    assert set(spec["paths"]["/v1/admin/keys"]) == {"get", "post"}
    assert set(spec["paths"]["/v1/admin/keys/{name}"]) == {"get", "patch", "delete"}
    assert "/v1/admin/usage" in spec["paths"] and "/v1/usage" in spec["paths"]
    assert spec["components"]["schemas"]["KeyCreateRequest"]["required"] == ["name"]
    generation = spec["paths"]["/v1/images/generations"]["post"]["responses"]
    assert "x-ratelimit-remaining-images" in generation["200"]["headers"]
    assert "insufficient_quota" in generation["429"]["description"] and "403" in generation


def test_the_description_names_every_provider_and_its_setting(client):
    description = client.get("/openapi.json").json["info"]["description"]
    for name, provider in provider_types().items():
        assert f"`{name}` (" in description and provider.missing_setting in description
