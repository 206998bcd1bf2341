from openmaas.recipes.featurizers import BagOfWords, terms


def test_chinese_text_becomes_characters_and_bigrams() -> None:
    assert terms("人工智能") == ["人", "工", "智", "能", "人工", "工智", "智能"]


def test_latin_words_are_lowercased_and_single_letters_dropped() -> None:
    assert terms("Free PRIZE, a winner!") == ["free", "prize", "winner"]


def test_mixed_scripts_are_split_at_the_script_boundary() -> None:
    assert terms("AI大模型") == ["ai", "大", "模", "型", "大模", "模型"]


def test_vocabulary_keeps_the_most_frequent_terms_deterministically() -> None:
    bow = BagOfWords.fit(["red apple", "red car", "blue car", "red"], max_features=2)
    assert bow.vocabulary == ["car", "red"]


def test_transform_counts_terms_per_row_and_skips_unknown_ones() -> None:
    bow = BagOfWords(["apple", "red"])
    batch = bow.transform(["red red apple", "unknown words", "apple"])
    assert batch.offsets.tolist() == [0, 2, 2]
    rows = {int(i): float(c) for i, c in zip(batch.indices[:2], batch.counts[:2], strict=True)}
    assert rows == {1: 2.0, 0: 1.0}
    assert batch.indices[2:].tolist() == [0]


def test_featurizer_round_trips_through_json() -> None:
    bow = BagOfWords.fit(["这是一篇文章", "hello world"], max_features=100)
    again = BagOfWords.from_json(bow.to_json())
    assert again.vocabulary == bow.vocabulary
