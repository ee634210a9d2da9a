"""Parallel-text loaders, the gettext corpus builder's cleaning and split, BPE, token batching."""

import gzip
import json
import shutil
import unicodedata
from pathlib import Path

import polib
import pytest

from transformerkit.data import gettext
from transformerkit.data.batching import TranslationExample, batch_by_size, collate, padded_length, token_batches
from transformerkit.data.parallel import DataError, load_parallel, read_aligned, read_jsonl, read_tsv, write_tsv
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.tasks.translation import TranslationData, learn_tokenizer

BUNDLED = Path(__file__).resolve().parents[1] / "data"


# ------------------------------------------------------------------------------------- loaders
def test_tsv_skips_and_counts_empty_lines(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("Open\tÖffnen\n\nSave\tSpeichern\n \t \nClose\t\n", encoding="utf-8")
    corpus = read_tsv(path)
    assert corpus.pairs == [("Open", "Öffnen"), ("Save", "Speichern")]
    assert corpus.skipped_empty == 3


def test_tsv_gz_round_trip(tmp_path: Path) -> None:
    pairs = [("a b", "c d"), ("文件", "file")]
    write_tsv(tmp_path / "x.tsv.gz", pairs)
    assert load_parallel(tmp_path / "x.tsv.gz").pairs == pairs


def test_tsv_with_wrong_field_count_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("a\tb\nc\td\te\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.tsv:2: expected 2 tab-separated fields, found 3"):
        read_tsv(path)


def test_bad_encoding_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.tsv"
    path.write_bytes("ok\tgut\n".encode() + "Größe\tsize\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.tsv:2: not valid UTF-8"):
        read_tsv(path)


def test_aligned_files(tmp_path: Path) -> None:
    (tmp_path / "train.en").write_text("Open\n\nSave\n", encoding="utf-8")
    (tmp_path / "train.de").write_text("Öffnen\n\nSpeichern\n", encoding="utf-8")
    corpus = load_parallel(tmp_path / "train.en", tmp_path / "train.de")
    assert corpus.pairs == [("Open", "Öffnen"), ("Save", "Speichern")] and corpus.skipped_empty == 1


def test_misaligned_files_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.en").write_text("1\n2\n3\n", encoding="utf-8")
    (tmp_path / "a.de").write_text("1\n2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.en:3: misaligned: .*a\.de ends at line 2"):
        read_aligned(tmp_path / "a.en", tmp_path / "a.de")
    with pytest.raises(DataError, match=r"a\.en:3: misaligned"):
        read_aligned(tmp_path / "a.de", tmp_path / "a.en")


def test_jsonl_fields_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"en": "Open", "de": "Öffnen"}) + "\n\n" + '{"en": "x"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs\.jsonl:3: invalid JSON"):
        read_jsonl(path, "en", "de")
    path.write_text(json.dumps({"en": "Open", "de": "Öffnen"}) + "\n" + json.dumps({"en": "x"}) + "\n",
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs\.jsonl:2: field 'de' is missing"):
        read_jsonl(path, "en", "de")
    path.write_text(json.dumps({"en": "Open", "de": "Öffnen"}) + "\n", encoding="utf-8")
    assert load_parallel(path, source_field="en", target_field="de").pairs == [("Open", "Öffnen")]


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_tsv(tmp_path / "nope.tsv")


# ------------------------------------------------------------------------------ gettext cleaning
@pytest.mark.parametrize("raw,clean", [
    ("_File", "File"),
    ("Save _As…", "Save As…"),
    ("&Open", "Open"),
    ("Fish && Chips", "Fish & Chips"),
    ("文件(_F)", "文件"),
    ("打开(&O)...", "打开..."),
    ("file_name_max", "file_name_max"),
    ("<b>Bold</b> text", "Bold text"),
    ("A &lt; B", "A < B"),
    ("two\n lines", "two lines"),
])
def test_clean_text(raw: str, clean: str) -> None:
    assert gettext.clean_text(raw) == clean


def test_placeholders() -> None:
    assert gettext.placeholders("%s of %d") == gettext.placeholders("%d von %s")
    assert gettext.placeholders("%1$s and %2$d") == gettext.placeholders("%s und %d")
    assert gettext.placeholders("{name} has %1") != gettext.placeholders("{name} hat")
    assert gettext.placeholders("$UNIT costs ${gold}") == gettext.placeholders("${gold} kostet $UNIT")


def test_clean_pairs_filters_and_reports() -> None:
    report = gettext.Report()
    pairs = [("_Open", "Ö_ffnen"), ("Open", "Öffnen"), ("Open", "Aufmachen"), ("OK", "OK"), ("%s files", "Dateien"),
             ("", "x"), ("42", "42x"), ("Close", "Schließen")]
    kept = gettext.clean_pairs(pairs, report)
    assert sorted(kept) == [("Close", "Schließen"), ("Open", "Öffnen")]
    assert report.dropped == {"duplicate": 2, "untranslated": 1, "placeholder mismatch": 1, "empty": 1,
                              "no words": 1}
    assert report.raw_pairs == len(pairs)


def test_split_is_a_fixed_function_of_the_source() -> None:
    splits = {gettext.split_of(f"message {i}") for i in range(3000)}
    assert splits == {"train", "valid", "test"}
    assert [gettext.split_of(s) for s in ("Open", "Save As…", "文件")] == \
        [gettext.split_of(s) for s in ("Open", "Save As…", "文件")]
    shares = [gettext.split_of(f"message {i}") for i in range(20000)]
    assert 0.005 < shares.count("test") / len(shares) < 0.015


def test_catalog_pairs_reads_mo_files_with_plurals_and_context(tmp_path: Path) -> None:
    po = polib.POFile()
    po.metadata = {"Content-Type": "text/plain; charset=UTF-8", "Plural-Forms": "nplurals=2; plural=(n != 1);"}
    po.append(polib.POEntry(msgid="_Open", msgstr="Ö_ffnen"))
    po.append(polib.POEntry(msgctxt="menu", msgid="Close", msgstr="Schließen"))
    po.append(polib.POEntry(msgid="%d file", msgid_plural="%d files", msgstr_plural={0: "%d Datei", 1: "%d Dateien"}))
    path = tmp_path / "de.mo"
    po.save_as_mofile(str(path))
    assert sorted(gettext.catalog_pairs(path)) == sorted([
        ("_Open", "Ö_ffnen"), ("Close", "Schließen"), ("%d file", "%d Datei"), ("%d files", "%d Dateien")])


def test_build_corpus_without_apt_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="needs apt-get and dpkg-deb"):
        gettext.build_corpus("de", tmp_path / "out", tmp_path / "cache")


@pytest.mark.parametrize("pair", ["en-de", "en-zh"])
def test_bundled_corpus_is_split_by_source(pair: str) -> None:
    directory = BUNDLED / f"gettext-{pair}"
    sources = {}
    for split in ("train", "valid", "test"):
        corpus = read_tsv(directory / f"{split}.tsv.gz")
        assert corpus.skipped_empty == 0 and len(corpus.pairs) > 1000
        for src, _ in corpus.pairs:
            assert gettext.split_of(src) == split
            sources[src] = split
    report = json.loads((directory / "report.json").read_text(encoding="utf-8"))
    assert sum(report["kept"].values()) == len(sources)


# ------------------------------------------------------------------------------------ tokenizer
@pytest.mark.parametrize("kind", ["bpe", "byte-level"])
@pytest.mark.parametrize("pair", ["en-de", "en-zh"])
def test_bpe_round_trips_real_text(pair: str, kind: str, tmp_path: Path) -> None:
    with gzip.open(BUNDLED / f"gettext-{pair}" / "valid.tsv.gz", "rt", encoding="utf-8") as f:
        pairs = [line.rstrip("\n").split("\t") for line in f]
    texts = [t for p in pairs for t in p]
    tokenizer = learn_tokenizer(TranslationData(tokenizer=kind, vocab_size=2000), texts)  # type: ignore[arg-type]
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id) == (0, 1, 2, 3)
    assert tokenizer.vocab_size == 2000
    ids = tokenizer.encode(texts)
    assert tokenizer.decode(ids) == [unicodedata.normalize("NFC", t) for t in texts]
    if pair == "en-zh":  # Chinese is cut into pieces although it has no spaces
        chinese = [p[1] for p in pairs if len(p[1]) > 8][:50]
        assert sum(len(x) for x in tokenizer.encode(chinese)) > 2 * len(chinese)
    tokenizer.save(tmp_path / "tokenizer.json")
    assert SubwordTokenizer.load(tmp_path / "tokenizer.json").encode(texts[:20]) == ids[:20]


def test_bpe_keeps_compatibility_characters() -> None:
    """Regression: an NFKC normalizer turned "…" into "..." and "，？" into ",?", so translations could
    never match references written with them (a quarter of the en→zh test references)."""
    texts = ["Speichern unter …", "文件不存在，是否创建？", "Preparing…"] * 20
    tokenizer = SubwordTokenizer.train(texts, vocab_size=200)
    assert tokenizer.decode(tokenizer.encode(texts[:3])) == texts[:3]


# ------------------------------------------------------------------------------------- batching
def examples(n: int = 500) -> list[TranslationExample]:
    import random
    rng = random.Random(0)
    return [TranslationExample([5] * rng.randint(1, 40), [6] * rng.randint(1, 40)) for _ in range(n)]


def test_token_batches_respect_the_budget_and_cover_everything() -> None:
    data = examples()
    batches = token_batches(data, max_tokens=300, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(data)))
    for batch in batches:
        assert len(batch) * max(padded_length(data[i]) for i in batch) <= 300
    lengths = [[padded_length(data[i]) for i in b] for b in batches]
    assert sum(max(l) - min(l) for l in lengths) / len(lengths) < 5  # bucketed by length


def test_token_batches_are_a_function_of_seed_and_epoch() -> None:
    data = examples()
    assert token_batches(data, 300, seed=1, epoch=3) == token_batches(data, 300, seed=1, epoch=3)
    assert token_batches(data, 300, seed=1, epoch=3) != token_batches(data, 300, seed=1, epoch=4)
    ordered = token_batches(data, 300, seed=1, epoch=0, shuffle=False)
    flat = [padded_length(data[i]) for b in ordered for i in b]
    assert flat == sorted(flat)


def test_batches_by_size_hold_the_budget_and_the_row_limit_given() -> None:
    import random
    rng = random.Random(0)
    sizes = [rng.randint(1, 60) for _ in range(400)]
    for max_tokens, max_rows in ((256, None), (256, 3), (10_000, 16)):
        batches = batch_by_size(sizes, max_tokens, seed=0, epoch=0, shuffle=False, max_rows=max_rows)
        assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
        assert all(len(b) * max(sizes[i] for i in b) <= max_tokens for b in batches)
        assert all(len(b) <= (max_rows or len(sizes)) for b in batches)
    assert max(len(b) for b in batch_by_size(sizes, 10_000, 0, 0, max_rows=16)) == 16
    assert batch_by_size([300, 2], 100, 0, 0, shuffle=False) == [[1], [0]]  # too large: a batch of its own
    with pytest.raises(ValueError, match="max_rows must be a positive integer or None, got 0"):
        batch_by_size(sizes, 100, 0, 0, max_rows=0)


def test_collate_adds_special_tokens_and_padding() -> None:
    batch = collate([TranslationExample([7, 8, 9], [4]), TranslationExample([7], [4, 5, 6])], 0, 1, 2)
    assert batch.src.tolist() == [[7, 8, 9, 2], [7, 2, 0, 0]]
    assert batch.tgt_in.tolist() == [[1, 4, 0, 0], [1, 4, 5, 6]]
    assert batch.tgt_out.tolist() == [[4, 2, 0, 0], [4, 5, 6, 2]]
