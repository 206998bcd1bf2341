import pytest

from openmaas.data.cleaning import clean
from openmaas.data.readers import DatasetFileError, RawRow, detect_format, read_rows
from openmaas.data.splitting import stratified_split


def rows(*pairs: tuple[object, object]) -> list[RawRow]:
    return [RawRow(i + 2, text, label) for i, (text, label) in enumerate(pairs)]


def test_cleaning_strips_drops_and_reports_with_lines() -> None:
    result = clean(rows(("  hello ", "a"), ("", "b"), ("hello", "a"), ("bye", 1), ("why", None)))
    assert result.texts == ["hello", "bye"]
    assert result.labels == ["a", "1"]
    dropped = result.report["dropped"]
    assert dropped["empty_text"] == {"count": 1, "lines": [3]}
    assert dropped["duplicate"] == {"count": 1, "lines": [4]}
    assert dropped["missing_label"] == {"count": 1, "lines": [6]}


def test_texts_kept_with_two_labels_are_counted_as_conflicts() -> None:
    result = clean(rows(("a", "x"), ("a", "y"), ("a", "x"), ("b", "x"), ("c", "y"), ("c", "x")))
    assert result.texts == ["a", "a", "b", "c", "c"]
    assert result.report["conflicting_labels"] == 2
    assert result.report["dropped"] == {"duplicate": {"count": 1, "lines": [4]}}


def test_labels_are_normalised_to_strings() -> None:
    result = clean(rows(("a", 1.0), ("b", True), ("c", "x")))
    assert result.labels == ["1", "true", "x"]


def test_one_class_is_refused() -> None:
    with pytest.raises(DatasetFileError) as caught:
        clean(rows(("a", "x"), ("b", "x")))
    assert caught.value.code == "too_few_classes"


def test_csv_rows_carry_their_physical_line_numbers() -> None:
    data = b'text,label\n"multi\nline",a\nplain,b\n'
    parsed = list(read_rows(data, "csv", "text", "label"))
    assert [(r.line, r.text) for r in parsed] == [(2, "multi\nline"), (4, "plain")]


def test_unknown_extension_is_refused() -> None:
    with pytest.raises(DatasetFileError) as caught:
        detect_format("data.xlsx")
    assert caught.value.code == "unsupported_format"


def test_stratified_split_keeps_each_class_and_is_seeded() -> None:
    labels = ["a"] * 80 + ["b"] * 20
    train, val, note = stratified_split(labels, 0.2, seed=7)
    assert note is None
    assert sorted(train + val) == list(range(100))
    assert sum(labels[i] == "b" for i in val) == 4
    assert stratified_split(labels, 0.2, seed=7)[1] == val


def test_tiny_datasets_train_without_validation_and_say_so() -> None:
    train, val, note = stratified_split(["1", "0", "1"], 0.2, seed=0)
    assert train == [0, 1, 2] and val == []
    assert note is not None and "too small" in note
