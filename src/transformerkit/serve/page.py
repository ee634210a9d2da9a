"""``GET /``: a page to try the served model in a browser — plain HTML and a little JavaScript
(``page.html``, no build step) that calls this server's own endpoints: a sentence → its
translation with a heatmap of the chosen decoder layer's and head's cross-attention; a prompt → a
completion streamed as it arrives; a text → labels, an answer or an embedding, with the chosen
encoder layer's self-attention; an image → labels; a class → sampled images."""

from __future__ import annotations

import html
import json
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from transformerkit.checkpoint import read_model_config
from transformerkit.config import EncoderDecoderConfig, EncoderOnlyConfig


def attention_shape(directory: Path) -> tuple[int, int]:
    """(layers, heads) whose attention the page draws: a translator's decoder layers (their
    cross-attention), a text encoder's layers (their self-attention); (0, 0) for other models."""
    config = read_model_config(directory).config
    if isinstance(config, EncoderDecoderConfig):
        return config.num_decoder_layers, config.num_heads
    if isinstance(config, EncoderOnlyConfig):
        return config.num_encoder_layers, config.num_heads
    return 0, 0


def add_page(app: FastAPI, directory: Path, task: str, name: str) -> None:
    layers, heads = attention_shape(directory)
    model = json.dumps({"task": task, "name": name, "layers": layers, "heads": heads}).replace("</", "<\\/")
    page = (files("transformerkit.serve").joinpath("page.html").read_text(encoding="utf-8")
            .replace("__NAME__", html.escape(name)).replace("__TASK__", html.escape(task))
            .replace("__MODEL__", model))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page
