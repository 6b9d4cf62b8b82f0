"""De-duplication: entries of several listings that are one paper become one :class:`Paper`."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Sequence

from fmbook.atlas.common import CHAPTER_ARXIV, CHAPTERS, AtlasError
from fmbook.atlas.parsing import Entry

def normalise(text: str) -> str:
    """Lower case, letters and digits only, single spaces: the key used to compare texts."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


ABSTRACT_KEY_CHARS = 200  # two abstracts whose normalised openings agree this far are one paper
SHINGLE_WORDS = 5
FUZZY_JACCARD = 0.2  # abstracts sharing this share of 5-word shingles are versions of one paper
MERGE_REASONS = ("arxiv", "title", "abstract", "fuzzy-abstract")


@dataclass
class Paper:
    """One paper after de-duplication."""

    paper_id: str
    title: str  # the display title (see ``title_missing``)
    abstract: str
    arxiv_id: str | None
    sources: tuple[str, ...]  # listings it appears in
    entries: tuple[Entry, ...] = field(repr=False)
    title_missing: bool = False  # no listing gives a title: the display title is made up from the abstract
    chapter: str | None = None  # the book's chapter id, for the seven reproduced papers
    created: str | None = None
    merged_by: tuple[str, ...] = ()  # why its entries were taken for one paper (MERGE_REASONS)
    other_titles: tuple[str, ...] = ()  # other titles the listings give it (earlier versions)

    @property
    def text(self) -> str:
        """What is embedded: title and abstract (the abstract alone when the title is missing)."""
        return self.abstract if self.title_missing else f"{self.title}. {self.abstract}"


def _keys(entry: Entry) -> list[tuple[str, str]]:
    keys = [("abstract", normalise(entry.abstract)[:ABSTRACT_KEY_CHARS])]
    if entry.arxiv_id:
        keys.append(("arxiv", entry.arxiv_id))
    if entry.title:
        keys.append(("title", normalise(entry.title)))
    return keys


def _shingles(text: str, k: int = SHINGLE_WORDS) -> set[tuple[str, ...]]:
    words = normalise(text).split()
    return {tuple(words[i:i + k]) for i in range(max(len(words) - k + 1, 0))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _untitled_label(abstract: str, words: int = 9) -> str:
    head = abstract.split()
    return "[untitled] " + " ".join(head[:words]) + ("…" if len(head) > words else "")


def deduplicate(entries: Sequence[Entry], fuzzy_jaccard: float | None = FUZZY_JACCARD) -> list[Paper]:
    """Merge entries that are one paper, and say why (``Paper.merged_by``).

    Two entries are one paper when they share an arXiv id, a normalised title, the normalised
    first :data:`ABSTRACT_KEY_CHARS` characters of the abstract, or (``fuzzy_jaccard``, None to
    turn off) at least that Jaccard overlap of 5-word shingles of their abstracts: a retitled
    version of a paper keeps most of its sentences, while two different papers of these listings
    share under 4 % (measured in ``notebooks/atlas/01_listings``). The merged paper takes its title
    from the first listing (in file order) that gives one, the longest abstract, and any arXiv id;
    papers keep the order of their first appearance.
    """
    if fuzzy_jaccard is not None and not 0.0 < fuzzy_jaccard <= 1.0:
        raise AtlasError(f"fuzzy_jaccard must be in (0, 1] or None, got {fuzzy_jaccard!r}")
    parent = list(range(len(entries)))
    reasons: dict[int, set[str]] = {}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int, reason: str) -> None:
        a, b = find(i), find(j)
        merged = reasons.pop(a, set()) | reasons.pop(b, set()) | {reason}
        root = min(a, b)
        if a != b:
            parent[max(a, b)] = root
        reasons[root] = merged

    owner: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(entries):
        for key in _keys(entry):
            if key in owner:
                union(owner[key], i, key[0])
            else:
                owner[key] = i
    if fuzzy_jaccard is not None:
        shingles = [_shingles(e.abstract) for e in entries]
        for i in range(len(entries)):
            for j in range(i + 1, len(entries)):
                if find(i) != find(j) and jaccard(shingles[i], shingles[j]) >= fuzzy_jaccard:
                    union(i, j, "fuzzy-abstract")
    groups: dict[int, list[int]] = {}
    for i in range(len(entries)):
        groups.setdefault(find(i), []).append(i)
    papers = []
    for root in sorted(groups):
        members = [entries[i] for i in groups[root]]
        titled = [e for e in members if e.title]
        arxiv = next((e.arxiv_id for e in members if e.arxiv_id), None)
        abstract = max((e.abstract for e in members), key=len)
        title = titled[0].title if titled else _untitled_label(abstract)
        if arxiv:
            pid = f"arXiv:{arxiv}"
        else:
            pid = "t:" + hashlib.sha1(normalise(title if titled else abstract).encode()).hexdigest()[:10]
        others = tuple(dict.fromkeys(e.title for e in titled[1:] if normalise(e.title) != normalise(title)))
        papers.append(Paper(
            paper_id=pid, title=title, abstract=abstract, arxiv_id=arxiv,
            sources=tuple(dict.fromkeys(e.source for e in members)), entries=tuple(members),
            title_missing=not titled, chapter=CHAPTER_ARXIV.get(arxiv or ""),
            created=next((e.created for e in members if e.created), None),
            merged_by=tuple(r for r in MERGE_REASONS if r in reasons.get(root, set())) if len(members) > 1 else (),
            other_titles=others))
    return papers


def duplicates_frame(papers: Sequence[Paper]):
    """The papers that were found more than once: where, and why they were merged."""
    import pandas as pd

    return pd.DataFrame([{"paper": p.title, "entries": len(p.entries),
                          "listings": ", ".join(f"{e.source}:{e.line}" for e in p.entries),
                          "merged by": ", ".join(p.merged_by),
                          "other titles": "; ".join(p.other_titles)}
                         for p in papers if len(p.entries) > 1],
                        columns=["paper", "entries", "listings", "merged by", "other titles"])


def max_cross_paper_jaccard(papers: Sequence[Paper]) -> float:
    """The largest abstract-shingle overlap between two *different* papers (the fuzzy rule's margin)."""
    shingles = [_shingles(p.abstract) for p in papers]
    best = 0.0
    for i in range(len(papers)):
        for j in range(i + 1, len(papers)):
            best = max(best, jaccard(shingles[i], shingles[j]))
    return best


def papers_frame(papers: Sequence[Paper]):
    """The papers as a table (one row per paper)."""
    import pandas as pd

    return pd.DataFrame([{
        "paper_id": p.paper_id, "title": p.title, "arxiv_id": p.arxiv_id,
        "chapter": p.chapter, "sources": ", ".join(p.sources), "n_listings": len(p.sources),
        "title_missing": p.title_missing, "abstract": p.abstract,
    } for p in papers])


def chapter_papers(papers: Sequence[Paper]) -> dict[str, int]:
    """Chapter id -> index of its paper in ``papers``; every chapter must be found."""
    found = {p.chapter: i for i, p in enumerate(papers) if p.chapter}
    missing = [c for c in CHAPTERS if c not in found]
    if missing:
        raise AtlasError(f"the papers of chapters {', '.join(missing)} are not in the listings "
                         f"(looked for arXiv ids {', '.join(a for a, c in CHAPTER_ARXIV.items() if c in missing)})")
    return {c: found[c] for c in CHAPTERS}

