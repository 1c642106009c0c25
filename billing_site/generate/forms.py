"""Checking a generation request, the same way for the HTML form and the JSON API."""

from collections.abc import Mapping
from dataclasses import dataclass

from billing_site.catalog import Catalog

PROMPT_MAX_LENGTH = 500


@dataclass(frozen=True)
class GenerationInput:
    prompt: str
    model: str


def validate_generation(data: Mapping, catalog: Catalog) -> tuple[GenerationInput, dict[str, str]]:
    """The cleaned input and a message per invalid field (empty when all is well)."""
    prompt = data.get("prompt")
    model = data.get("model")
    prompt = prompt.strip() if isinstance(prompt, str) else ""
    model = model.strip() if isinstance(model, str) else ""
    errors = {}
    if not prompt:
        errors["prompt"] = "Describe the image you want."
    elif len(prompt) > PROMPT_MAX_LENGTH:
        errors["prompt"] = (
            f"Keep the prompt to {PROMPT_MAX_LENGTH} characters (it has {len(prompt)})."
        )
    if catalog.model(model) is None:
        names = ", ".join(m.id for m in catalog.models)
        errors["model"] = f"Choose one of the models: {names}."
    return GenerationInput(prompt, model), errors
