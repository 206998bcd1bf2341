"""The pre-flight data report of a fine-tune: counts in the recipe's own tokens, duplicates, conflicting labels,
examples past the context, and an estimate only from measured speed."""

from __future__ import annotations

from openmaas.recipes.token_counts import TokenCounter, bow_counter, encoder_counter
from openmaas.services.data_report import data_report, estimate, measured_speed, trained_tokens

ROWS = [
    {"text": "Win a FREE prize now", "label": "spam"},
    {"text": "win a free prize, now!", "label": "ham"},  # a near duplicate of the first, with another label
    {"text": "see you at lunch", "label": "ham"},
    {"text": "call me later please", "label": "ham"},
]


def test_the_report_counts_tokens_duplicates_conflicts_and_examples_over_the_context() -> None:
    counter = TokenCounter(lambda row: len(row["text"].split()), 4, "words", "truncated")
    report = data_report(ROWS, {"duplicate": {"count": 3}}, counter, epochs=2, train_fraction=0.5)
    assert report["rows"] == 4 and report["exact_duplicates_dropped"] == 3
    assert report["tokens_per_example"] == {"min": 4, "median": 4.5, "max": 5}
    assert report["near_duplicates"] == 1 and report["conflicting_labels"] == 1
    assert report["label_balance"] == {"ham": 3, "spam": 1}
    assert report["over_context"] == 2 and report["truncated_examples"] == [1, 2]
    assert report["tokens_in_file"] == 16  # truncated at 4 tokens each
    assert report["estimated_trained_tokens"] == 16  # half the rows train, twice


def test_the_encoders_tokenizer_counts_sub_words_and_special_tokens() -> None:
    counter = encoder_counter("all-minilm-l6-v2", None)
    assert counter.context == 256 and counter.cut == "truncated"
    assert counter.count({"text": "hello"}) == 3  # [CLS] hello [SEP]
    assert counter.count({"text": "antidisestablishmentarianism"}) > 3  # one word, several word pieces
    assert bow_counter().count({"text": "Hello, hello WORLD"}) == 3


def test_no_estimate_without_a_finished_job_and_one_from_measured_speed_after() -> None:
    report = data_report(ROWS, {}, bow_counter(), epochs=1)
    assert estimate(report, measured_speed([]))["estimated_seconds"] is None
    finished = [
        {
            "report": report,
            "metrics": {"epochs": 2, "train_seconds": 2.0, "train_rows": 4},
            "started_at": 10.0,
            "finished_at": 15.0,
        },
    ]
    speed = measured_speed(finished)
    assert speed is not None and speed["overhead_seconds"] == 3.0
    assert speed["tokens_per_second"] == trained_tokens(report, finished[0]["metrics"]) / 2.0
    estimated = estimate(report, speed)
    assert estimated["estimated_seconds"] == round(
        3.0 + report["estimated_trained_tokens"] / speed["tokens_per_second"], 1
    )
