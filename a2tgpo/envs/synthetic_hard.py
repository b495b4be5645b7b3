"""The entities and passages of the "hard" synthetic world: names that share words.

Same relations, passages and degree bounds as `synthetic_world.World` (at most 3
passages name any entity), but name words are shared, so a careless query
retrieves plausible wrong passages:

    people     "Vorn Kadel", "Vorn Ibez", "Lia Kadel"    each first name and each
                                                        surname is worn by `sharing` people
    cities     "Teslin Falls", "Teslin Harbor"          each stem names `sharing` cities;
                                                        the second word is a common one
    companies  "Brimex Labs", "Brimex Foods"            likewise, with sector words
    countries  "Marovia"                                unique words, as in the easy world

Only the full name pins the entity down. The word pools of the kinds are disjoint,
every full name is unique, no name's words are a subset of another name's, and no
passage names two entities whose words together cover a third one's name (a couple
"Vorn Ibez" + "Lia Tosk" while "Vorn Tosk" exists is never married), so the passages
containing every word of a name are exactly the passages naming that entity. BM25
with top-3 on the full name therefore returns the entity's own passages first
(checked by `tests/envs/test_synthetic_hard.py` on every ideal demonstration), while
a query of one name word also matches the passages of the entity's namesakes
(`namesakes`).
"""

from __future__ import annotations

import math
import random

from a2tgpo.envs.bm25 import tokenize
from a2tgpo.envs.synthetic_world import World, _Names

CITY_WORDS = ("Falls", "Harbor", "Springs", "Ridge", "Haven", "Crossing")
SECTOR_WORDS = ("Labs", "Foods", "Motors", "Media", "Mining", "Textiles")
_MAX_ATTEMPTS = 1000


def _pair_names(
    firsts: list[str], seconds: list[str], n: int, share: int, rng: random.Random
) -> list[str]:
    """n distinct "first second" names, each first word used by at most `share` names.

    With enough `seconds` for it (surnames), each is used at most `share` times too;
    otherwise (common words such as "Falls") each first word gets `share` distinct ones.
    """
    if len(seconds) * share < n:
        names = [f"{a} {b}" for a in firsts for b in rng.sample(seconds, min(share, len(seconds)))]
        rng.shuffle(names)
        return names[:n]
    a_slots = [w for w in firsts for _ in range(share)]
    b_slots = [w for w in seconds for _ in range(share)]
    for _ in range(_MAX_ATTEMPTS):
        rng.shuffle(a_slots)
        rng.shuffle(b_slots)
        names = [f"{a} {b}" for a, b in zip(a_slots[:n], b_slots[:n], strict=True)]
        if len(set(names)) == n:
            return names
    raise RuntimeError(f"could not draw {n} distinct names with name_sharing={share}")


class HardWorld(World):
    """A World whose names share words (see the module docstring)."""

    def __init__(self, seed: int, num_people: int, sharing: int = 2):
        if sharing < 1:
            raise ValueError(f"name sharing must be >= 1, got {sharing}")
        self.sharing = sharing
        super().__init__(seed, num_people)

    @staticmethod
    def _rng_name(seed: int) -> str:
        return f"a2tgpo-synthetic-hard-{seed}"

    def _name_entities(self, names: _Names, num_people: int) -> None:
        share, rng = self.sharing, names.rng
        names.used |= {w.lower() for w in CITY_WORDS + SECTOR_WORDS}
        n_first = math.ceil(num_people / share)
        firsts = [names.word(1 + rng.randint(0, 1)) for _ in range(n_first)]
        lasts = [names.word(2) for _ in range(n_first)]
        self.people = _pair_names(firsts, lasts, num_people, share, rng)
        num_cities = math.ceil(num_people / 2)
        stems = [names.word(2) for _ in range(math.ceil(num_cities / share))]
        self.cities = _pair_names(stems, list(CITY_WORDS), num_cities, share, rng)
        self.countries = [names.word(2, "ia") for _ in range(math.ceil(num_cities / 3))]
        num_companies = math.ceil(num_people / 2)
        stems = [names.word(2, "ex") for _ in range(math.ceil(num_companies / share))]
        self.companies = _pair_names(stems, list(SECTOR_WORDS), num_companies, share, rng)

    def _marry(self, singles: list[str], rng: random.Random) -> None:
        """Pair up the unmarried, never two namesakes, never a couple that spells a third name."""
        rng.shuffle(singles)
        words = {p: frozenset(tokenize(p)) for p in self.people}
        left = list(singles)
        while len(left) >= 2:
            a = left.pop(0)
            for i, b in enumerate(left):
                both = words[a] | words[b]
                if words[a] & words[b]:
                    continue
                if any(w <= both for p, w in words.items() if p not in (a, b)):
                    continue
                left.pop(i)
                facts = [(a, "spouse", b), (b, "spouse", a)]
                self._state(f"{a} is married to {b}.", a, facts)
                break

    def mentions(self) -> dict[str, int]:
        """How many passages contain every word of each entity's name (bounded by 3)."""
        words = [set(tokenize(p.text)) for p in self.passages]
        return {e: sum(w.issuperset(tokenize(e)) for w in words) for e in self.kind}

    def namesakes(self) -> dict[str, list[str]]:
        """Entities sharing at least one name word with each entity (its distractors)."""
        by_word: dict[str, list[str]] = {}
        for e in self.kind:
            for w in tokenize(e):
                by_word.setdefault(w, []).append(e)
        return {
            e: sorted({o for w in tokenize(e) for o in by_word[w] if o != e}) for e in self.kind
        }
