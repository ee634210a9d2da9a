"""Tokenizers, all Hugging Face ``tokenizers`` models saved as a standard ``tokenizer.json``.

* :meth:`SubwordTokenizer.train`: joint source/target BPE for translation (§5.1: "a shared
  source-target vocabulary"). Text is NFKC-normalized; spaces become the marker ``▁``
  (SentencePiece's Metaspace scheme) so decoding restores them exactly, and punctuation is split
  off. Languages written without spaces (Chinese) need nothing special: a run of characters is
  one pre-token and BPE learns its pieces.
* :meth:`SubwordTokenizer.train_characters`: one token per character (character-level LMs).
* :meth:`SubwordTokenizer.train_byte_level`: GPT-2's byte-level BPE learned on your text.
* :meth:`SubwordTokenizer.from_gpt2_files`: GPT-2's own vocabulary from ``vocab.json`` +
  ``merges.txt`` (or ``encoder.json`` + ``vocab.bpe``, optionally gzipped).

* :meth:`SubwordTokenizer.from_wordpiece_vocab`: BERT's WordPiece from ``vocab.txt``.

Special tokens are ``<pad> <s> </s> <unk>`` (ids 0–3), GPT-2's single ``<|endoftext|>`` (padding,
beginning and end of text), or BERT's ``[PAD] [CLS] [SEP] [UNK]`` (padding, beginning, end, unknown).
A loaded ``tokenizer.json`` keeps its normalizer and post-processor but not its padding or
truncation settings: batching and length limits are the models' business.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch import Tensor

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3
END_OF_TEXT = "<|endoftext|>"
NEWLINE_BEFORE_TEXT = re.compile(r"\n(?=\S)")
"""Where :meth:`SubwordTokenizer.encode_long` may cut a text: after a newline a non-space character follows."""
BERT_SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]  # pad, bos, eos, unk roles


def _read_text(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return handle.read()


def check_unicode(texts: list[str]) -> None:
    """Raise ``ValueError`` naming the first text that cannot be written as UTF-8 (a lone surrogate)."""
    for number, text in enumerate(texts, 1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(f"text {number} is not valid Unicode: a lone surrogate U+{ord(text[error.start]):04X} "
                             f"at character {error.start} (invalid UTF-8 in the input?)") from None


class SubwordTokenizer:
    """A ``tokenizers.Tokenizer`` with the special ids the models use (``unk_id`` may be None)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        tokenizer.no_padding()
        tokenizer.no_truncation()
        end_of_text = tokenizer.token_to_id(END_OF_TEXT)
        for names in (SPECIAL_TOKENS, BERT_SPECIAL_TOKENS):
            ids = [tokenizer.token_to_id(token) for token in names]
            if all(i is not None for i in ids):
                self.pad_id, self.bos_id, self.eos_id, self.unk_id = ids
                break
        else:
            if end_of_text is None:
                raise ValueError(f"tokenizer lacks the special tokens {SPECIAL_TOKENS}, "
                                 f"{BERT_SPECIAL_TOKENS} or {END_OF_TEXT}")
            self.pad_id = self.bos_id = self.eos_id = end_of_text
            self.unk_id = None

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> SubwordTokenizer:
        """Learn a BPE vocabulary of ``vocab_size`` tokens (special tokens included) from ``texts``."""
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=SPECIAL_TOKENS, show_progress=False)
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @classmethod
    def train_characters(cls, texts: Iterable[str]) -> SubwordTokenizer:
        """One token per character seen in ``texts`` (after ``<|endoftext|>`` = 0); unseen characters are dropped."""
        alphabet = sorted(set().union(*(set(text) for text in texts)))
        vocab = {END_OF_TEXT: 0, **{ch: i + 1 for i, ch in enumerate(alphabet)}}
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tokenizer.add_special_tokens([END_OF_TEXT])
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tokenizer.decoder = decoders.Fuse()
        return cls(tokenizer)

    @classmethod
    def train_byte_level(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
                         special_tokens: Sequence[str] = (END_OF_TEXT,), prefix_space: bool = False
                         ) -> SubwordTokenizer:
        """GPT-2-style byte-level BPE (every byte is a base token, so nothing is ever unknown).

        ``special_tokens`` come first (ids 0, 1, …): GPT-2's ``<|endoftext|>``, or ``SPECIAL_TOKENS``
        for translation. With ``prefix_space`` each text is read as if it followed a space, so a
        sentence's first word is the same token as inside a sentence (the space is removed again
        when decoding), as in Hugging Face's byte-level translation tokenizers.
        """
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
        tokenizer.decoder = (decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)]) if prefix_space
                             else decoders.ByteLevel())
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(special_tokens), show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @classmethod
    def from_gpt2_files(cls, vocab: str | Path, merges: str | Path) -> SubwordTokenizer:
        """GPT-2's byte-level BPE from ``vocab.json``/``encoder.json`` and ``merges.txt``/``vocab.bpe``."""
        vocab_map = json.loads(_read_text(Path(vocab)))
        merge_list = []
        for line in _read_text(Path(merges)).splitlines():
            if line and not line.startswith("#version"):
                left, right = line.split(" ")
                merge_list.append((left, right))
        tokenizer = Tokenizer(models.BPE(vocab=vocab_map, merges=merge_list))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens([END_OF_TEXT])
        return cls(tokenizer)

    @classmethod
    def from_wordpiece_vocab(cls, vocab: str | Path, lowercase: bool = True) -> SubwordTokenizer:
        """BERT's WordPiece tokenizer from ``vocab.txt``: [CLS] text [SEP] (pairs: … [SEP] text [SEP])."""
        tokenizer = Tokenizer(models.WordPiece.from_file(str(vocab), unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        return cls(tokenizer)

    @classmethod
    def from_directory(cls, directory: str | Path) -> SubwordTokenizer:
        """The tokenizer in a model directory: ``tokenizer.json``, else BERT's ``vocab.txt``, else
        GPT-2's two vocabulary files."""
        directory = Path(directory)
        if (directory / "tokenizer.json").is_file():
            return cls.load(directory / "tokenizer.json")
        if (directory / "vocab.txt").is_file():
            return cls.from_wordpiece_vocab(directory / "vocab.txt")
        for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe"),
                              ("encoder.json.gz", "vocab.bpe.gz")):
            if (directory / vocab).is_file() and (directory / merges).is_file():
                return cls.from_gpt2_files(directory / vocab, directory / merges)
        raise ValueError(f"{directory}: no tokenizer.json, vocab.json + merges.txt, or encoder.json + vocab.bpe")

    @classmethod
    def load(cls, path: str | Path) -> SubwordTokenizer:
        """A ``tokenizer.json``; a file that is not one (empty, truncated, binary) raises ``ValueError`` naming it."""
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # the Rust library raises a bare Exception
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(f"{path}: not a valid tokenizer file ({reason})") from None
        try:
            return cls(tokenizer)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
        """Token ids of each text; ``add_special_tokens`` applies the tokenizer's template (BERT's [CLS] … [SEP]).
        A text that is not valid Unicode (a lone surrogate: invalid UTF-8 read with Python's
        ``surrogateescape``, or ``\\ud800`` in JSON) raises ``ValueError`` saying which and where."""
        try:
            return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)]
        except TypeError:
            check_unicode(texts)
            raise

    def encode_long(self, text: str, piece_chars: int = 1 << 16) -> Tensor:
        """Token ids of one long text (a corpus read whole) → (tokens,) int64, with memory bounded by
        ``piece_chars`` instead of the text's length: ``tokenizers`` keeps an ``Encoding`` of a dozen
        fields per token (strings, offsets, masks), 0.4 KB a token, 2 GB for Shakespeare's 5 M
        characters. The text is encoded in pieces cut after a newline that a non-space character
        follows, where tokenizers that split at whitespace (characters, byte-level BPE, WordPiece)
        end every token anyway; the ids are the whole text's. A tokenizer that treats the start of
        a text specially (SentencePiece's ▁ before the first word) fails the probe ``"ab\ncd"`` =
        ``"ab\n"`` + ``"cd"`` and has its text encoded whole."""
        probe = self.encode(["ab\ncd", "ab\n", "cd"])
        if len(text) <= piece_chars or probe[0] != probe[1] + probe[2]:
            return torch.tensor(self.encode([text])[0], dtype=torch.long)
        pieces, start = [], 0
        while start < len(text):
            boundary = NEWLINE_BEFORE_TEXT.search(text, start + piece_chars)
            cut = len(text) if boundary is None else boundary.end()
            pieces.append(torch.tensor(self.encode([text[start:cut]])[0], dtype=torch.long))
            start = cut
        return torch.cat(pieces)

    def encode_for_encoder(self, texts: list[str], max_length: int) -> list[list[int]]:
        """``[CLS] text [SEP]`` ids of each text, cut to ``max_length`` with the closing [SEP] kept
        (as Hugging Face's ``truncation=True`` and sentence-transformers cut). With a tokenizer that
        adds no [CLS]/[SEP], an empty text is read as BOS alone: every text has a first token to pool."""
        return [row[:max_length - 1] + row[-1:] if len(row) > max_length else row or [self.bos_id]
                for row in self.encode(texts, add_special_tokens=True)]

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Text of each id sequence; special tokens are dropped."""
        return self.tokenizer.decode_batch(ids, skip_special_tokens=True)

    def tokens(self, ids: list[int]) -> list[str]:
        """The token strings of ``ids`` (for attention plots)."""
        return [self.tokenizer.id_to_token(i) for i in ids]
