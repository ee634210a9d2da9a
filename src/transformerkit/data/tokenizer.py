"""Joint source/target BPE (§5.1: "a shared source-target vocabulary") with Hugging Face ``tokenizers``.

Text is NFKC-normalized; spaces become the marker ``▁`` (SentencePiece's Metaspace scheme) so
that decoding restores them exactly, and punctuation is split off. Languages written without
spaces (Chinese) need nothing special: a run of characters is one pre-token and BPE learns its
pieces. The result is saved as a standard ``tokenizer.json``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3


class SubwordTokenizer:
    """A ``tokenizers.Tokenizer`` with the special ids the models use."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        ids = [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]
        if any(i is None for i in ids):
            raise ValueError(f"tokenizer lacks the special tokens {SPECIAL_TOKENS}")
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = ids

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> SubwordTokenizer:
        """Learn a BPE vocabulary of ``vocab_size`` tokens (special tokens included) from ``texts``."""
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=SPECIAL_TOKENS, show_progress=False)
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> SubwordTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens)."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Text of each id sequence; special tokens are dropped."""
        return self.tokenizer.decode_batch(ids, skip_special_tokens=True)

    def tokens(self, ids: list[int]) -> list[str]:
        """The token strings of ``ids`` (for attention plots)."""
        return [self.tokenizer.id_to_token(i) for i in ids]
