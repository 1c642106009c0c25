"""The generator: a deterministic built-in SVG, and an HTTP backend that fails cleanly."""

import json
import xml.etree.ElementTree as ElementTree

import pytest
import requests
import responses

from billing_site.generator import (
    GeneratorError,
    HttpGenerator,
    SvgGenerator,
    build_generator,
)

BACKEND = "http://generator.internal/v1/images"


def test_same_prompt_and_model_give_identical_bytes():
    first = SvgGenerator().generate("a lighthouse at dusk", "standard")
    second = SvgGenerator().generate("a lighthouse at dusk", "standard")
    assert first.svg == second.svg
    assert first.svg.startswith("<svg")


def test_prompt_and_model_each_change_the_image():
    base = SvgGenerator().generate("a lighthouse at dusk", "standard").svg
    assert SvgGenerator().generate("a lighthouse at dawn", "standard").svg != base
    assert SvgGenerator().generate("a lighthouse at dusk", "hd").svg != base


def test_prompt_text_is_escaped_and_the_svg_stays_well_formed():
    prompt = '</title><script>alert("x")</script> & <b>'
    svg = SvgGenerator().generate(prompt, "standard").svg
    assert "<script" not in svg
    assert "&lt;script&gt;" in svg
    root = ElementTree.fromstring(svg)  # raises if the prompt broke the markup
    title = root.find("{http://www.w3.org/2000/svg}title")
    assert title.text == prompt


def test_image_is_offered_as_a_data_url():
    image = SvgGenerator().generate("a cat", "standard")
    assert image.data_url.startswith("data:image/svg+xml;base64,")


@responses.activate
def test_http_backend_posts_the_prompt_and_model_as_json():
    responses.post(BACKEND, json={"svg": "<svg xmlns='http://www.w3.org/2000/svg'/>"})
    image = HttpGenerator(BACKEND, timeout_seconds=5).generate("a cat", "hd")
    assert image.svg == "<svg xmlns='http://www.w3.org/2000/svg'/>"
    assert json.loads(responses.calls[0].request.body) == {"prompt": "a cat", "model": "hd"}


@pytest.mark.parametrize(
    "reply",
    [
        {"status": 500, "json": {"error": "boom"}},
        {"status": 200, "body": "not json"},
        {"status": 200, "json": {"image": "missing the svg key"}},
        {"status": 200, "json": {"svg": "<script>alert(1)</script>"}},
        {"body": requests.ConnectionError("refused")},
        {"body": requests.Timeout("read timed out")},
    ],
    ids=["server-error", "not-json", "no-svg", "not-an-svg", "unreachable", "timeout"],
)
@responses.activate
def test_http_backend_failures_raise_generator_error(reply):
    responses.post(BACKEND, **reply)
    with pytest.raises(GeneratorError) as raised:
        HttpGenerator(BACKEND, timeout_seconds=5).generate("a cat", "standard")
    assert raised.value.message  # something a person can read


def test_generator_url_selects_the_http_backend_with_its_timeout():
    generator = build_generator({"GENERATOR_URL": BACKEND, "GENERATOR_TIMEOUT_SECONDS": 7})
    assert isinstance(generator, HttpGenerator)
    assert generator.timeout_seconds == 7
    assert isinstance(build_generator({"GENERATOR_URL": ""}), SvgGenerator)
