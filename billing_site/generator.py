"""The product being sold: turn a prompt and a model into an image.

The built-in generator draws a deterministic SVG from a hash of the prompt and
the model, so the site works offline and tests can compare exact bytes. Set
GENERATOR_URL to plug in a real backend over HTTP (GENERATOR_TIMEOUT_SECONDS
bounds each call). Either way, a failure is a GeneratorError and nothing else.
"""

import base64
import hashlib
import logging
from dataclasses import dataclass
from typing import Protocol
from xml.sax.saxutils import escape

import requests

log = logging.getLogger(__name__)

# Pixel size per model: a better model draws a bigger, busier picture.
MODEL_SIZES = {"standard": 256, "hd": 512, "pro": 768}
SHAPES_PER_MODEL = {"standard": 6, "hd": 10, "pro": 16}
CAPTION_LENGTH = 40


class GeneratorError(Exception):
    """The generator could not make an image; `message` is safe to show a person."""

    def __init__(self, message: str = "The image generator is not available right now."):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class GeneratedImage:
    svg: str

    @property
    def data_url(self) -> str:
        """The image as a data: URL, shown through <img> so no script in it can ever run."""
        return svg_data_url(self.svg)


def svg_data_url(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


class Generator(Protocol):
    def generate(self, prompt: str, model: str) -> GeneratedImage: ...


class SvgGenerator:
    """Draws the same SVG, byte for byte, for the same prompt and model."""

    def generate(self, prompt: str, model: str) -> GeneratedImage:
        digest = hashlib.sha256(f"{model}\n{prompt}".encode()).digest()
        size = MODEL_SIZES.get(model, MODEL_SIZES["standard"])
        shapes = SHAPES_PER_MODEL.get(model, SHAPES_PER_MODEL["standard"])
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
            f'viewBox="0 0 {size} {size}" role="img">',
            f"<title>{escape(prompt)}</title>",
            f'<rect width="{size}" height="{size}" fill="{_colour(digest, 0)}"/>',
        ]
        for index in range(shapes):
            parts.append(_circle(digest, index, size))
        parts.append(_caption(prompt, size))
        parts.append("</svg>")
        return GeneratedImage("".join(parts))


def _byte(digest: bytes, index: int) -> int:
    return digest[index % len(digest)]


def _colour(digest: bytes, index: int) -> str:
    return "#" + "".join(f"{_byte(digest, index + offset):02x}" for offset in range(3))


def _circle(digest: bytes, index: int, size: int) -> str:
    base = 3 + index * 3
    cx = _byte(digest, base) * size // 255
    cy = _byte(digest, base + 1) * size // 255
    radius = max(4, _byte(digest, base + 2) * size // 1020)
    return (
        f'<circle cx="{cx}" cy="{cy}" r="{radius}" '
        f'fill="{_colour(digest, base + 5)}" fill-opacity="0.7"/>'
    )


def _caption(prompt: str, size: int) -> str:
    text = prompt if len(prompt) <= CAPTION_LENGTH else prompt[: CAPTION_LENGTH - 1] + "…"
    return (
        f'<text x="8" y="{size - 10}" font-family="sans-serif" font-size="14" '
        f'fill="#ffffff" stroke="#000000" stroke-width="0.4">{escape(text)}</text>'
    )


class HttpGenerator:
    """A real backend: POST {"prompt", "model"} as JSON, answer {"svg": "<svg…>"}."""

    def __init__(self, url: str, timeout_seconds: float):
        self.url = url
        self.timeout_seconds = timeout_seconds

    def generate(self, prompt: str, model: str) -> GeneratedImage:
        try:
            response = requests.post(
                self.url, json={"prompt": prompt, "model": model}, timeout=self.timeout_seconds
            )
            response.raise_for_status()
            svg = response.json()["svg"]
        except requests.Timeout as error:
            log.warning("generator timed out url=%s", self.url)
            raise GeneratorError("The image generator took too long to answer.") from error
        except (requests.RequestException, ValueError, KeyError, TypeError) as error:
            log.warning("generator failed url=%s error=%s", self.url, error)
            raise GeneratorError() from error
        if not isinstance(svg, str) or not svg.lstrip().startswith("<svg"):
            raise GeneratorError("The image generator sent something that is not an image.")
        return GeneratedImage(svg)


def build_generator(config: dict) -> Generator:
    """The HTTP backend when GENERATOR_URL is set, else the built-in SVG generator."""
    if config.get("GENERATOR_URL"):
        return HttpGenerator(config["GENERATOR_URL"], config["GENERATOR_TIMEOUT_SECONDS"])
    return SvgGenerator()


def current_generator() -> Generator:
    """The running app's generator, built on first use (tests may replace it)."""
    from flask import current_app

    extensions = current_app.extensions
    if "generator" not in extensions:
        extensions["generator"] = build_generator(current_app.config)
    return extensions["generator"]
