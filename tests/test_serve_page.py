"""The page at ``GET /`` in a real browser (headless Chromium driven by selenium): typing a
sentence shows its translation and a heatmap, a prompt streams its completion, a text gets its
labels — each what the API answers for the same input.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``,
as ``.ci/run`` does); where they cannot be installed the tests skip, saying so."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from test_serve import TEXTS, encoder, running, save

from transformerkit.config import preset
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.generation.config import GenerationConfig
from transformerkit.models.decoder_only import DecoderOnlyTransformer
from transformerkit.models.encoder_decoder import EncoderDecoderTransformer
from transformerkit.training.task import model_config_for

webdriver = pytest.importorskip("selenium.webdriver", reason="the page test needs selenium (pip install selenium)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("the page test needs a browser: apt-get install chromium chromium-driver", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SCREENSHOT = os.environ.get("TRANSFORMERKIT_PAGE_SCREENSHOT")
"""Where to keep a screenshot of the translation page (docs/serve-page.png was taken so)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def submit(browser: webdriver.Chrome, url: str, **fields: str) -> str:
    """Open the page, type each field (by element id), press Run, wait for the result: its text."""
    browser.get(url)
    for name, value in fields.items():
        element = browser.find_element(By.ID, name)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "result").get_attribute("data-done")
                                     or b.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "error").text == ""
    return browser.find_element(By.ID, "result").text


def test_the_page_translates_and_draws_the_cross_attention_the_api_gives(browser: webdriver.Chrome,
                                                                          tmp_path: Path) -> None:
    tokenizer = SubwordTokenizer.train(TEXTS, vocab_size=60)
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(model_config_for(preset("tiny", d_model=32, d_ff=64), tokenizer)).eval()
    model_dir = save(tmp_path / "translator", model, tokenizer, GenerationConfig(beam=2, max_length_offset=6))
    text = "open the file and close the window"
    with running(model_dir) as url:
        shown = submit(browser, url, text=text)
        api = httpx.post(f"{url}/v1/translate", json={"texts": [text], "attention": True}).json()
        if SCREENSHOT:
            browser.save_screenshot(SCREENSHOT)
    assert shown == api["translations"][0]
    rows = browser.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr")
    columns = browser.find_elements(By.CSS_SELECTOR, "#heatmap thead th")
    attention = api["attention"][0]
    assert [r.find_element(By.TAG_NAME, "th").text for r in rows] == attention["target_tokens"]
    assert [c.text for c in columns[1:]] == attention["source_tokens"]
    first = [float(td.get_attribute("title")) for td in rows[0].find_elements(By.TAG_NAME, "td")]
    assert first == pytest.approx(attention["weights"][0], abs=1e-3)  # shown with 3 decimals


def test_the_page_streams_a_completion_equal_to_the_apis(browser: webdriver.Chrome, tmp_path: Path) -> None:
    tokenizer = SubwordTokenizer.train_characters(TEXTS)
    torch.manual_seed(0)
    model = DecoderOnlyTransformer(model_config_for(preset("gpt-tiny"), tokenizer)).eval()
    model_dir = save(tmp_path / "lm", model, tokenizer)
    prompt = "open the "
    with running(model_dir) as url:
        shown = submit(browser, url, text=prompt, **{"max-tokens": "12"})
        api = httpx.post(f"{url}/v1/completions", json={"prompt": prompt, "max_tokens": 12, "temperature": 0}).json()
    assert shown == prompt + api["choices"][0]["text"]


def test_the_page_labels_a_text_as_the_api_does(browser: webdriver.Chrome, tmp_path: Path) -> None:
    wordpiece = SubwordTokenizer.train(TEXTS, vocab_size=60)
    model_dir = save(tmp_path / "classifier", encoder(wordpiece, labels=["negative", "positive"]), wordpiece)
    text = "delete this folder now"
    with running(model_dir) as url:
        shown = submit(browser, url, text=text)
        api = httpx.post(f"{url}/v1/classify", json={"texts": [text]}).json()["results"][0]
    first_label, probability = shown.splitlines()[0].split()
    assert first_label == api["label"] and float(probability) == pytest.approx(api["probability"], abs=1e-4)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr")) >= 3  # [CLS] … [SEP]
