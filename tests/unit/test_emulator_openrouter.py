"""The offline emulator answers like OpenRouter's chat completions, so the integration tests mean something."""
import base64
import io
import json

import pytest
from PIL import Image

from emulator import create_emulator
from tests.support import png_bytes

KEY = {"Authorization": "Bearer emulator-key"}
PATHS = ["/api/v1/chat/completions", "/v1/chat/completions"]
PRO = "google/gemini-3-pro-image-preview"
FLUX = "black-forest-labs/flux.2-pro"


def chat_body(prompt="a fox", model=PRO, image_config=None, images=(), modalities=("image", "text")):
    urls = [f"data:image/png;base64,{base64.b64encode(i).decode()}" for i in images]
    content = [{"type": "text", "text": prompt}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    payload = {"model": model, "messages": [{"role": "user", "content": content}], "modalities": list(modalities)}
    if image_config:
        payload["image_config"] = image_config
    return payload


def message_of(response):
    return response.json["choices"][0]["message"]


def chat_images(response):
    images = []
    for entry in message_of(response).get("images") or []:
        header, _, data = entry["image_url"]["url"].partition(",")
        assert header == "data:image/png;base64"
        images.append(Image.open(io.BytesIO(base64.b64decode(data))))
    return images


def completion(emulator, payload, headers=KEY, path=PATHS[0]):
    return emulator.post(path, json=payload, headers=headers)


def error_of(response):
    error = response.json["error"]
    assert error["code"] == response.status_code and isinstance(error["message"], str)
    return error


@pytest.mark.parametrize("path", PATHS)
def test_both_paths_answer_with_an_image_and_words(emulator, path):
    response = completion(emulator, chat_body(), path=path)
    assert response.status_code == 200
    assert response.json["choices"][0]["finish_reason"] == "stop"
    assert message_of(response)["role"] == "assistant" and message_of(response)["content"]
    (image,) = chat_images(response)
    assert image.format == "PNG"


@pytest.mark.parametrize("model, config, size", [
    (PRO, {"aspect_ratio": "16:9", "image_size": "1K"}, (1376, 768)),
    (PRO, {"aspect_ratio": "16:9", "image_size": "2K"}, (2752, 1536)),
    ("google/gemini-2.5-flash-image", {"aspect_ratio": "16:9"}, (1344, 768)),
    ("google/gemini-3.1-flash-image-preview", {"aspect_ratio": "1:1", "image_size": "0.5K"}, (512, 512)),
    ("google/gemini-3.1-flash-image-preview", {"aspect_ratio": "8:1", "image_size": "0.5K"}, (1536, 192)),
    (PRO, None, (1024, 1024)),
])
def test_answers_each_models_own_pixel_sizes(emulator, model, config, size):
    response = completion(emulator, chat_body(model=model, image_config=config))
    assert response.status_code == 200
    (image,) = chat_images(response)
    assert (image.format, image.size) == ("PNG", size)


def test_takes_a_plain_string_content(emulator):
    payload = {"model": PRO, "messages": [{"role": "user", "content": "a fox"}], "modalities": ["image", "text"]}
    response = completion(emulator, payload)
    assert response.status_code == 200
    assert len(chat_images(response)) == 1


def test_input_images_show_in_order_as_stripes(emulator):
    red, blue = png_bytes((20, 20), (255, 0, 0)), png_bytes((20, 20), (0, 0, 255))
    (image,) = chat_images(completion(emulator, chat_body(images=[red, blue])))
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert image.getpixel((image.width - 1, 0)) == (0, 0, 255)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "emulator-key"}])
def test_requires_a_bearer_key(emulator, headers):
    response = completion(emulator, chat_body(), headers=headers)
    assert response.status_code == 401
    error_of(response)


def test_a_configured_key_refuses_others(emulator):
    strict = create_emulator(api_key="k").test_client()
    response = completion(strict, chat_body(), headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    error_of(response)
    assert completion(strict, chat_body(), headers={"Authorization": "Bearer k"}).status_code == 200


def test_rejects_an_unknown_model(emulator):
    response = completion(emulator, chat_body(model="google/gemini-9"))
    assert response.status_code == 400
    assert error_of(response)["message"].endswith("is not a valid model ID")


@pytest.mark.parametrize("modalities", [["text"], []])
def test_rejects_modalities_without_image(emulator, modalities):
    response = completion(emulator, chat_body(modalities=modalities))
    assert response.status_code == 404
    error_of(response)


def test_an_image_only_model_refuses_text_output(emulator):
    response = completion(emulator, chat_body(model=FLUX))
    assert response.status_code == 404
    error_of(response)


def test_an_image_only_model_answers_images_without_words(emulator):
    response = completion(emulator, chat_body(model=FLUX, modalities=["image"]))
    assert response.status_code == 200
    assert message_of(response)["content"] == ""
    assert len(chat_images(response)) == 1


@pytest.mark.parametrize("model, config", [
    (PRO, {"aspect_ratio": "7:4"}),
    ("google/gemini-2.5-flash-image", {"aspect_ratio": "9:21"}),
    ("google/gemini-3.1-flash-image-preview", {"aspect_ratio": "9:21"}),
    ("google/gemini-2.5-flash-image", {"image_size": "2K"}),
    (PRO, {"image_size": "0.5K"}),
])
def test_rejects_unsupported_image_config(emulator, model, config):
    response = completion(emulator, chat_body(model=model, image_config=config))
    assert response.status_code == 400
    error_of(response)


def test_rejects_image_urls_that_are_not_data_urls(emulator):
    payload = chat_body()
    payload["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": "https://x.test/a.png"}})
    response = completion(emulator, payload)
    assert response.status_code == 400
    error_of(response)


@pytest.mark.parametrize("status", [402, 429, 500, 503])
def test_fails_on_request_in_openrouters_error_shape(emulator, status):
    response = completion(emulator, chat_body(f"[emulator: fail={status}]"))
    assert response.status_code == status
    assert error_of(response)["code"] == status


def test_a_failure_can_carry_retry_after(emulator):
    response = completion(emulator, chat_body("[emulator: fail=429 retry_after=3]"))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"


def test_fails_only_the_first_times_then_recovers(emulator):
    prompt = "[emulator: fail=503 times=1]"
    assert completion(emulator, chat_body(prompt)).status_code == 503
    recovered = completion(emulator, chat_body(prompt))
    assert recovered.status_code == 200
    assert len(chat_images(recovered)) == 1


def test_a_blocked_prompt_is_a_moderation_error(emulator):
    response = completion(emulator, chat_body("[emulator: block=violence]"))
    assert response.status_code == 403
    assert error_of(response)["metadata"]["reasons"] == ["violence"]


def test_a_safety_finish_is_a_content_filter_without_images(emulator):
    response = completion(emulator, chat_body("[emulator: finish=SAFETY]"))
    assert response.status_code == 200
    assert response.json["choices"][0]["finish_reason"] == "content_filter"
    assert chat_images(response) == []


def test_text_only_answers_no_images(emulator):
    response = completion(emulator, chat_body("[emulator: text_only=1]"))
    assert response.status_code == 200
    assert chat_images(response) == []
    assert message_of(response)["content"]


def test_can_answer_several_images(emulator):
    first, second = chat_images(completion(emulator, chat_body("[emulator: images=2]")))
    assert first.size == second.size and first.tobytes() != second.tobytes()


def test_malformed_answers_a_200_that_is_not_json(emulator):
    response = completion(emulator, chat_body("[emulator: malformed=1]"))
    assert response.status_code == 200
    with pytest.raises(ValueError):
        json.loads(response.get_data(as_text=True))


@pytest.mark.parametrize("config", [None, {"aspect_ratio": "1:1", "image_size": "4K"}])
def test_reports_usage_with_a_cost(emulator, config):
    usage = completion(emulator, chat_body("x" * 40, image_config=config)).json["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert isinstance(usage["cost"], (int, float)) and usage["cost"] > 0


def test_a_bigger_tier_costs_more(emulator):
    def cost(size):
        response = completion(emulator, chat_body(image_config={"aspect_ratio": "1:1", "image_size": size}))
        return response.json["usage"]["cost"]

    assert cost("4K") > cost("1K")


def test_logs_the_call_without_image_data(emulator):
    picture = png_bytes((20, 20), (0, 255, 0))
    completion(emulator, chat_body("a green fox", model="google/gemini-2.5-flash-image", images=[picture]))
    log = emulator.get("/emulator/requests")
    assert log.status_code == 200
    (entry,) = log.json
    assert (entry["model"], entry["prompt"]) == ("google/gemini-2.5-flash-image", "a green fox")
    assert entry["images"] == [[20, 20]]
    assert base64.b64encode(picture).decode() not in log.get_data(as_text=True)
