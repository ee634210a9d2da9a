"""Decoding settings stored with a model (``generation_config.json``), as in Hugging Face.

Translation reads the beam-search fields; language models read the sampling fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class GenerationConfig:
    task: Literal["translation", "summarization"] = "translation"
    """What a sequence-to-sequence model was trained for: picks its scores (BLEU/chrF or ROUGE)."""
    # beam search (translation, summarization)
    beam: int = 4
    length_penalty: float = 0.6
    """α in ((5 + |Y|) / 6)^α."""
    max_length_offset: int = 50
    """Maximum output length = source length + this …"""
    max_length: int | None = None
    """… and at most this many tokens, EOS included (summaries: a few dozen); None: no cap."""
    max_source_tokens: int | None = None
    """Sources are cut to their first this many tokens before EOS is appended, as in training
    (``data.max_source_tokens``); None: whole sources."""
    source_lang: str = ""
    target_lang: str = ""
    """Languages of the training data (the target's picks sacreBLEU's tokenizer: ``zh`` for Chinese)."""
    # sampling (language models)
    max_new_tokens: int = 100
    do_sample: bool = False
    """False: greedy (the most probable token); True: sample from the processed distribution."""
    temperature: float = 1.0
    top_k: int = 0
    """Keep only the k most probable tokens (0: all)."""
    top_p: float = 1.0
    """Keep the smallest set of most probable tokens whose probability reaches p (1.0: all)."""
    repetition_penalty: float = 1.0
    """CTRL's penalty on tokens already in the prompt or output (1.0: none)."""
    stop: list[str] = field(default_factory=list)
    """Generation of a text ends at the first of these strings (which is cut off)."""
    seed: int | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that is out of range."""
        for name in ("length_penalty", "temperature", "top_p", "repetition_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be at least 1 or null, got {self.max_length}")
        if self.max_source_tokens is not None and self.max_source_tokens < 1:
            raise ValueError(f"max_source_tokens must be at least 1 or null, got {self.max_source_tokens}")
        if self.beam < 1:
            raise ValueError(f"beam must be at least 1, got {self.beam}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be 0 (off) or positive, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be positive, got {self.repetition_penalty}")
        if self.seed is not None and not 0 <= self.seed < 2 ** 63:  # torch.Generator's seed range
            raise ValueError(f"seed must be in [0, 2^63), got {self.seed}")
