"""``GET /``: a page to try the served model in a browser — plain HTML and a little JavaScript
(``page.html``, no build step) that calls this server's own endpoints: a sentence → its
translation with a heatmap of the chosen decoder layer's and head's cross-attention; a prompt → a
completion streamed as it arrives; a text → labels, an answer or an embedding, with the chosen
encoder layer's self-attention; an image → labels; a class → sampled images."""

from __future__ import annotations

import html
import json
from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from transformerkit.serve.common import Server


def add_page(app: FastAPI, task: str, server: Server) -> None:
    """The page for ``task``'s model; added after the task's endpoints, whose attention (if any)
    it draws (:attr:`Server.attention_shape`)."""
    layers, heads = server.attention_shape
    model = json.dumps({"task": task, "name": server.name, "layers": layers, "heads": heads}).replace("</", "<\\/")
    page = (files("transformerkit.serve").joinpath("page.html").read_text(encoding="utf-8")
            .replace("__NAME__", html.escape(server.name)).replace("__TASK__", html.escape(task))
            .replace("__MODEL__", model))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page
