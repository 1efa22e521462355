"""What users of the official SDKs see (docs/api.md, "Errors"), with the Python SDK and the Node
SDK (tests/node, installed by `npm ci` from its lockfile): the gateway's message in the exception
with the default GATEWAY_ERROR_FORMAT (auto) and with `openai`, the gateway's own body for
everyone else, and SDK retries that never multiply the gateway's own upstream attempts."""
import json
import subprocess
import time
from pathlib import Path

import openai
import pytest
import requests

from tests.integration.conftest import CLIENT_KEY, emulator_requests, start_gateway, stop

pytestmark = pytest.mark.integration

NODE = Path(__file__).resolve().parents[1] / "node"
MESSAGE = "Invalid request parameters: model: unknown model 'dall-e-9'"
UPSTREAM_TIMEOUT = 3


@pytest.fixture(scope="module")
def openai_format(emulator_url, tmp_path_factory):
    """A gateway with OpenAI-shaped errors, a short upstream deadline and an OpenAI model alias."""
    process, url = start_gateway(emulator_url, tmp_path_factory.mktemp("sdk") / "gateway.log",
                                 GATEWAY_ERROR_FORMAT="openai", UPSTREAM_TIMEOUT=str(UPSTREAM_TIMEOUT),
                                 GATEWAY_MODEL_ALIASES="dall-e-3=gemini-2.5-flash-image")
    yield url
    stop(process)


def python_sdk(url, retries=2):
    return openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=retries, timeout=60)


def node_sdk(url, prompt, retries=2):
    """The Node SDK's view of one images.generate call, as the JSON line tests/node/sdk_call.mjs prints."""
    done = subprocess.run(["node", str(NODE / "sdk_call.mjs"), url + "/v1", CLIENT_KEY, prompt, str(retries)],
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_python_sdk_shows_the_gateways_message_with_openai_errors(openai_format):
    with pytest.raises(openai.BadRequestError) as error:
        python_sdk(openai_format).images.generate(prompt="a fox", model="dall-e-9")
    assert MESSAGE in str(error.value)
    assert error.value.type == "invalid_request_error" and error.value.code == "400"


def test_python_sdk_shows_the_gateways_message_by_default(gateway_url):
    with pytest.raises(openai.BadRequestError) as error:
        python_sdk(gateway_url).images.generate(prompt="a fox", model="dall-e-9")
    assert str(error.value).startswith(f"Error code: 400 - {MESSAGE}")
    assert error.value.type == "invalid_request_error"


def test_clients_other_than_the_sdks_get_the_gateways_own_body_by_default(gateway_url):
    response = requests.post(gateway_url + "/v1/images/generations", json={"prompt": "a fox", "model": "dall-e-9"},
                             headers={"Authorization": f"Bearer {CLIENT_KEY}", "User-Agent": "curl/8.5.0"}, timeout=60)
    body = response.json()
    assert (response.status_code, body["error"], body["status"]) == (400, True, 400)
    assert body["message"].startswith(MESSAGE)


def test_node_sdk_shows_the_gateways_message_with_openai_errors(openai_format):
    seen = node_sdk(openai_format, "a fox", retries=0)
    assert seen["ok"] and seen["bytes"] > 0
    failed = node_sdk(openai_format, "x" * 32001, retries=0)
    assert failed["status"] == 400
    assert failed["message"].startswith("400 Invalid request parameters: prompt: Longer than maximum length 32000")
    assert failed["error"]["type"] == "invalid_request_error"


def test_node_sdk_shows_the_gateways_message_by_default(gateway_url):
    failed = node_sdk(gateway_url, "x" * 32001, retries=0)
    assert failed["status"] == 400
    assert failed["message"].startswith("400 Invalid request parameters: prompt: Longer than maximum length 32000")


@pytest.mark.parametrize("client", ["python", "node"])
def test_one_sdk_call_costs_no_more_upstream_calls_than_the_gateways_own_attempts(openai_format, emulator_url,
                                                                                  client):
    prompt = f"always down {client} {time.time()} [emulator: fail=503]"
    since = time.time()
    if client == "python":
        with pytest.raises(openai.InternalServerError):  # 502, with the SDK's default two retries
            python_sdk(openai_format).images.generate(prompt=prompt)
    else:
        assert node_sdk(openai_format, prompt)["status"] == 502
    assert len(emulator_requests(emulator_url, since)) == 3  # UPSTREAM_MAX_RETRIES (2) + 1


def test_a_hung_upstream_costs_one_upstream_timeout_with_sdk_retries_on(openai_format):
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as error:
        python_sdk(openai_format).images.generate(prompt="hung [emulator: delay=30]")
    assert error.value.status_code == 504
    assert time.monotonic() - started <= UPSTREAM_TIMEOUT + 1


def test_models_list_shows_the_catalog_and_the_aliases(openai_format):
    ids = [model.id for model in python_sdk(openai_format).models.list()]
    assert ids[:3] == ["gemini-2.5-flash-image", "gemini-3-pro-image", "gemini-3.1-flash-image"]
    assert "dall-e-3" in ids and "nano-banana" in ids
    assert python_sdk(openai_format).models.retrieve("dall-e-3").owned_by == "google"


def test_an_alias_serves_its_model(openai_format):
    result = python_sdk(openai_format).images.generate(prompt="an aliased fox", model="dall-e-3", size="1024x1024")
    assert result.model_dump()["model"] == "gemini-2.5-flash-image"
    assert result.data[0].b64_json
