"""Scoring summaries: abstractive summarization is the translation machinery (encoder-decoder,
trainer, beam search, ``Translator``) on (document, summary) pairs, scored with ROUGE instead of BLEU.

ROUGE-1/2/L F-measures (Lin, 2004) come from Google's ``rouge-score`` package with Porter
stemming, as Hugging Face's summarization examples report them, averaged over documents and
given in percent. The lead baseline summarizes a document by its first sentence, cut to a few words.
"""

from __future__ import annotations

import re
from typing import Any

from transformerkit.commands import UsageError
from transformerkit.data.parallel import load_parallel

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def rouge_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures (percent, stemmed) of ``hypotheses`` against ``references``."""
    from rouge_score import rouge_scorer  # imported here: it pulls in NLTK and SciPy (seconds)

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} summaries for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references):
        for name, value in scorer.score(reference, hypothesis).items():
            totals[name] += value.fmeasure
    return {name: round(100 * total / max(len(references), 1), 2) for name, total in totals.items()}


def lead_summary(document: str, max_words: int = 10) -> str:
    """The document's first sentence, cut to ``max_words`` words (the lead baseline)."""
    first = _SENTENCE_END.split(document.strip(), maxsplit=1)[0]
    return " ".join(first.split()[:max_words])


def evaluate(args: Any) -> dict[str, Any]:
    """``transformerkit evaluate --lead-baseline WORDS``: ROUGE of the lead baseline on ``--data``."""
    if args.lead_baseline < 1:
        raise UsageError(f"--lead-baseline must be at least 1 word, got {args.lead_baseline}")
    corpus = load_parallel(args.data, args.data_target, args.source_field, args.target_field)
    summaries = [lead_summary(document, args.lead_baseline) for document in corpus.sources]
    return {**rouge_scores(summaries, corpus.targets), "documents": len(summaries)}
