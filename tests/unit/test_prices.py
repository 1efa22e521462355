"""usage.cost from the price table (docs/providers.md, "Cost"): images per image, input per token,
and the text and thinking output per token where the model charges it."""
import dataclasses

import responses

from gateway.catalog import UNPRICED_IMAGE_USD, resolve_model
from gateway.providers import Usage, gemini, openrouter
from tests.support import gemini_answer, image_part
from tests.unit.conftest import GENERATE

PRO = resolve_model("gemini-3-pro-image", "auto")
THINKING_ANSWER = {
    "promptTokenCount": 10, "candidatesTokenCount": 1170, "thoughtsTokenCount": 300, "totalTokenCount": 1480,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}],
    "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}, {"modality": "TEXT", "tokenCount": 50}],
}


def test_gemini_text_and_thinking_output_is_the_text_modality_plus_the_thoughts():
    usage = gemini.parse_usage(THINKING_ANSWER)
    assert (usage.output_tokens, usage.output_text_tokens) == (1470, 350)


def test_gemini_output_without_its_split_by_modality_prices_the_thinking_alone():
    usage = gemini.parse_usage({"candidatesTokenCount": 1170, "thoughtsTokenCount": 300})
    assert (usage.output_tokens, usage.output_text_tokens) == (1470, 300)


def test_openrouter_text_output_is_the_completion_less_its_image_tokens():
    usage = openrouter.parse_usage({"prompt_tokens": 10, "completion_tokens": 1500,
                                    "completion_tokens_details": {"image_tokens": 1120, "reasoning_tokens": 200}})
    assert usage.output_text_tokens == 380


def test_openrouter_text_output_without_image_tokens_is_the_reasoning():
    usage = openrouter.parse_usage({"completion_tokens": 1500, "completion_tokens_details": {"reasoning_tokens": 200}})
    assert usage.output_text_tokens == 200


def test_3_pro_prices_text_and_thinking_at_its_output_price():
    usage = Usage(input_tokens=10, output_tokens=1470, output_text_tokens=350)
    assert PRO.cost("1K", 1, usage) == round(0.134 + 10 * 2.00 / 1e6 + 350 * 12.00 / 1e6, 6)


def test_a_model_priced_by_tokens_alone_prices_every_output_token():
    model = dataclasses.replace(PRO, image_price=None, input_price=1.0, output_price=40.0)
    assert model.cost("1K", 1, Usage(input_tokens=100, output_tokens=4000, output_text_tokens=100)) == 0.1601


def test_a_model_without_prices_has_no_cost():
    model = dataclasses.replace(PRO, image_price=None, input_price=0.0, output_price=0.0)
    assert model.cost("1K", 1, Usage(output_tokens=1000)) is None


def test_a_model_priced_by_its_input_images_alone_has_a_cost():
    model = dataclasses.replace(PRO, image_price=None, input_price=0.0, input_image_price=10.0, output_price=0.0)
    assert model.cost(None, 1, Usage(input_tokens=1100, input_image_tokens=1000)) == 0.01


def test_a_budget_reserves_text_and_thinking_output():
    assert PRO.estimate("1K", 1, 0, 0) == round(0.134 + 1000 * 2.00 / 1e6 + 2000 * 12.00 / 1e6, 6)


def test_a_budget_reserves_input_images_at_their_own_price():
    edit = resolve_model("gpt-image-1", "auto").estimate(None, 1, 2, 10)  # $5 text, $10 image, $40 output
    assert edit == round(UNPRICED_IMAGE_USD + (10 + 1000) * 5.00 / 1e6 + 2 * 1290 * 10.00 / 1e6
                         + 2000 * 40.00 / 1e6, 6)


def test_the_responses_cost_includes_the_thinking(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer({"text": "Here it is."}, image_part(),
                                                              usage=THINKING_ANSWER))
    response = client.post("/v1/images/generations", headers=auth, json={"prompt": "a fox"})
    assert response.get_json()["usage"]["cost"] == 0.13822  # $0.134 + 10 input at $2/M + 350 output at $12/M
