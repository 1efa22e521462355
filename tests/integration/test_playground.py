"""The playground page in a real headless browser (Playwright driving Debian's Chromium) against
the gateway under gunicorn and the emulator: a first visit (type a key and a prompt, press
Generate), two images, paint a mask and edit, images as URLs, a job (cancelled, then polled until
completed), a typed model id, the usage panel, a wrong key. A
screenshot of the page is saved next to the test's logs when a test fails."""
import base64
import io
import re
import shutil

import pytest
import requests
from PIL import Image
from playwright.sync_api import expect

from tests.integration.conftest import CLIENT_KEY, start_gateway, stop
from tests.support import png_bytes

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as root, in a closed network: no sandbox, and none of Chromium's own calls home
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed here (.ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def page(browser, gateway_url, request, screenshots):
    """A fresh page on the playground; a screenshot of it is saved when the test fails."""
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.goto(gateway_url + "/")
    yield page
    if getattr(request.node, "failed", False):  # set by the hook in tests/integration/conftest.py
        page.screenshot(path=str(screenshots / f"{request.node.name}.png"), full_page=True)
    context.close()


def use_key(page, key=CLIENT_KEY):
    page.get_by_label("Client key").fill(key)


def image_size(img):
    src = img.get_attribute("src")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size


def test_the_page_loads_without_a_key(gateway_url):
    response = requests.get(gateway_url + "/", timeout=10)
    assert response.status_code == 200 and "<title>Image gateway playground</title>" in response.text
    assert requests.get(gateway_url + "/playground/app.js", timeout=10).status_code == 200
    assert requests.get(gateway_url + "/favicon.ico", timeout=10).headers["Content-Type"].startswith("image/svg+xml")


def test_a_first_visit_types_a_key_and_a_prompt_and_sees_an_image(page):
    missing = []
    page.on("response", lambda response: missing.append(response.url) if response.status == 404 else None)
    page.get_by_label("Client key").fill(CLIENT_KEY)
    page.locator("#g-prompt").fill("a red bicycle [emulator: delay=1]")
    generate = page.get_by_role("button", name="Generate")
    generate.click()
    expect(generate).to_be_disabled()  # one click, one request
    assert page.locator("#message").inner_text() == ""  # progress is not an error
    page.wait_for_selector("figure[data-state=done]", timeout=30000)
    expect(generate).to_be_enabled()
    assert page.locator("#message").inner_text() == ""
    models = page.locator("#generate select[name=model] option")
    expect(models).to_have_count(4)  # auto and each of the 3 models once
    assert models.first.inner_text() == "auto (gemini-3-pro-image)"
    assert page.locator("#generate select[name=model]").input_value() == ""  # auto is selected
    assert "nano-banana" in models.nth(1).inner_text()  # an alias is folded into its model's label
    # GET /v1/usage, read again after the image: this key (shared by the session's tests) has no budget
    expect(page.locator("#usage")).to_have_text(re.compile(r"Spent \$\d+\.\d\d · no budget"))
    assert missing == []  # the favicon is there


def test_generate_two_images_shows_both_with_size_tokens_and_cost(page, screenshots):
    use_key(page)
    page.wait_for_selector("#key-status:has-text('models')")
    page.select_option("#generate select[name=model]", "gemini-2.5-flash-image")
    page.select_option("#generate select[name=size]", "1792x1024")
    page.fill("#generate input[name=n]", "2")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("figure[data-state=done] >> nth=1", timeout=30000)
    figures = page.locator("figure[data-state=done]")
    assert figures.count() == 2
    for index in range(2):
        figure = figures.nth(index)
        width, height = image_size(figure.locator("img"))
        assert (width, height) == (1344, 768)  # 16:9, 2.5 Flash Image's own size
        caption = figure.locator("figcaption").inner_text()
        assert "1344x768" in caption and "tokens" in caption and "$0.03" in caption
    assert page.locator("#message").inner_text() == ""
    page.screenshot(path=str(screenshots / "playground.png"))  # docs/playground.png, the README's picture


def test_paint_a_mask_and_edit(page, tmp_path):
    source = tmp_path / "red.png"
    source.write_bytes(png_bytes((200, 150), (255, 0, 0)))
    use_key(page)
    page.wait_for_selector("#key-status:has-text('models')")
    page.get_by_role("tab", name="Edit").click()
    page.set_input_files("#e-files", str(source))
    mask = page.locator("#mask")
    mask.wait_for()
    box = mask.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.9, steps=8)
    page.mouse.up()
    page.select_option("#edit select[name=model]", "gemini-2.5-flash-image")
    page.get_by_role("button", name="Edit", exact=True).last.click()
    page.wait_for_selector("figure[data-state=done]", timeout=30000)
    result = Image.open(io.BytesIO(base64.b64decode(
        page.locator("figure[data-state=done] img").get_attribute("src").split(",", 1)[1]))).convert("RGB")
    assert result.size == (200, 150)  # a masked edit comes back at the source's size
    assert result.getpixel((5, 140)) == (255, 0, 0)  # outside the painted area: the source, pixel for pixel
    source_box, result_box = page.locator("#source").bounding_box(), page.locator("figure img").bounding_box()
    assert result_box["x"] >= source_box["x"] + source_box["width"]  # the result is beside its source
    assert result_box["y"] < source_box["y"] + source_box["height"]


def test_return_url_shows_the_image_from_its_url(page):
    sent = []
    page.on("request", lambda request: sent.append(request.post_data_json) if request.method == "POST" else None)
    use_key(page)
    page.wait_for_selector("#key-status:has-text('models')")
    page.get_by_label("Return").first.select_option(label="URL")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("figure[data-state=done]", timeout=30000)
    img = page.locator("figure[data-state=done] img")
    assert re.search(r"/v1/images/files/[\w-]+\.png\?expires=\d+&sig=", img.get_attribute("src"))
    expect(img).to_have_js_property("complete", True)
    assert img.evaluate("img => img.naturalWidth") > 0  # fetched and decoded, with no key
    assert page.locator("figure a").get_attribute("href") == img.get_attribute("src")
    assert sent[-1]["response_format"] == "url" and "stream" not in sent[-1]  # stream with url is a 400
    assert page.locator("#message").inner_text() == ""


def test_run_as_a_job_can_be_cancelled_or_polled_until_completed(page):
    use_key(page)
    page.wait_for_selector("#key-status:has-text('models')")
    page.get_by_label("Run as a job").first.check()
    generate, status = page.get_by_role("button", name="Generate"), page.locator("#job-status")
    page.locator("#g-prompt").fill("a slow lighthouse [emulator: delay=20]")
    generate.click()
    expect(status).to_have_text(re.compile("queued|in_progress"))
    assert page.locator("#job-id").inner_text().startswith("imgjob_")
    expect(generate).to_be_disabled()  # while the job runs
    page.get_by_role("button", name="Cancel").click()  # DELETE /v1/images/jobs/{id}
    expect(status).to_have_text("cancelled")
    expect(generate).to_be_enabled()
    assert page.locator("figure").count() == 0
    page.locator("#g-prompt").fill("a lighthouse [emulator: delay=2]")
    generate.click()
    expect(status).to_have_text("in_progress")  # polled every second
    expect(status).to_have_text("completed", timeout=30000)
    expect(page.locator("figure[data-state=done] img")).to_have_attribute("src", re.compile("^data:image/png;base64,"))
    expect(generate).to_be_enabled()
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    assert page.locator("#message").inner_text() == ""


def test_a_typed_model_id_wins_over_the_list(page):
    use_key(page)
    page.wait_for_selector("#key-status:has-text('models')")
    page.get_by_label("or any model id").first.fill("openrouter/black-forest-labs/flux.2-pro")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_selector("#message:has-text('OPENROUTER_API_KEY')")  # reached the gateway as typed


def test_the_usage_panel_shows_what_the_key_has_spent(page):
    usage = {"name": "dev", "budget_usd": 10.0, "budget_period": "month", "spent_usd": 1.25, "remaining_usd": 8.75,
             "rpm": None, "ipm": None, "max_concurrent": None, "models": None, "expires_at": None}
    page.route("**/v1/usage", lambda route: route.fulfill(json=usage))  # a key with a budget
    use_key(page)
    expect(page.locator("#usage")).to_have_text("Spent $1.25 of $10.00 per month · $8.75 left")
    usage.update(budget_usd=None, budget_period=None, remaining_usd=None)
    page.get_by_role("button", name="Generate").click()  # the panel is read again after each request
    expect(page.locator("#usage")).to_have_text("Spent $1.25 · no budget")


def test_a_wrong_key_shows_the_gateways_message(page):
    use_key(page, "not-a-key")
    page.wait_for_selector("#message:has-text('Unauthorized')")
    assert "the API key is not valid" in page.locator("#message").inner_text()


def test_the_playground_can_be_turned_off(emulator_url, tmp_path):
    process, url = start_gateway(emulator_url, tmp_path / "off.log", GATEWAY_PLAYGROUND="off")
    try:
        response = requests.get(url + "/", timeout=10)
        assert response.status_code == 404 and response.json()["status"] == 404
    finally:
        stop(process)
