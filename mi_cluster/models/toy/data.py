"""The synthetic corpus the toy IOI model is trained on: deterministic, word-level.

Five kinds of sequences (see ``MODEL_CARD.md`` for why):
- "stories" (45%): 2-4 names where the answer (IO) is mentioned once and every other name
  two or three times, in shuffled clauses, ending "Then they gave a O to": no giver is
  named, so the repeated names can be told from IO only by their repetition;
- roll calls (20%): "Mary went . John went . Mary returned ." (the word after a name says
  whether it was seen before: the task that grows duplicate-token heads);
- standard IOI prompts in ABBA and BABA order over many templates (15%, only in the second
  half of the stream: "When Mary and John went to the store , John gave a lamp to" -> Mary);
- repeated random name sequences (10%: induction);
- simple subject-verb-object sentences with names and object nouns, objects also in
  subject position ("The lamp went to the store .") (10%).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from mi_cluster.core.ioi_prompts import IOIPrompt, Order, fill_template

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
    "that", "afterwards", "later", "so", "Afterwards", "Later", "So", "After", "returned",
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


def ioi_example(rng: random.Random, names: tuple[str, ...], templates: range) -> IOIPrompt:
    """One IOI prompt: two names, a template from ``templates``, ABBA or BABA order."""
    io, s = rng.sample(names, 2)
    t = rng.choice(list(templates))
    order: Order = rng.choice(["ABBA", "BABA"])
    text = fill_template(IOI_TEMPLATES[t], io, s, order, rng.choice(PLACES), rng.choice(OBJECTS))
    return IOIPrompt(text=text, io=io, s=s, template=t, order=order)


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
    """2-4 names; the answer (IO) is mentioned once, every other name two or three times,
    in shuffled clauses; the ending "Then they gave a O to" names no giver, so the only way
    to tell IO from the others is that they are repeated. In 40% of stories IO is the most
    recent name, so "suppress the last name" fails."""
    k = rng.choice([2, 2, 3, 3, 4])
    names = rng.sample(NAMES, k)
    io = names[0]
    mentions = [n for n in names[1:] for _ in range(rng.choice([2, 3]))]
    rng.shuffle(mentions)
    if rng.random() < 0.4:
        mentions.append(io)
    else:
        mentions.insert(rng.randrange(len(mentions) + 1), io)
    clauses = []
    i = 0
    while i < len(mentions):
        take = (
            2
            if i + 1 < len(mentions) and mentions[i] != mentions[i + 1] and rng.random() < 0.5
            else 1
        )
        subj = " and ".join(mentions[i : i + take])
        verb = "were" if take == 2 else "was"
        place = rng.choice(PLACES)
        forms = [
            f"{subj} {verb} at the {place}",
            f"{subj} went to the {place}",
            f"{subj} had lunch at the {place}",
            f"{subj} walked to the {place}",
        ]
        clauses.append(rng.choice(forms))
        i += take
    opener = rng.choice(["", "", "When ", "After ", "While "])
    body = opener + clauses[0] + "".join(f" , {rng.choice(CONNECTIVES)} {c}" for c in clauses[1:])
    rng.random()  # drawn and unused: keeps the corpus the shipped weights were trained on
    return f"{body} . Then they gave a {rng.choice(OBJECTS)} to", io


def _roll_call(rng: random.Random) -> str:
    """Texts with "N went ." on a name's first mention, "N returned ." on a repeat: predicting the
    word after each name needs "was this name seen before?" (a duplicate-token head)."""
    names = rng.sample(NAMES, rng.randint(2, 5))
    seen: set[str] = set()
    parts = []
    for _ in range(rng.randint(5, 12)):
        n = rng.choice(names)
        parts.append(f"{n} {'returned' if n in seen else 'went'} .")
        seen.add(n)
    return " ".join(parts)


def _repeated_sequence(rng: random.Random) -> str:
    n = rng.randint(4, 10)
    seq = [rng.choice(NAMES + OBJECTS) for _ in range(n)]
    return " ".join(seq + ["."] + seq)


def _sentence(rng: random.Random, exclude: frozenset = frozenset()) -> str:
    who = rng.choice([n for n in NAMES + UNSEEN_NAMES if n not in exclude])
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

    ioi: float = 0.15
    story: float = 0.45
    roll_call: float = 0.2
    repeat: float = 0.1
    sentence: float = 0.1
    # IOI prompts appear only after this fraction of the stream (stories take their place
    # before): the duplicate-token circuit the stories need forms first, and the IOI
    # prompts then reuse it instead of growing a "suppress the giver" shortcut.
    ioi_from: float = 0.5


def training_sequences(
    n: int, seed: int = 0, mixture: Mixture = Mixture()
) -> list[tuple[str, str | None]]:
    """``n`` training sequences ``(text, answer)``; ``answer`` is None for sequences trained
    only with the language-modelling loss. Deterministic in ``seed``."""
    rng = random.Random(seed)
    excluded = held_out_pairs()
    out: list[tuple[str, str | None]] = []
    for i in range(n):
        r = rng.random()
        if r < mixture.ioi and i < mixture.ioi_from * n:
            r = mixture.ioi + r / mixture.ioi * mixture.story  # a story instead
        if r < mixture.ioi:
            text, ans = _ioi_train(rng, excluded)
        elif r < mixture.ioi + mixture.story:
            text, ans = _story(rng)
        elif r < mixture.ioi + mixture.story + mixture.roll_call:
            text, ans = _roll_call(rng), None
        elif r < mixture.ioi + mixture.story + mixture.roll_call + mixture.repeat:
            text, ans = _repeated_sequence(rng), None
        else:
            text, ans = _sentence(rng), None
        if ans is not None and rng.random() < 0.5:  # filler before, so positions vary
            used = frozenset(text.split())  # filler names must not change the counts
            text = " ".join(_sentence(rng, used) for _ in range(rng.randint(1, 2))) + " " + text
        out.append((text, ans))
    return out


def eval_examples(kind: str, n: int = 400, seed: int = 123) -> list[IOIPrompt]:
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


def _rename(ex: IOIPrompt, io: str, s: str) -> IOIPrompt:
    words = [io if w == ex.io else s if w == ex.s else w for w in ex.text.split(" ")]
    return IOIPrompt(" ".join(words), io, s, ex.template, ex.order)


def training_texts(n: int, seed: int, max_tokens: int, tokenizer: Any) -> list[str]:
    """``n`` texts from the training distribution, answers appended, that fit in
    ``max_tokens`` tokens with a BOS (as the toy model was trained; longer ones dropped)."""
    texts = [t + (f" {a}" if a else "") for t, a in training_sequences(n, seed=seed)]
    lengths = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [t for t, ids in zip(texts, lengths, strict=True) if len(ids) + 1 <= max_tokens]
