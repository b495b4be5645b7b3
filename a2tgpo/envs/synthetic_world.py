"""The entities, facts and passages of a synthetic world (questions live in `synthetic.py`).

Entity kinds: people ("Vorn Kadel"), cities ("Teslin"), countries ("Marovia"),
companies ("Brimex"). Every name token is a made-up syllable word used by
exactly one entity, so a BM25 query made of a name matches only the passages
that mention that entity.

Relations, each stated by one short passage titled by the sentence's subject:

    born_in(person) -> city         "Vorn Kadel was born in Teslin."
    works_for(person) -> company    "Vorn Kadel works for Brimex."
    spouse(person) -> person        "Vorn Kadel is married to Lia Dorum."   (both ways)
    founded_by(company) -> person   "Brimex was founded by Vorn Kadel."
    located_in(city) -> country     "Teslin is a city in Marovia."
    capital_of(country) -> city     "Teslin is the capital of Marovia."     (also located_in)

Degrees are bounded by construction so that searching an entity's name with
top-3 always returns the passage of any of its facts: each entity is named in
at most 3 passages. A person: born_in, works_for and either spouse or
founded_by (founders are unmarried). A city: its own passage and at most 2
births. A country: at most 3 cities. A company: founded_by and at most 2
employees. Hence 1 city per 2 people, 1 country per 3 cities, 1 company per 2
people.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from a2tgpo.envs.bm25 import tokenize
from a2tgpo.envs.retrievers import Passage

MAX_MENTIONS = 3  # passages naming any one entity; retrieval with topk >= this is exact

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "tr"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["", "", "n", "r", "l", "s", "m", "k"]
_RESERVED = {"born", "works", "married", "founded", "city", "capital", "doc", "title"}


@dataclass(frozen=True)
class Fact:
    """relation(subject) = object, and the passage that states it."""

    subject: str
    relation: str
    object: str
    passage: Passage


class _Names:
    """Unique pronounceable words: no word token is ever reused across entities."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int = 2, suffix: str = "") -> str:
        while True:
            parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables)]
            w = ("".join(parts) + self.rng.choice(_CODAS) + suffix).capitalize()
            key = w.lower()
            if key not in self.used and key not in _RESERVED and len(tokenize(key)) == 1:
                self.used.add(key)
                return w

    def person(self) -> str:
        return f"{self.word(1 + self.rng.randint(0, 1))} {self.word(2)}"


def _deal(items: list[str], bins: list[str], capacity: int, rng: random.Random) -> dict[str, str]:
    """Assign each item to a bin, no bin receiving more than `capacity` items."""
    slots = [b for b in bins for _ in range(capacity)]
    rng.shuffle(slots)
    return dict(zip(items, slots, strict=False))


class World:
    """Entities and facts, deterministic by seed. `facts[(subject, relation)]` is the Fact."""

    def __init__(self, seed: int, num_people: int):
        if num_people < 4:
            raise ValueError("a synthetic world needs at least 4 people")
        rng = random.Random(self._rng_name(seed))
        self._name_entities(_Names(rng), num_people)
        self.kind = {e: "person" for e in self.people}
        self.kind |= {e: "city" for e in self.cities}
        self.kind |= {e: "country" for e in self.countries}
        self.kind |= {e: "company" for e in self.companies}
        self.facts: dict[tuple[str, str], Fact] = {}
        self.passages: list[Passage] = []
        self._relate(rng)
        rng.shuffle(self.passages)  # corpus order carries no hint of the structure

    @staticmethod
    def _rng_name(seed: int) -> str:
        return f"a2tgpo-synthetic-{seed}"

    def _name_entities(self, names: _Names, num_people: int) -> None:
        """Name people, cities, countries and companies (a subclass may share name words)."""
        self.people = [names.person() for _ in range(num_people)]
        num_cities = math.ceil(num_people / 2)
        self.cities = [names.word(2) for _ in range(num_cities)]
        self.countries = [names.word(2, "ia") for _ in range(math.ceil(num_cities / 3))]
        self.companies = [names.word(2, "ex") for _ in range(math.ceil(num_people / 2))]

    def _state(self, text: str, title: str, facts: list[tuple[str, str, str]]) -> None:
        passage = Passage(text=text, title=title)
        self.passages.append(passage)
        for subject, relation, obj in facts:
            self.facts[(subject, relation)] = Fact(subject, relation, obj, passage)

    def _relate(self, rng: random.Random) -> None:
        city_of = _deal(self.cities, self.countries, 3, rng)
        for country in self.countries:
            capital = rng.choice(sorted(c for c in self.cities if city_of[c] == country))
            for city in (c for c in self.cities if city_of[c] == country):
                if city == capital:
                    facts = [(city, "located_in", country), (country, "capital_of", city)]
                    self._state(f"{city} is the capital of {country}.", city, facts)
                else:
                    facts = [(city, "located_in", country)]
                    self._state(f"{city} is a city in {country}.", city, facts)
        birth = _deal(self.people, self.cities, 2, rng)
        employer = _deal(self.people, self.companies, 2, rng)
        for p in self.people:
            self._state(f"{p} was born in {birth[p]}.", p, [(p, "born_in", birth[p])])
            self._state(f"{p} works for {employer[p]}.", p, [(p, "works_for", employer[p])])
        founders = rng.sample(self.people, len(self.companies))
        for company, founder in zip(self.companies, founders, strict=True):
            facts = [(company, "founded_by", founder)]
            self._state(f"{company} was founded by {founder}.", company, facts)
        self._marry([p for p in self.people if p not in set(founders)], rng)

    def _marry(self, singles: list[str], rng: random.Random) -> None:
        """Pair up the unmarried people (one passage per couple, titled by the first)."""
        rng.shuffle(singles)
        for a, b in zip(singles[0::2], singles[1::2], strict=False):
            facts = [(a, "spouse", b), (b, "spouse", a)]
            self._state(f"{a} is married to {b}.", a, facts)

    def mentions(self) -> dict[str, int]:
        """How many passages name each entity (bounded by MAX_MENTIONS)."""
        counts = dict.fromkeys(self.kind, 0)
        owner = {token: e for e in self.kind for token in tokenize(e)}  # tokens are unique
        for p in self.passages:
            words = set(tokenize(p.text))
            for entity in {owner[w] for w in words if w in owner}:
                counts[entity] += words.issuperset(tokenize(entity))
        return counts
