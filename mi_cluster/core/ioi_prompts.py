"""Indirect-object-identification (IOI) prompts for any tokenizer (Wang et al. 2022).

"Then, Mary and John went to the store. John gave a drink to" -> " Mary": the indirect
object (IO) is the name mentioned once; the subject (S) is mentioned twice (S1, S2).

One template format serves the paper's distribution, the shipped toy model's and the
compiled model's vocabulary-constrained ones: ``{A}`` and ``{B}`` are the two names of the
first clause, ``{S}`` the repeated subject, ``{P}`` a place, ``{O}`` an object. In ABBA
order A is IO and B is S; in BABA order A is S and B is IO. A prompt ends where IO is
predicted. Names are checked to be single tokens with a leading space for the tokenizer
(an error lists every one that is not). Corruptions: ABC (the three name mentions replaced
by three other names: no name repeats) and the name flip (S2 replaced by IO, so the
repeated name, and the answer, change).

The paper's templates, names, places and objects are the data of its released dataset
(Redwood Research's ``ioi_dataset.py``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
from torch import Tensor

from mi_cluster.core.prompts import (
    NotSingleTokenError,
    TokenizedPrompt,
    get_tokenizer,
    single_token_id,
    tokenize_prompt,
    word_positions,
)
from mi_cluster.core.protocols import HookedModel, Tokenizer

__all__ = [
    "NAMES",
    "OBJECTS",
    "PLACES",
    "TEMPLATES",
    "IOIPositions",
    "IOIPrompt",
    "abc_corruption",
    "check_names",
    "fill_template",
    "ioi_positions",
    "ioi_prompts",
    "locate",
    "name_flip",
    "replace_subject",
]

# The paper's 15 templates, in this module's format (ABBA / BABA from the order).
TEMPLATES: tuple[str, ...] = (
    "Then, {A} and {B} went to the {P}. {S} gave a {O} to",
    "Then, {A} and {B} had a lot of fun at the {P}. {S} gave a {O} to",
    "Then, {A} and {B} were working at the {P}. {S} decided to give a {O} to",
    "Then, {A} and {B} were thinking about going to the {P}. {S} wanted to give a {O} to",
    "Then, {A} and {B} had a long argument, and afterwards {S} said to",
    "After {A} and {B} went to the {P}, {S} gave a {O} to",
    "When {A} and {B} got a {O} at the {P}, {S} decided to give it to",
    "When {A} and {B} got a {O} at the {P}, {S} decided to give the {O} to",
    "While {A} and {B} were working at the {P}, {S} gave a {O} to",
    "While {A} and {B} were commuting to the {P}, {S} gave a {O} to",
    "After the lunch, {A} and {B} went to the {P}. {S} gave a {O} to",
    "Afterwards, {A} and {B} went to the {P}. {S} gave a {O} to",
    "Then, {A} and {B} had a long argument. Afterwards {S} said to",
    "The {P} {A} and {B} went to had a {O}. {S} gave it to",
    "Friends {A} and {B} found a {O} at the {P}. {S} gave it to",
)
NAMES: tuple[str, ...] = (
    "Aaron", "Adam", "Alan", "Alex", "Alice", "Amy", "Anderson", "Andre", "Andrew", "Andy",
    "Anna", "Anthony", "Arthur", "Austin", "Blake", "Brandon", "Brian", "Carter", "Charles",
    "Charlie", "Christian", "Christopher", "Clark", "Cole", "Collins", "Connor", "Crew",
    "Crystal", "Daniel", "David", "Dean", "Edward", "Elizabeth", "Emily", "Eric", "Eva",
    "Ford", "Frank", "George", "Georgia", "Graham", "Grant", "Henry", "Ian", "Jack", "Jacob",
    "Jake", "James", "Jamie", "Jane", "Jason", "Jay", "Jennifer", "Jeremy", "Jessica", "John",
    "Jonathan", "Jordan", "Joseph", "Joshua", "Justin", "Kate", "Kelly", "Kevin", "Kyle",
    "Laura", "Leon", "Lewis", "Lisa", "Louis", "Luke", "Madison", "Marco", "Marcus", "Maria",
    "Mark", "Martin", "Mary", "Matthew", "Max", "Michael", "Michelle", "Morgan", "Patrick",
    "Paul", "Peter", "Prince", "Rachel", "Richard", "River", "Robert", "Roman", "Rose", "Ruby",
    "Russell", "Ryan", "Sarah", "Scott", "Sean", "Simon", "Stephen", "Steven", "Sullivan",
    "Taylor", "Thomas", "Tyler", "Victoria", "Warren", "William",
)  # fmt: skip
PLACES: tuple[str, ...] = (
    "store", "garden", "restaurant", "school", "hospital", "office", "house", "station",
)  # fmt: skip
OBJECTS: tuple[str, ...] = (
    "ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack",
)  # fmt: skip

Order = Literal["ABBA", "BABA"]


@dataclass(frozen=True)
class IOIPrompt:
    """An IOI prompt: ``text`` ends where ``io`` (correct) or ``s`` (wrong) comes next.

    Fields:
        text: the prompt.
        io: the indirect object (the answer).
        s: the subject (repeated in a clean prompt).
        template: index of its template in the list it was made from (-1: unknown).
        order: ``"ABBA"`` (IO named first) or ``"BABA"``, or ``""``.
    """

    text: str
    io: str
    s: str
    template: int = -1
    order: str = ""


def fill_template(
    template: str, io: str, s: str, order: Order, place: str = "", obj: str = ""
) -> str:
    """A template filled: ``{A}``/``{B}`` from ``order``, ``{S}`` = ``s``."""
    if order not in ("ABBA", "BABA"):
        raise ValueError(f"order must be 'ABBA' or 'BABA', got {order!r}")
    a, b = (io, s) if order == "ABBA" else (s, io)
    return template.format(A=a, B=b, S=s, P=place, O=obj)


def check_names(model_or_tokenizer: HookedModel | Tokenizer, names: Sequence[str]) -> None:
    """Every name must be one token with a leading space (as it is predicted after
    "... gave a drink to"); the error lists all that are not, with their tokens."""
    tokenizer = get_tokenizer(model_or_tokenizer)
    bad = []
    for name in names:
        ids = tokenizer(" " + name, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            bad.append(f"{name} -> {[tokenizer.decode([i]) for i in ids]}")
    if bad:
        raise NotSingleTokenError(
            f"{len(bad)} of {len(names)} names are not single tokens with a leading space for "
            f"this tokenizer: {'; '.join(bad)}. Drop them from the name list."
        )


def ioi_prompts(
    model_or_tokenizer: HookedModel | Tokenizer,
    n: int,
    *,
    templates: Sequence[str] = TEMPLATES,
    names: Sequence[str] = NAMES,
    places: Sequence[str] = PLACES,
    objects: Sequence[str] = OBJECTS,
    seed: int = 0,
) -> list[IOIPrompt]:
    """``n`` IOI prompts: for each, a random template, both orders alternating (ABBA,
    BABA, ...), two different names, a place and an object. Names are checked for the
    tokenizer first."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if len(set(names)) < 3:
        raise ValueError("need at least 3 different names (the ABC corruption uses a third)")
    check_names(model_or_tokenizer, names)
    rng = random.Random(seed)
    out = []
    for k in range(n):
        t = rng.randrange(len(templates))
        io, s = rng.sample(list(names), 2)
        order: Order = "ABBA" if k % 2 == 0 else "BABA"
        text = fill_template(
            templates[t], io, s, order, rng.choice(list(places)), rng.choice(list(objects))
        )
        out.append(IOIPrompt(text, io, s, t, order))
    return out


def abc_corruption(
    prompts: Sequence[IOIPrompt], names: Sequence[str] = NAMES, seed: int = 0
) -> list[IOIPrompt]:
    """The paper's ABC distribution: IO, S1 and S2 replaced by three different names that
    are not in the prompt, so no name repeats. The result keeps the clean prompt's ``io``
    and ``s`` (the answers a metric compares), at the same token positions."""
    rng = random.Random(seed)
    out = []
    for p in prompts:
        x, y, z = rng.sample([m for m in names if m not in (p.io, p.s)], 3)
        text = _replace_words(p.text, {(p.io, 0): x, (p.s, 0): y, (p.s, 1): z})
        out.append(replace(p, text=text))
    return out


def name_flip(prompts: Sequence[IOIPrompt]) -> list[IOIPrompt]:
    """S2 replaced by IO: the repeated name is now IO, so the answer flips to S (the
    result keeps the clean ``io`` and ``s``; its correct answer is ``s``)."""
    return [replace(p, text=_replace_words(p.text, {(p.s, 1): p.io})) for p in prompts]


def _replace_words(text: str, new: dict[tuple[str, int], str]) -> str:
    """Replace the ``k``-th whole-word occurrence of ``name`` by ``new[(name, k)]``
    (punctuation attached to the word is kept)."""
    words = text.split(" ")
    seen: dict[str, int] = {}
    for i, w in enumerate(words):
        core = w.rstrip(",.")
        k = seen.get(core, 0)
        seen[core] = k + 1
        if (core, k) in new:
            words[i] = new[(core, k)] + w[len(core) :]
    missing = [key for key in new if seen.get(key[0], 0) <= key[1]]
    if missing:
        raise ValueError(f"{text!r} has no occurrence {missing[0][1]} of {missing[0][0]!r}")
    return " ".join(words)


def replace_subject(prompt: IOIPrompt, mention: str, name: str) -> IOIPrompt:
    """The prompt with S's first (``"s1"``) or last (``"s2"``) mention replaced by
    ``name``: S is then no longer repeated (the S-inhibition and duplicate-head tests'
    corruption)."""
    if mention not in ("s1", "s2"):
        raise ValueError(f"mention must be 's1' or 's2', not {mention!r}")
    count = sum(1 for w in prompt.text.split(" ") if w.rstrip(",.") == prompt.s)
    if count == 0:
        raise ValueError(f"subject {prompt.s!r} is not a word of {prompt.text!r}")
    k = 0 if mention == "s1" else count - 1
    return replace(prompt, text=_replace_words(prompt.text, {(prompt.s, k): name}))


@dataclass(frozen=True)
class IOIPositions:
    """Token positions in each prompt (BOS = 0).

    Fields:
        io: the indirect object's mention.
        s1: the subject's first mention; ``s1 + 1`` is where induction heads look.
        s2: the subject's last mention.
        end: the last token, where the answer is predicted (as patching metrics read
            ``"last"``; BERT's is its ``[SEP]``).
        io_id, s_id: the token ids of the two names as the model would predict them.
    """

    io: Tensor
    s1: Tensor
    s2: Tensor
    end: Tensor
    io_id: Tensor
    s_id: Tensor

    @property
    def s1_next(self) -> Tensor:
        """The token after S1 (where induction heads look)."""
        return self.s1 + 1

    def repeat(self, k: int) -> IOIPositions:
        """The positions of the prompts repeated ``k`` times (a batch tiled ``k`` times)."""
        return IOIPositions(**{f.name: getattr(self, f.name).repeat(k) for f in fields(self)})


def locate(
    model: HookedModel, prompts: Sequence[IOIPrompt], repeated: bool = True
) -> tuple[IOIPositions, list[TokenizedPrompt]]:
    """Tokenize the prompts and find IO, S1, S2 and END in each (both names must be
    single tokens; with ``repeated``, S must occur twice)."""
    cols: dict[str, list[int]] = {k: [] for k in ("io", "s1", "s2", "end", "io_id", "s_id")}
    tokenized = []
    for p in prompts:
        tp = tokenize_prompt(model, p.text)
        tokenized.append(tp)
        for name, occ, key in ((p.io, 0, "io"), (p.s, 0, "s1"), (p.s, -1, "s2")):
            pos = word_positions(tp, name, occ)
            if len(pos) != 1:
                raise NotSingleTokenError(
                    f"name {name!r} is not a single token in prompt {p.text!r}: it tokenizes as "
                    f"{[tp.str_tokens[i] for i in pos]!r}"
                )
            cols[key].append(pos[0])
        if repeated and cols["s1"][-1] == cols["s2"][-1]:
            raise ValueError(f"subject {p.s!r} is mentioned only once in {p.text!r}")
        cols["end"].append(len(tp) - 1)
        cols["io_id"].append(single_token_id(model, p.io))
        cols["s_id"].append(single_token_id(model, p.s))
    return IOIPositions(**{k: torch.tensor(v) for k, v in cols.items()}), tokenized


def ioi_positions(
    model: HookedModel, prompts: Sequence[IOIPrompt], repeated: bool = True
) -> IOIPositions:
    """IO, S1, S2 and END of each prompt (BOS-aware); see :func:`locate`."""
    return locate(model, prompts, repeated)[0]
