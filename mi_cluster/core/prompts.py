"""Prompts and tokens: tokenizing the way the model does, finding words, checking single tokens.

Every analysis that reads "the position of *lamp*" or "the logit of *Mary*" goes through
here, so that BOS/CLS tokens, leading spaces and words split into several sub-tokens are
handled in one place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from mi_cluster.core.protocols import HookedModel, Tokenizer

__all__ = [
    "NotSingleTokenError",
    "TokenizedPrompt",
    "UnknownWordError",
    "WordNotFoundError",
    "WordTokenization",
    "get_tokenizer",
    "one_token_id",
    "single_token_id",
    "tokenize_prompt",
    "unique_token_labels",
    "unknown_tokens",
    "word_positions",
    "word_token_table",
]


class WordNotFoundError(ValueError):
    """A word asked for is not in the prompt (or not that many times)."""


class NotSingleTokenError(ValueError):
    """An analysis needs a word to be one token and it is not."""


class UnknownWordError(ValueError):
    """A word the tokenizer does not know: it reads as the unknown token (``<unk>``,
    ``[UNK]``), so every such word would give the same vector or logit."""


def get_tokenizer(model_or_tokenizer: HookedModel | Tokenizer) -> Tokenizer:
    """The Hugging Face tokenizer of a TransformerLens model, or the tokenizer itself."""
    tokenizer = getattr(model_or_tokenizer, "tokenizer", None)
    if tokenizer is not None:
        return tokenizer
    if callable(getattr(model_or_tokenizer, "convert_ids_to_tokens", None)):
        return cast(Tokenizer, model_or_tokenizer)
    raise TypeError(
        f"expected a TransformerLens model with a tokenizer, or a Hugging Face tokenizer; "
        f"got {type(model_or_tokenizer).__name__}"
    )


@dataclass(frozen=True)
class TokenizedPrompt:
    """One prompt tokenized exactly as the model sees it.

    Fields:
        text: the prompt.
        ids: token ids, including a prepended BOS or the tokenizer's own CLS/SEP.
        str_tokens: the token strings (tokenizer vocabulary form, e.g. ``"Ġlamp"`` decoded
            to ``" lamp"``).
        offsets: for each token, the ``(start, end)`` character span it covers in ``text``;
            ``(0, 0)`` for special tokens.
        special: for each token, whether it is a special token (BOS, CLS, SEP, ...).
        unknown: for each token, whether it is the tokenizer's unknown token standing for
            text it does not know (empty when the tokenizer has none).
    """

    text: str
    ids: tuple[int, ...]
    str_tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    special: tuple[bool, ...]
    unknown: tuple[bool, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)


def tokenize_prompt(
    model_or_tokenizer: HookedModel | Tokenizer, text: str, prepend_bos: bool | None = None
) -> TokenizedPrompt:
    """Tokenize ``text`` exactly as ``model.to_tokens(text)`` does, keeping character offsets.

    With a model, the ids are the model's own (``to_tokens``, so its BOS convention holds:
    GPT-2 gets ``<|endoftext|>`` prepended, BERT keeps its ``[CLS] ... [SEP]``);
    ``prepend_bos`` overrides the model's default. With a bare tokenizer, a BOS is
    prepended only if ``prepend_bos`` is true and the tokenizer did not add one.
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"a prompt must be a non-empty string, got {text!r}")
    tokenizer = get_tokenizer(model_or_tokenizer)
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            "mi_cluster needs a fast (Rust) Hugging Face tokenizer to map words to token "
            f"positions; {type(tokenizer).__name__} is not one"
        )
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    special_ids = set(tokenizer.all_special_ids)
    special = [i in special_ids and s == e for i, (s, e) in zip(ids, offsets, strict=True)]
    cfg = getattr(model_or_tokenizer, "cfg", None)
    n_ctx = getattr(cfg, "n_ctx", None)
    will_prepend = bool(getattr(cfg, "default_prepend_bos", False)) and not (ids and special[0])
    if isinstance(n_ctx, int) and len(ids) + int(will_prepend) > n_ctx:
        raise ValueError(
            f"prompt {text[:60]!r}... has {len(ids)} tokens, more than the model's context "
            f"of {n_ctx}"
        )
    to_tokens = getattr(model_or_tokenizer, "to_tokens", None)
    if to_tokens is not None:
        # The model's own tokenization is the truth; the tokenizer supplies the offsets.
        kwargs = {} if prepend_bos is None else {"prepend_bos": prepend_bos}
        model_ids = [int(i) for i in to_tokens(text, **kwargs)[0].tolist()]
        keep, prepended = _align(model_ids, ids, special)
        if keep is None:
            raise ValueError(
                f"cannot align the model's tokens for {text!r} with its tokenizer's: "
                f"{model_ids} vs {ids}"
            )
        ids, offsets, special = ids[keep], offsets[keep], special[keep]
        if prepended:
            ids.insert(0, model_ids[0])
            offsets.insert(0, (0, 0))
            special.insert(0, True)
    elif prepend_bos and tokenizer.bos_token_id is not None:
        if not (ids and special[0] and ids[0] == tokenizer.bos_token_id):
            ids.insert(0, tokenizer.bos_token_id)
            offsets.insert(0, (0, 0))
            special.insert(0, True)
    str_tokens = [tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids]
    unk = getattr(tokenizer, "unk_token_id", None)
    unknown = (
        ()
        if unk is None
        else tuple(i == unk and not sp for i, sp in zip(ids, special, strict=True))
    )
    return TokenizedPrompt(
        text=text,
        ids=tuple(ids),
        str_tokens=tuple(str_tokens),
        offsets=tuple(offsets),  # type: ignore[arg-type]
        special=tuple(special),
        unknown=unknown,
    )


def _align(model_ids: list[int], ids: list[int], special: list[bool]) -> tuple[slice | None, bool]:
    """How the tokenizer's ids become the model's: which of them to keep (a special token
    the tokenizer adds at either end may be one the model drops: a BOS its adapter does
    not prepend, an EOS it strips) and whether the model prepends one token (its BOS).
    ``(None, False)`` when they cannot be aligned."""
    n = len(ids)
    for lead in (0, 1):
        for trail in (0, 1):
            if (lead and not (n and special[0])) or (trail and not (n > lead and special[-1])):
                continue
            keep = slice(lead, n - trail)
            for prepended in (False, True):
                if model_ids[int(prepended) :] == ids[keep] and len(model_ids) > prepended:
                    return keep, prepended
    return None, False


def _word_spans(text: str, word: str, case_sensitive: bool) -> list[tuple[int, int]]:
    pattern = r"(?<!\w)" + re.escape(word.strip()) + r"(?!\w)"
    flags = 0 if case_sensitive else re.IGNORECASE
    return [(m.start(), m.end()) for m in re.finditer(pattern, text, flags)]


def word_positions(
    prompt: TokenizedPrompt,
    word: str,
    occurrence: int = 0,
    case_sensitive: bool = True,
    *,
    allow_unknown: bool = False,
) -> tuple[int, ...]:
    """Token positions of ``word`` in a tokenized prompt: all of its sub-tokens, in order.

    A word the tokenizer reads as its unknown token raises :class:`UnknownWordError`
    (every unknown word would give the same vector), unless ``allow_unknown`` (for a
    caller that drops such words itself, as the clustering study's ``role_design`` does).

    Positions count from the start of ``prompt.ids``, so a prepended BOS is position 0.
    The word is matched as a whole word (``"Ann"`` does not match inside ``"Anna"``); a
    leading space belongs to the token, not the word, so ``" lamp"`` and ``"lamp"`` are the
    same word. ``occurrence`` picks among repeated mentions (0 = first, -1 = last).
    """
    if not word.strip():
        raise ValueError("the word to find is empty")
    spans = _word_spans(prompt.text, word, case_sensitive)
    if not spans:
        hint = ""
        if case_sensitive and _word_spans(prompt.text, word, case_sensitive=False):
            hint = " (it occurs with other capitalisation; pass case_sensitive=False)"
        raise WordNotFoundError(f"word {word.strip()!r} not found in prompt {prompt.text!r}{hint}")
    try:
        start, end = spans[occurrence]
    except IndexError:
        raise WordNotFoundError(
            f"word {word.strip()!r} occurs {len(spans)} time(s) in prompt {prompt.text!r}; "
            f"occurrence={occurrence} does not exist"
        ) from None
    positions = tuple(
        p
        for p, ((s, e), sp) in enumerate(zip(prompt.offsets, prompt.special, strict=True))
        if not sp and s < end and e > start
    )
    if not positions:  # pragma: no cover - a tokenizer whose offsets skip the word
        raise WordNotFoundError(
            f"word {word.strip()!r} is in prompt {prompt.text!r} but no token covers it"
        )
    if not allow_unknown and prompt.unknown and any(prompt.unknown[p] for p in positions):
        raise UnknownWordError(
            f"word {word.strip()!r} in prompt {prompt.text!r} is not in the tokenizer's "
            "vocabulary (it reads as the unknown token, like every other unknown word): "
            "choose a word the model knows"
        )
    return positions


@dataclass(frozen=True)
class WordTokenization:
    """How one word tokenizes, bare and after a space (the table researchers build by hand).

    Fields:
        word: the word.
        no_space: its tokens when it starts the text (``"Mary"``).
        with_space: its tokens after a space, as mid-sentence (``" Mary"``).
    """

    word: str
    no_space: tuple[str, ...]
    with_space: tuple[str, ...]

    @property
    def n_no_space(self) -> int:
        """Tokens of the word without a leading space."""
        return len(self.no_space)

    @property
    def n_with_space(self) -> int:
        """Tokens of the word with a leading space."""
        return len(self.with_space)


def _bare_tokens(tokenizer: Any, text: str) -> tuple[list[int], list[str]]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids, [tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids]


def word_token_table(
    model_or_tokenizer: HookedModel | Tokenizer, words: Sequence[str]
) -> list[WordTokenization]:
    """For each word, its tokens with and without a leading space."""
    tokenizer = get_tokenizer(model_or_tokenizer)
    return [
        WordTokenization(
            word=w,
            no_space=tuple(_bare_tokens(tokenizer, w)[1]),
            with_space=tuple(_bare_tokens(tokenizer, " " + w)[1]),
        )
        for w in words
    ]


def one_token_id(
    model_or_tokenizer: HookedModel | Tokenizer,
    text: str,
    hint: str = "give a token id",
    name: str | None = None,
) -> int:
    """The id of ``text`` (exactly as given, spaces included) as one known token: a
    :class:`NotSingleTokenError` if it is several, an :class:`UnknownWordError` if it is
    the tokenizer's unknown token (messages call it ``name``, by default ``text``)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a token must be a non-empty string, got {text!r}")
    tokenizer = get_tokenizer(model_or_tokenizer)
    ids, strs = _bare_tokens(tokenizer, text)
    name = repr(text) if name is None else name
    if len(ids) != 1:
        raise NotSingleTokenError(
            f"{name} is not a single token: it tokenizes as {strs!r} (ids {ids}); {hint}"
        )
    if ids[0] == getattr(tokenizer, "unk_token_id", None):
        raise UnknownWordError(
            f"{name} is not in the tokenizer's vocabulary (it reads as the unknown token "
            f"{strs[0]!r}, as every unknown word does)"
        )
    return ids[0]


def single_token_id(
    model_or_tokenizer: HookedModel | Tokenizer, word: str, leading_space: bool = True
) -> int:
    """The id of ``word`` as one known token (:func:`one_token_id`), or an error naming
    it.

    ``leading_space=True`` asks for the mid-sentence form (``" Mary"``), which is what a
    model predicts after ``"... gave it to"``.
    """
    if not isinstance(word, str):
        raise ValueError(f"a word must be a string, got {word!r}")
    text = (" " + word.strip()) if leading_space else word.strip()
    form = "with a leading space" if leading_space else "without a leading space"
    hint = f"choose another word or set leading_space={not leading_space}"
    name = f"word {word.strip()!r} ({form})"
    return one_token_id(model_or_tokenizer, text, hint, name)


def unknown_tokens(
    model_or_tokenizer: HookedModel | Tokenizer, prompt: TokenizedPrompt
) -> list[tuple[int, str]]:
    """``(position, text)`` of every token of ``prompt`` that is the tokenizer's unknown
    token (a word-level or WordPiece vocabulary that lacks a word); byte-level BPEs never
    have any."""
    unk = getattr(get_tokenizer(model_or_tokenizer), "unk_token_id", None)
    if unk is None:
        return []
    return [
        (p, prompt.text[s:e])
        for p, (i, (s, e), sp) in enumerate(
            zip(prompt.ids, prompt.offsets, prompt.special, strict=True)
        )
        if i == unk and not sp and e > s
    ]


def unique_token_labels(str_tokens: Sequence[str]) -> list[str]:
    """A readable, unique label per token: the token without surrounding spaces, and for a
    token that occurs more than once, its occurrence number (``"John 1"``, ``"John 2"``),
    so figures with a position axis never merge two positions."""
    stripped = [t.strip() or repr(t) for t in str_tokens]
    total = {t: stripped.count(t) for t in stripped}
    seen: dict[str, int] = {}
    out = []
    for t in stripped:
        seen[t] = seen.get(t, 0) + 1
        out.append(f"{t} {seen[t]}" if total[t] > 1 else t)
    return out
