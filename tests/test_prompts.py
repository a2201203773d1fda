import pytest

from mi_cluster.core.prompts import (
    NotSingleTokenError,
    WordNotFoundError,
    single_token_id,
    tokenize_prompt,
    unknown_tokens,
    word_positions,
    word_token_table,
)


def test_tokenize_matches_model_tokens(tiny, minilm):
    for model in (tiny, minilm):
        for text in ["Adam went to the store. Lamp went to the", "Zyxwv", "a, b; c"]:
            tp = tokenize_prompt(model, text)
            assert list(tp.ids) == model.to_tokens(text)[0].tolist()
            assert tp.special[0]  # BOS for GPT-2, CLS for BERT


def test_single_token_word_position_after_bos(tiny):
    tp = tokenize_prompt(tiny, "Adam went to the store. Lamp went to the")
    assert tp.str_tokens[0] == "<|endoftext|>"
    (pos,) = word_positions(tp, "Adam")
    assert pos == 1
    (pos,) = word_positions(tp, "store")
    assert tp.str_tokens[pos] == " store"


def test_multi_token_word_returns_all_subtokens(tiny):
    tp = tokenize_prompt(tiny, "Mary saw Zyxwv at the store")
    pos = word_positions(tp, "Zyxwv")
    assert len(pos) > 1
    assert "".join(tp.str_tokens[p] for p in pos).strip() == "Zyxwv"
    assert pos == tuple(range(pos[0], pos[-1] + 1))


def test_bert_positions_skip_cls_and_lowercase(minilm):
    tp = tokenize_prompt(minilm, "Adam went to the store. Lamp went to the")
    assert tp.str_tokens[0] == "[CLS]" and tp.str_tokens[-1] == "[SEP]"
    (pos,) = word_positions(tp, "Lamp")
    assert tp.str_tokens[pos] == "lamp"
    pos = word_positions(tokenize_prompt(minilm, "the xylophonist played"), "xylophonist")
    assert len(pos) > 1


def test_repeated_word_occurrences(tiny):
    tp = tokenize_prompt(tiny, "When Mary and John went to the store, John gave a lamp to")
    first, last = word_positions(tp, "John", 0), word_positions(tp, "John", -1)
    assert first[0] < last[0]
    with pytest.raises(WordNotFoundError, match="occurs 2 time"):
        word_positions(tp, "John", 2)


def test_whole_word_match_and_clear_errors(tiny):
    tp = tokenize_prompt(tiny, "Anna met Ann")
    ann = word_positions(tp, "Ann")
    assert "".join(tp.str_tokens[p] for p in ann).strip() == "Ann"
    assert ann[0] > word_positions(tp, "met")[-1]  # the later, whole word; not inside "Anna"
    with pytest.raises(WordNotFoundError, match="'table' not found in prompt 'Anna met Ann'"):
        word_positions(tp, "table")
    tp = tokenize_prompt(tiny, "Lamp went home")
    with pytest.raises(WordNotFoundError, match="other capitalisation"):
        word_positions(tp, "lamp")
    assert word_positions(tp, "lamp", case_sensitive=False) == word_positions(tp, "Lamp")


def test_word_token_table(tiny, minilm):
    rows = {r.word: r for r in word_token_table(tiny, ["Mary", "Zyxwv"])}
    assert rows["Mary"].no_space == ("Mary",) and rows["Mary"].with_space == (" Mary",)
    assert rows["Zyxwv"].n_no_space > 1
    (bert_row,) = word_token_table(minilm, ["lamp"])
    assert bert_row.no_space == bert_row.with_space == ("lamp",)


def test_single_token_id(tiny):
    assert single_token_id(tiny, "Mary") == tiny.to_single_token(" Mary")
    with pytest.raises(NotSingleTokenError, match=r"'Zyxwv' .*is not a single token.*'Z'"):
        single_token_id(tiny, "Zyxwv")


def test_unknown_tokens():
    from mi_cluster.models.toy import load_toy_ioi

    toy = load_toy_ioi()
    tp = tokenize_prompt(toy, "Mary saw a spaceship at the store")
    assert unknown_tokens(toy, tp) == [(4, "spaceship")]  # BOS, Mary, saw, a, <unk>
    assert unknown_tokens(toy, tokenize_prompt(toy, "Mary saw a lamp")) == []
