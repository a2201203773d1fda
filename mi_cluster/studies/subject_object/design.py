"""The controlled design of the subject/object clustering study.

Does an object word ("lamp") look more like a person name when the context puts it where a
subject goes? A 2 x 2 design at the read word's position answers it without confounds:
word type (person name vs object noun) x syntactic role (subject vs object position), each
word read in every template family in both roles, so the role contrast is paired within a
word and a family. The quantity of interest is the interaction: does subject position move
objects toward names more than it moves names? Each word is also read alone (the bare
word), the comparison the original notes made.

Template families vary what precedes the read word, so no result is one template's
artefact: the subject slot is sentence-initial or mid-sentence, with or without a name
before it. Within a family the read word is at the same position in both forms, so the
role contrast is not a contrast of position embeddings. Every word of every template is
in the shipped toy model's vocabulary too (lowercase after a full stop there, see
``capitalize``).

Words are checked against the model's tokenizer inside the actual prompts: a word the
tokenizer does not know (an unknown token) is dropped with a warning naming it; a word
split into several tokens is dropped with a warning, reduced to one vector by the
:class:`~mi_cluster.collection.activations.Positions` sub-token rule (recorded), or
refused, by option.
Nothing is dropped or reduced silently.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from mi_cluster.collection.activations import Positions
from mi_cluster.core.prompts import (
    NotSingleTokenError,
    get_tokenizer,
    tokenize_prompt,
    unknown_tokens,
    word_positions,
)
from mi_cluster.core.protocols import HookedModel, Tokenizer

__all__ = [
    "FAMILIES",
    "NAMES",
    "OBJECTS",
    "RoleDesign",
    "RoleItem",
    "TemplateFamily",
    "UnknownWordWarning",
    "name_swap_pairs",
    "role_design",
]

# Person names that are not also common nouns (no Rose, Grace, Jack, Mark, Bob); all in
# the toy model's vocabulary and single tokens in MiniLM's (BERT uncased) WordPiece.
NAMES: tuple[str, ...] = (
    "Mary", "John", "Adam", "Emily", "Chris", "Diana", "Paul", "Sarah", "James", "Anna",
    "David", "Laura", "Peter", "Kate", "Tom", "Lucy", "Sam", "Alice", "Claire", "Dan",
    "Emma", "Henry", "Julia", "Kevin", "Lisa", "Mike", "Nina", "Oscar", "Steve", "Tina",
    "Wendy",
)  # fmt: skip
# Concrete object nouns; the first 19 are the toy model's objects.
OBJECTS: tuple[str, ...] = (
    "lamp", "table", "house", "pen", "ball", "window", "chair", "book", "cup", "door",
    "bag", "box", "key", "hat", "ring", "phone", "apple", "gift", "letter", "bottle",
    "knife", "spoon", "plate", "bed", "car", "clock", "desk", "shoe", "coat", "shirt",
    "bowl", "candle", "basket", "blanket", "pillow",
)  # fmt: skip

Role = Literal["subject", "object", "alone"]
WordType = Literal["name", "object"]


@dataclass(frozen=True)
class TemplateFamily:
    """One template family: the read word ``{W}`` in subject and in object position.

    Fields:
        name: a short label.
        subject: the template with ``{W}`` as a subject (``{X}``: a context name).
        object: the template with ``{W}`` as an object.
        initial: whether ``{W}`` starts a sentence in the subject form.
        preceding_name: whether a name (``{X}``) comes before ``{W}``.
    """

    name: str
    subject: str
    object: str
    initial: bool
    preceding_name: bool


# In each family the read word has the same number of words before it in both forms, so
# subject and object readings sit at the same token position (checked per tokenizer:
# ``RoleDesign.position_gaps``) and position embeddings cannot masquerade as role.
FAMILIES: tuple[TemplateFamily, ...] = (
    TemplateFamily(
        "new sentence",
        "{X} had fun. {W} went to the store.",
        "{X} went and saw {W} at the store.",
        initial=True,
        preceding_name=True,
    ),
    TemplateFamily(
        "new sentence, no name",
        "The day was long. {W} went to the store.",
        "Later that day they saw {W} at the store.",
        initial=True,
        preceding_name=False,
    ),
    TemplateFamily(
        "embedded clause",
        "{X} said that later {W} went to the store.",
        "{X} said they saw {W} at the store.",
        initial=False,
        preceding_name=True,
    ),
    TemplateFamily(
        "after a connective",
        "So after lunch {W} went to the store.",
        "So they saw {W} at the store.",
        initial=False,
        preceding_name=False,
    ),
    TemplateFamily(
        "coordination",
        "When {X} and {W} went to the store, they had lunch.",
        "When {X} saw {W} at the store, they had lunch.",
        initial=False,
        preceding_name=True,
    ),
)


class UnknownWordWarning(UserWarning):
    """Words were dropped from a design (unknown to the tokenizer, or split into tokens)."""


@dataclass(frozen=True)
class RoleItem:
    """One prompt of the design.

    Fields:
        text: the prompt.
        word: the read word as it appears in the prompt (``"Lamp"`` when capitalised).
        lemma: the word as listed (``"lamp"``): the unit that statistics resample.
        word_type: ``"name"`` or ``"object"``.
        role: ``"subject"``, ``"object"`` or ``"alone"``.
        family: the template family's name (``"alone"`` for the bare word).
        context_name: the name filling ``{X}`` (empty when none).
    """

    text: str
    word: str
    lemma: str
    word_type: WordType
    role: Role
    family: str
    context_name: str = ""


@dataclass(frozen=True)
class RoleDesign:
    """The word type x role design, checked against one tokenizer.

    Fields:
        items: every prompt, grouped by word (all of a word's prompts are adjacent).
        names, objects: the words kept, in order.
        families: the template families used.
        dropped: ``(word, reason)`` for each word left out.
        reduced: words split into several tokens and kept, reduced by ``subtoken``.
        subtoken: how a multi-token word is reduced (``"first"``, ``"last"``, ``"mean"``).
        capitalize: whether a sentence-initial read word was capitalised.
        tokenizer: the tokenizer's name (``name_or_path``).
        position_gaps: per family, the largest difference (over words) between the read
            word's token position in the object and in the subject form (0: matched).
    """

    items: tuple[RoleItem, ...]
    names: tuple[str, ...]
    objects: tuple[str, ...]
    families: tuple[TemplateFamily, ...]
    dropped: tuple[tuple[str, str], ...]
    reduced: tuple[str, ...]
    subtoken: str
    capitalize: bool
    tokenizer: str
    position_gaps: tuple[tuple[str, int], ...] = ()

    @property
    def texts(self) -> list[str]:
        """Every prompt of the design, in order."""
        return [it.text for it in self.items]

    def positions(self) -> Positions:
        """Where to read each prompt: its word, every sub-token reduced by ``subtoken``."""
        return Positions.word([it.word for it in self.items], subtoken=self.subtoken)  # type: ignore[arg-type]

    @property
    def words(self) -> tuple[str, ...]:
        """Names then objects: unit ``i`` of :attr:`units` is ``words[i]``."""
        return self.names + self.objects

    @property
    def units(self) -> torch.Tensor:
        """The word (index into :attr:`words`) of each item."""
        index = {w: i for i, w in enumerate(self.words)}
        return torch.tensor([index[it.lemma] for it in self.items])

    @property
    def is_name(self) -> torch.Tensor:
        """Whether each prompt's word is a name."""
        return torch.tensor([it.word_type == "name" for it in self.items])

    def cell_index(self, role: str) -> torch.Tensor:
        """``Int[Tensor, "word family"]``: the item of each word (as in :attr:`words`) in
        ``role`` in each family (design order; ``"alone"``: one column, the bare word). An
        error names the first missing reading: every word needs every family in every
        role."""
        fams = ["alone"] if role == "alone" else [f.name for f in self.families]
        out = torch.full((len(self.words), len(fams)), -1, dtype=torch.long)
        where = {w: i for i, w in enumerate(self.words)}
        for k, it in enumerate(self.items):
            if it.role == role:
                out[where[it.lemma], fams.index(it.family)] = k
        missing = (out < 0).nonzero()
        if len(missing):
            w, f = (int(i) for i in missing[0])
            raise ValueError(
                f"the design has no {role!r} reading of {self.words[w]!r} in family "
                f"{fams[f]!r}: every word needs every family in every role"
            )
        return out

    def mask(self, role: str | None = None, family: str | None = None) -> torch.Tensor:
        """Items in ``role`` (and ``family``, if given)."""
        return torch.tensor(
            [
                (role is None or it.role == role) and (family is None or it.family == family)
                for it in self.items
            ]
        )


def _items_for(
    word: str,
    word_type: WordType,
    context: Sequence[str],
    families: Sequence[TemplateFamily],
    capitalize: bool,
    alone: bool,
) -> list[RoleItem]:
    # Alone, the word keeps the leading space it has mid-sentence, so a BPE reads the same
    # token as in context (GPT-2: " lamp", not "l" + "amp"); BERT and word-level
    # tokenizers ignore the space.
    out = [RoleItem(" " + word, word, word, word_type, "alone", "alone")] if alone else []
    for k, fam in enumerate(families):
        for role, template in (("subject", fam.subject), ("object", fam.object)):
            initial = fam.initial and role == "subject"
            form = word[:1].upper() + word[1:] if (initial and capitalize) else word
            x = context[k] if "{X}" in template else ""
            text = template.format(W=form, X=x)
            out.append(RoleItem(text, form, word, word_type, role, fam.name, x))  # type: ignore[arg-type]
    return out


def _context_names(word: str, names: Sequence[str], start: int, n: int) -> list[str]:
    """``n`` context names cycling through ``names`` from ``start``, never ``word``."""
    pool = [m for m in names if m != word] or list(names)
    return [pool[(start + k) % len(pool)] for k in range(n)]


def _build(names, objects, families, capitalize, alone) -> list[RoleItem]:
    items: list[RoleItem] = []
    for i, w in enumerate(names):
        items += _items_for(
            w, "name", _context_names(w, names, i + 1, len(families)), families, capitalize, alone
        )
    for i, w in enumerate(objects):
        items += _items_for(
            w, "object", _context_names(w, names, i, len(families)), families, capitalize, alone
        )
    return items


def _lowercase_only(tokenizer: Any, objects: Sequence[str]) -> bool:
    """Whether the tokenizer knows some object in lowercase but not capitalised."""

    def known(word: str) -> bool:
        return not unknown_tokens(tokenizer, tokenize_prompt(tokenizer, " " + word))

    return any(known(w) and not known(w[:1].upper() + w[1:]) for w in objects)


def role_design(
    model_or_tokenizer: HookedModel | Tokenizer,
    names: Sequence[str] = NAMES,
    objects: Sequence[str] = OBJECTS,
    families: Sequence[TemplateFamily] = FAMILIES,
    *,
    capitalize: bool | Literal["auto"] = "auto",
    multi_token: Literal["drop", "reduce", "error"] = "drop",
    subtoken: Literal["first", "last", "mean"] = "mean",
    alone: bool = True,
) -> RoleDesign:
    """Build the design for one model's tokenizer and check every read word in context.

    Args:
        model_or_tokenizer: the model (or its tokenizer) that will read the prompts.
        names: the name words (at least two must survive the checks).
        objects: the object words (at least two must survive the checks).
        families: template families (each needs ``{W}``; ``{X}`` is optional).
        capitalize: capitalise a read word that starts a sentence (``"Lamp went ..."``).
            ``"auto"``: unless the tokenizer knows some object only in lowercase (a
            word-level vocabulary of lowercase nouns, like the toy model's); the design
            records what was used.
        multi_token: for a word split into several tokens: ``"drop"`` it (with a
            :class:`UnknownWordWarning` naming it), ``"reduce"`` it by ``subtoken``
            (recorded in ``reduced``, with a warning), or raise ``"error"``.
        subtoken: the sub-token rule for ``"reduce"``.
        alone: also read each word alone.
    """
    _check_arguments(names, objects, families, multi_token, subtoken)
    tokenizer = get_tokenizer(model_or_tokenizer)
    if capitalize == "auto":
        capitalize = not _lowercase_only(tokenizer, objects)
    elif not isinstance(capitalize, bool):
        raise ValueError(f"capitalize must be True, False or 'auto', got {capitalize!r}")
    survey = _survey(tokenizer, _build(names, objects, families, capitalize, alone))
    dropped, reduced = _resolve(survey, multi_token, subtoken)
    kept_names = tuple(w for w in names if w not in dropped)
    kept_objects = tuple(w for w in objects if w not in dropped)
    if len(kept_names) < 2 or len(kept_objects) < 2:
        raise ValueError(
            f"too few words left after the tokenizer checks ({len(kept_names)} names, "
            f"{len(kept_objects)} objects; at least 2 of each): "
            + "; ".join(f"{w}: {why}" for w, why in list(dropped.items())[:6])
        )
    gaps = tuple(
        (fam.name, survey.position_gap(kept_names + kept_objects, fam.name)) for fam in families
    )
    return RoleDesign(
        items=tuple(_build(kept_names, kept_objects, families, capitalize, alone)),
        names=kept_names,
        objects=kept_objects,
        families=tuple(families),
        dropped=tuple(dropped.items()),
        reduced=reduced,
        subtoken=subtoken,
        capitalize=capitalize,
        tokenizer=str(getattr(tokenizer, "name_or_path", type(tokenizer).__name__)),
        position_gaps=gaps,
    )


def _check_arguments(
    names: Sequence[str],
    objects: Sequence[str],
    families: Sequence[TemplateFamily],
    multi_token: str,
    subtoken: str,
) -> None:
    if multi_token not in ("drop", "reduce", "error"):
        raise ValueError(f"multi_token must be 'drop', 'reduce' or 'error', got {multi_token!r}")
    if subtoken not in ("first", "last", "mean"):
        raise ValueError(f"subtoken must be 'first', 'last' or 'mean', got {subtoken!r}")
    for fam in families:
        for template in (fam.subject, fam.object):
            if template.count("{W}") != 1:
                raise ValueError(f"template {template!r} of family {fam.name!r} needs one {{W}}")
    for label, words in (("names", names), ("objects", objects)):
        if len(set(words)) != len(words):
            raise ValueError(f"{label} contain duplicates")
    overlap = set(names) & set(objects)
    if overlap:
        raise ValueError(f"words listed both as names and objects: {sorted(overlap)}")


@dataclass(frozen=True)
class _Survey:
    """What the tokenizer makes of every word in every prompt: the words it does not know
    and the words it splits (each with why, in words), and where each word first sits in
    each family and role."""

    unknown: dict[str, str]
    split: dict[str, str]
    first_pos: dict[tuple[str, str, str], int]  # (word, family, role) -> first position

    def position_gap(self, words: Sequence[str], family: str) -> int:
        """The largest shift of a word's position between a family's two roles."""
        at = self.first_pos
        return max(abs(at[(w, family, "object")] - at[(w, family, "subject")]) for w in words)


def _survey(tokenizer: Tokenizer, items: Sequence[RoleItem]) -> _Survey:
    """Tokenize every item, refusing a template word the tokenizer does not know."""
    unknown_words: dict[str, str] = {}
    split: dict[str, str] = {}
    first_pos: dict[tuple[str, str, str], int] = {}
    for item in items:
        tp = tokenize_prompt(tokenizer, item.text)
        span = word_positions(tp, item.word, allow_unknown=True)  # dropped later, named
        unknown = unknown_tokens(tokenizer, tp)
        outside = [t for p, t in unknown if p not in span]
        if outside:
            raise ValueError(
                f"the tokenizer does not know {sorted(set(outside))} in template prompt "
                f"{item.text!r}; use templates made of words it knows"
            )
        first_pos[(item.lemma, item.family, item.role)] = span[0]
        if unknown and item.lemma not in unknown_words:
            hint = " (capitalised at a sentence start; try capitalize=False)"
            why = f"unknown to the tokenizer as {item.word!r}"
            unknown_words[item.lemma] = why + (hint if item.word != item.lemma else "")
        elif len(span) > 1 and item.lemma not in split:
            pieces = [tp.str_tokens[p] for p in span]
            split[item.lemma] = f"{len(span)} tokens {pieces!r} in {item.text!r}"
    return _Survey(unknown_words, split, first_pos)


def _resolve(
    survey: _Survey, multi_token: str, subtoken: str
) -> tuple[dict[str, str], tuple[str, ...]]:
    """The words dropped (with why) and those read by the sub-token rule, each set named
    in a warning; a split word under ``multi_token="error"`` is refused."""
    dropped, split = dict(survey.unknown), survey.split
    if multi_token == "error" and split:
        word, why = next(iter(split.items()))
        raise NotSingleTokenError(
            f"word {word!r} is not one token: {why} (and {len(split) - 1} more)"
        )
    reduced: tuple[str, ...] = ()
    if multi_token == "drop":
        for word, why in split.items():
            dropped.setdefault(word, f"split into {why}")
    else:
        reduced = tuple(w for w in split if w not in dropped)
    if dropped:
        warnings.warn(
            f"dropped {len(dropped)} word(s) from the design: "
            + "; ".join(f"{w}: {why}" for w, why in dropped.items()),
            UnknownWordWarning,
            stacklevel=3,
        )
    if reduced:
        warnings.warn(
            f"{len(reduced)} word(s) are several tokens and are read as the {subtoken} of "
            f"their sub-tokens: {', '.join(reduced)}",
            UnknownWordWarning,
            stacklevel=3,
        )
    return dropped, reduced


@dataclass(frozen=True)
class NameSwapPairs:
    """Each object word in a family's subject form, paired with the same prompt where a
    name stands in its place ("X had fun. Lamp went to the store." / "X had fun. Adam went
    to the store."): two prompt sets aligned token by token when both words are one token.

    Fields:
        objects, names: the prompts with the object word, and with the name instead.
        object_words, name_words: the word read in each (as it appears).
        family: the template family of each pair.
    """

    objects: tuple[str, ...]
    names: tuple[str, ...]
    object_words: tuple[str, ...]
    name_words: tuple[str, ...]
    family: tuple[str, ...]

    def of_family(self, family: str) -> NameSwapPairs:
        """The pairs of one family."""
        keep = [k for k, f in enumerate(self.family) if f == family]
        if not keep:
            raise ValueError(f"no pairs in family {family!r}; families: {sorted(set(self.family))}")
        return NameSwapPairs(
            *(tuple(getattr(self, f.name)[k] for k in keep) for f in dataclasses.fields(self))
        )


def name_swap_pairs(design: RoleDesign) -> NameSwapPairs:
    """For every object word and family of ``design``: its subject-form prompt, and that
    prompt with a name (never the family's context name) in the object's place; names are
    taken in turn so that each is used about equally."""
    fams = {f.name: f for f in design.families}
    rows = []
    k = 0
    for it in design.items:
        if it.word_type != "object" or it.role != "subject":
            continue
        pool = [n for n in design.names if n != it.context_name]
        name = pool[k % len(pool)]
        k += 1
        text = fams[it.family].subject.format(W=name, X=it.context_name)
        rows.append((it.text, text, it.word, name, it.family))
    return NameSwapPairs(*(tuple(r[i] for r in rows) for i in range(5)))
