"""The synthetic corpus the toy IOI model is trained on: deterministic, word-level.

Four kinds of sequences (see ``MODEL_CARD.md`` for why):
- standard IOI prompts in ABBA and BABA order over many templates
  ("When Mary and John went to the store , John gave a lamp to" -> Mary);
- "stories": 2-4 names where the answer (IO) is mentioned once and every other name two or
  three times, in shuffled clauses, so "the repeated name is the most recent" fails;
- repeated random name sequences (the second copy is predictable only by finding the
  earlier occurrence: the task that grows duplicate-token and induction heads);
- simple subject-verb-object sentences with names and object nouns, objects also in
  subject position ("The lamp went to the store .").
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES: tuple[str, ...] = (
    "Mary", "John", "Adam", "Eve", "Mark", "Emily", "Chris", "Diana", "Paul", "Sarah",
    "James", "Anna", "David", "Laura", "Peter", "Kate", "Tom", "Lucy", "Sam", "Alice",
    "Bob", "Claire", "Dan", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack", "Julia",
    "Kevin", "Lisa", "Mike", "Nina", "Oscar", "Rose", "Steve", "Tina", "Victor", "Wendy",
)  # fmt: skip
# Never used in IOI prompts or stories: their IOI accuracy measures generalisation to
# names the circuit never saw as IO/S (they do appear in plain sentences).
UNSEEN_NAMES: tuple[str, ...] = ("Zoe", "Yuri", "Xena", "Walt")
OBJECTS: tuple[str, ...] = (
    "lamp", "table", "house", "pen", "ball", "window", "chair", "book", "cup", "door",
    "bag", "box", "key", "hat", "ring", "drink", "gift", "letter", "phone", "apple",
)  # fmt: skip
PLACES: tuple[str, ...] = (
    "store",
    "park",
    "school",
    "office",
    "garden",
    "station",
    "beach",
    "market",
)
VERBS_GIVE: tuple[str, ...] = ("gave", "handed", "sent", "passed", "showed", "brought")
CONNECTIVES: tuple[str, ...] = ("then", "later", "so", "and", "after that", "afterwards")
FUNCTION_WORDS: tuple[str, ...] = (
    "When", "and", "went", "to", "the", "a", ",", ".", "Then", "The", "at", "were", "had",
    "fun", "long", "day", "lunch", "decided", "give", "said", "it", "they", "was", "saw",
    "liked", "found", "took", "in", "on", "with", "walked", "talked", "met", "while", "after",
    "that", "afterwards", "later", "so", "Afterwards", "Later", "So", "After",
)  # fmt: skip

# "{A}" and "{B}" are the two intro names, "{S}" the repeated subject. ABBA: A = IO, B = S;
# BABA: A = S, B = IO.
IOI_TEMPLATES: tuple[str, ...] = (
    "When {A} and {B} went to the {P} , {S} gave a {O} to",
    "When {A} and {B} went to the {P} , {S} handed a {O} to",
    "Then , {A} and {B} went to the {P} . {S} gave a {O} to",
    "Then , {A} and {B} had a long day at the {P} . {S} gave a {O} to",
    "After {A} and {B} went to the {P} , {S} gave a {O} to",
    "While {A} and {B} were at the {P} , {S} gave a {O} to",
    "When {A} and {B} had lunch at the {P} , {S} sent a {O} to",
    "After lunch , {A} and {B} went to the {P} . {S} passed a {O} to",
    "{A} and {B} were at the {P} . {S} decided to give a {O} to",
    "{A} and {B} met at the {P} . Then {S} gave a {O} to",
    "When {A} and {B} walked to the {P} , {S} showed a {O} to",
    "{A} and {B} talked at the {P} . Later {S} brought a {O} to",
    # held out from training (used only for evaluation):
    "When {A} and {B} had fun at the {P} , {S} gave a {O} to",
    "After {A} and {B} walked to the {P} , {S} handed a {O} to",
    "{A} and {B} went to the {P} . Afterwards {S} sent a {O} to",
)
N_TRAIN_TEMPLATES = 12


def vocabulary() -> list[str]:
    """Every word the tokenizer knows, in a fixed order."""
    words: list[str] = []
    for group in (NAMES, UNSEEN_NAMES, OBJECTS, PLACES, VERBS_GIVE, FUNCTION_WORDS):
        for w in group:
            for part in w.split():
                if part not in words:
                    words.append(part)
    return words


@dataclass(frozen=True)
class IOIExample:
    """One IOI prompt.

    Fields:
        text: the prompt, ending where the indirect object is predicted.
        io: the indirect object (the correct answer).
        s: the subject, the repeated name (the wrong answer).
        template: index into ``IOI_TEMPLATES``.
        order: ``"ABBA"`` or ``"BABA"``: whether IO or S is named first.
    """

    text: str
    io: str
    s: str
    template: int
    order: str


def ioi_example(rng: random.Random, names: tuple[str, ...], templates: range) -> IOIExample:
    io, s = rng.sample(names, 2)
    t = rng.choice(list(templates))
    order = rng.choice(["ABBA", "BABA"])
    a, b = (io, s) if order == "ABBA" else (s, io)
    text = IOI_TEMPLATES[t].format(A=a, B=b, S=s, P=rng.choice(PLACES), O=rng.choice(OBJECTS))
    return IOIExample(text=text, io=io, s=s, template=t, order=order)


def held_out_pairs(names: tuple[str, ...] = NAMES, fraction: float = 0.15, seed: int = 1) -> set:
    """(io, s) pairs never used in training IOI prompts, for evaluation."""
    rng = random.Random(seed)
    pairs = [(a, b) for a in names for b in names if a != b]
    rng.shuffle(pairs)
    return set(pairs[: int(len(pairs) * fraction)])


def _ioi_train(rng: random.Random, excluded: set) -> tuple[str, str]:
    while True:
        ex = ioi_example(rng, NAMES, range(N_TRAIN_TEMPLATES))
        if (ex.io, ex.s) not in excluded:
            return ex.text, ex.io


def _story(rng: random.Random) -> tuple[str, str]:
    k = rng.choice([2, 2, 3, 3, 4])
    names = rng.sample(NAMES, k)
    io = names[0]
    mentions = [io] + [n for n in names[1:] for _ in range(rng.choice([2, 3]))]
    rng.shuffle(mentions)
    clauses = []
    i = 0
    while i < len(mentions):
        take = (
            2
            if i + 1 < len(mentions) and mentions[i] != mentions[i + 1] and rng.random() < 0.5
            else 1
        )
        who = mentions[i : i + take]
        subj = " and ".join(who)
        verb = "were" if take == 2 else "was"
        clauses.append(f"{subj} {verb} at the {rng.choice(PLACES)}")
        i += take
    body = clauses[0] + "".join(f" , {rng.choice(CONNECTIVES)} {c}" for c in clauses[1:])
    others = names[1:]
    ending = rng.random()
    obj = rng.choice(OBJECTS)
    if ending < 0.6:
        giver = rng.choice(others)
        end = f"{giver} gave a {obj} to"
    elif ending < 0.8 and len(others) >= 2:
        g1, g2 = rng.sample(others, 2)
        end = f"{g1} and {g2} gave a {obj} to"
    else:
        end = f"they gave a {obj} to"
    return f"{body} . Then {end}", io


def _repeated_sequence(rng: random.Random) -> str:
    n = rng.randint(4, 10)
    seq = [rng.choice(NAMES + OBJECTS) for _ in range(n)]
    return " ".join(seq + ["."] + seq)


def _sentence(rng: random.Random) -> str:
    who = rng.choice(NAMES + UNSEEN_NAMES)
    obj = rng.choice(OBJECTS)
    forms = [
        f"{who} went to the {rng.choice(PLACES)} .",
        f"{who} saw the {obj} .",
        f"{who} took the {obj} to the {rng.choice(PLACES)} .",
        f"The {obj} was in the {rng.choice(PLACES)} .",
        f"The {obj} went to the {rng.choice(PLACES)} .",
        f"{obj.capitalize()} went to the {rng.choice(PLACES)} .",
        f"{who} liked the {obj} .",
    ]
    return rng.choice(forms)


@dataclass(frozen=True)
class Mixture:
    """Fractions of each sequence kind in the training stream."""

    ioi: float = 0.3
    story: float = 0.4
    repeat: float = 0.2
    sentence: float = 0.1


def training_sequences(
    n: int, seed: int = 0, mixture: Mixture = Mixture()
) -> list[tuple[str, str | None]]:
    """``n`` training sequences ``(text, answer)``; ``answer`` is None for sequences trained
    only with the language-modelling loss. Deterministic in ``seed``."""
    rng = random.Random(seed)
    excluded = held_out_pairs()
    out: list[tuple[str, str | None]] = []
    for _ in range(n):
        r = rng.random()
        if r < mixture.ioi:
            text, ans = _ioi_train(rng, excluded)
        elif r < mixture.ioi + mixture.story:
            text, ans = _story(rng)
        elif r < mixture.ioi + mixture.story + mixture.repeat:
            text, ans = _repeated_sequence(rng), None
        else:
            text, ans = _sentence(rng), None
        if ans is not None and rng.random() < 0.5:  # filler before, so positions vary
            text = " ".join(_sentence(rng) for _ in range(rng.randint(1, 2))) + " " + text
        out.append((text, ans))
    return out


def eval_examples(kind: str, n: int = 400, seed: int = 123) -> list[IOIExample]:
    """Evaluation IOI prompts: ``"held_out_pairs"`` (training templates, name pairs never
    trained), ``"held_out_templates"`` (the last templates, any trained pair) or
    ``"unseen_names"`` (names never seen in IOI prompts)."""
    rng = random.Random(seed)
    if kind == "held_out_pairs":
        pairs = sorted(held_out_pairs())
        out = []
        for _ in range(n):
            io, s = rng.choice(pairs)
            out.append(_rename(ioi_example(rng, NAMES, range(N_TRAIN_TEMPLATES)), io, s))
        return out
    if kind == "held_out_templates":
        return [
            ioi_example(rng, NAMES, range(N_TRAIN_TEMPLATES, len(IOI_TEMPLATES))) for _ in range(n)
        ]
    if kind == "unseen_names":
        return [ioi_example(rng, UNSEEN_NAMES, range(N_TRAIN_TEMPLATES)) for _ in range(n)]
    raise ValueError(f"unknown evaluation set {kind!r}")


def _rename(ex: IOIExample, io: str, s: str) -> IOIExample:
    words = [io if w == ex.io else s if w == ex.s else w for w in ex.text.split(" ")]
    return IOIExample(" ".join(words), io, s, ex.template, ex.order)
