"""A cloze-style reading-comprehension set from novels, built as the Children's Book Test was
(Hill et al., 2016), in SQuAD's format so extractive QA models train and score on it unchanged.

Each question: a passage of ``passage_sentences`` consecutive sentences; the sentence after it,
with one content word or name that also occurs in the passage replaced by ``XXXXX``, is the
question; every occurrence of that word in the passage is a correct answer span::

    passage   "… Emma was sorry; but … Mr. Knightley came in … "
    question  "XXXXX had not expected to find him there."
    answers   [("Emma", 2), …]

The text is Jane Austen's six novels (public domain) from the Debian package
``r-cran-janeaustenr``: its R lazy-load database (``data/Rdata.rdx`` index, ``Rdata.rdb`` blobs)
is read with the PyPI package ``rdata``. Splits are by book, so no passage or name list is shared
between training and test.
"""

from __future__ import annotations

import gzip
import hashlib
import random
import re
import tempfile
import warnings
import zlib
from pathlib import Path

from transformerkit.data.extras import optional_module
from transformerkit.data.fetch import apt_download, deb_files
from transformerkit.data.parallel import DataError
from transformerkit.data.squad import Answer, QAExample, save_squad

BLANK = "XXXXX"
AUSTEN_PACKAGE = "r-cran-janeaustenr"
AUSTEN_SPLITS = {"northangerabbey": "valid", "persuasion": "test"}  # the other four novels train
_DATA = "usr/lib/R/site-library/janeaustenr/data/Rdata."
_ABBREVIATIONS = {"Mr", "Mrs", "Dr", "St", "Col", "Capt", "Esq", "Rev", "Ms", "Messrs", "Lt", "Gen"}
_SENTENCE_END = re.compile(r"[.!?]+[\"'’”)_]*\s+")
_WORD = re.compile(r"[A-Za-z]+")


def read_r_lazyload(index: bytes, database: bytes) -> dict[str, object]:
    """The objects of an R lazy-load database: the ``.rdx`` index (gzip'd serialized list of
    offsets) and the ``.rdb`` blobs (each a 4-byte length + zlib-compressed serialization)."""
    rdata = optional_module("rdata", "austen", "reading the Austen novels (R data)")

    def unserialize(data: bytes) -> object:
        with warnings.catch_warnings():  # rdata warns that a bare serialization is "assumed RDS"
            warnings.simplefilter("ignore", UserWarning)
            return rdata.conversion.convert(rdata.parser.parse_data(data))

    try:
        variables = unserialize(gzip.decompress(index))["variables"]  # type: ignore[index]
        objects = {}
        for name, (offset, length) in variables.items():
            blob = database[int(offset):int(offset) + int(length)]
            objects[str(name)] = unserialize(zlib.decompress(blob[4:]))
    except (OSError, zlib.error, KeyError, TypeError, ValueError) as error:
        raise DataError(f"not an R lazy-load database ({error})") from None
    return objects


def fetch_austen(cache: Path) -> dict[str, list[str]]:
    """Jane Austen's novels {name: lines} from the Debian package (downloaded into ``cache``)."""
    debs, _ = apt_download([AUSTEN_PACKAGE], cache)
    files = dict(deb_files(debs[0], lambda name: name.startswith(_DATA)))
    if {f"{_DATA}rdx", f"{_DATA}rdb"} - set(files):
        raise DataError(f"{debs[0]} lacks {_DATA}rdx / .rdb")
    books = read_r_lazyload(files[f"{_DATA}rdx"], files[f"{_DATA}rdb"])
    return {name: [str(line) for line in lines] for name, lines in books.items()}  # type: ignore[attr-defined]


def paragraphs(lines: list[str]) -> list[str]:
    """Blank-line separated paragraphs, each on one line; headings (no lower-case letter) dropped."""
    found, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            text = " ".join(current)
            if re.search(r"[a-z]", text):
                found.append(text)
            current = []
    return found


def sentences(paragraph: str) -> list[str]:
    """Split at . ! ? (with closing quotes) followed by space and a capital or quote, except after
    titles such as "Mr."."""
    found, start = [], 0
    for match in _SENTENCE_END.finditer(paragraph):
        before = paragraph[start:match.start()].split()
        after = paragraph[match.end():match.end() + 2]
        if (before and before[-1].strip("\"'“‘(") in _ABBREVIATIONS and match.group().startswith(".")) or \
                not re.match(r"[\"'“‘(_]?[A-Z]", after):
            continue
        found.append(paragraph[start:match.end()].strip())
        start = match.end()
    if paragraph[start:].strip():
        found.append(paragraph[start:].strip())
    return found


def cloze_questions(book: str, sentence_list: list[str], passage_sentences: int = 10, step: int = 3,
                    seed: int = 0) -> list[QAExample]:
    """Questions from windows of ``passage_sentences`` sentences every ``step`` sentences. The blanked
    word is drawn (seeded by the book and position) from the query's words of three or more letters
    that are not stop words and occur in the passage as a whole word; a query without one is skipped."""
    stop_words = optional_module("sklearn.feature_extraction.text", "sklearn",
                                 "the cloze set's stop words (scikit-learn's list)").ENGLISH_STOP_WORDS
    examples = []
    for first in range(0, len(sentence_list) - passage_sentences, step):
        passage = " ".join(sentence_list[first:first + passage_sentences])
        query = sentence_list[first + passage_sentences]
        candidates = sorted({w for w in _WORD.findall(query)
                             if len(w) >= 3 and w.lower() not in stop_words and w not in _ABBREVIATIONS
                             and re.search(rf"\b{w}\b", passage)})
        if not candidates:
            continue
        rng = random.Random(f"{seed}:{book}:{first}")
        word = rng.choice(candidates)
        answers = [Answer(word, m.start()) for m in re.finditer(rf"\b{word}\b", passage)]
        question = re.sub(rf"\b{word}\b", BLANK, query)
        uid = hashlib.sha1(f"{book}:{first}".encode()).hexdigest()[:16]
        examples.append(QAExample(uid, question, passage, answers, title=book))
    return examples


def build_austen_cloze(out: Path, cache: Path | None = None, passage_sentences: int = 10,
                       step: int = 3) -> dict[str, object]:
    """Write ``train.json`` / ``valid.json`` / ``test.json`` (SQuAD v1.1 format) to ``out``; return counts."""
    with tempfile.TemporaryDirectory() as tmp:
        books = fetch_austen(cache or Path(tmp))
    splits: dict[str, list[QAExample]] = {"train": [], "valid": [], "test": []}
    report: dict[str, object] = {"source": f"Debian package {AUSTEN_PACKAGE}", "books": {}}
    for name, lines in sorted(books.items()):
        sentence_list = [s for p in paragraphs(lines) for s in sentences(p)]
        questions = cloze_questions(name, sentence_list, passage_sentences, step)
        split = AUSTEN_SPLITS.get(name, "train")
        splits[split] += questions
        report["books"][name] = {"split": split, "sentences": len(sentence_list),  # type: ignore[index]
                                 "questions": len(questions)}
    out.mkdir(parents=True, exist_ok=True)
    for split, examples in splits.items():
        save_squad(examples, out / f"{split}.json")
        report[f"{split}_questions"] = len(examples)
    return report
