"""The related-work atlas: where the seven reproduced papers sit among ~300 neighbouring papers.

Pipeline (each step a plain function, the notebooks of ``notebooks/atlas/`` only call them):

1. :func:`parse_listings` reads the seed listings (``data/seeds/*.txt``) into entries, one per paper
   *per listing*, and reports every line it skipped or repaired (:class:`Issue`): nothing is
   dropped silently. Three layouts occur and are detected per file (:func:`detect_format`):
   ``collection`` (markdown with ``## Title`` and ``<details>`` abstracts: the seven papers),
   ``arxiv`` (abstract, comments, ``arXiv:ID``, ``Created:``; no titles) and ``title-abstract``
   (a title line, then its abstract line, with a little web-page boilerplate around).
2. :func:`deduplicate` merges entries that are the same paper (same arXiv id, same normalised title
   or same normalised abstract opening) into one table of papers (:func:`papers_frame`).
3. The texts are embedded by :mod:`fmbook.core.text_encoder`; :func:`choose_k` picks the number of
   k-means clusters by silhouette, :func:`stability` measures how much the clustering depends on
   the seed (adjusted Rand index), :func:`cluster_names` names clusters by class-based TF-IDF,
   :func:`project_2d` draws the map, :func:`chapter_neighbours` lists each chapter's neighbours.
4. :func:`atlas_html` renders the interactive map and table (SVG drawn in Python, so hover titles
   and the table work without JavaScript; a small inline script adds search, click-to-highlight
   and sorting), and :func:`write_related_includes` writes the "related work in this collection"
   lists for the chapters' landing pages.

Abstracts are quoted from the listings; the book presents them as quotations, never as its prose.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

# --------------------------------------------------------------------------------------------------
# The seven reproduced papers: arXiv id -> chapter id (the papers of seeds/000_*.txt)
# --------------------------------------------------------------------------------------------------

CHAPTER_ARXIV: dict[str, str] = {
    "2307.11760": "emotion_prompt",
    "2312.11111": "emotion_v2",
    "2402.10946": "culture_llm",
    "2309.17002": "nmtune",
    "2310.05143": "zoopfl",
    "2304.01457": "imbalance",
    "2302.13485": "fedclip",
}
CHAPTERS: tuple[str, ...] = tuple(CHAPTER_ARXIV.values())

FORMATS = ("collection", "arxiv", "title-abstract")

# Lines of the web pages the listings were copied from; skipped and reported as boilerplate.
BOILERPLATE = (
    "new",
    "get trending papers in your email inbox!",
    "get trending papers in your email inbox once a day!",
    "subscribe",
    "byak and the research community",
)
GLUED_PREFIXES = ("Subscribe",)  # boilerplate that lost its line break and sticks to a title
_DATE_LINE = re.compile(r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{1,2}$")
_ARXIV_LINE = re.compile(r"^arXiv:(\d{4}\.\d{4,5})(v\d+)?\s*$")
_ARXIV_URL = re.compile(r"arxiv\.org/(?:abs|pdf)/(\d{4}\.\d{4,5})")
_CREATED_LINE = re.compile(r"^Created:\s*(\d{4}-\d{2}-\d{2})\s*$")

MIN_ABSTRACT_CHARS = 250  # a line this long is an abstract; shorter lines are titles (or junk)


class AtlasError(ValueError):
    """Bad input to the atlas: unknown file, format, parameter value or chapter."""


@dataclass(frozen=True)
class Entry:
    """One paper as found in one listing (before de-duplication)."""

    source: str  # file name of the listing
    line: int  # 1-based line of the entry's first line (its title, or its abstract if untitled)
    title: str | None
    abstract: str
    arxiv_id: str | None = None
    created: str | None = None  # submission date where the listing gives one
    comments: str | None = None  # e.g. "18 pages, 6 figures"


@dataclass(frozen=True)
class Issue:
    """Something in a listing that is not a clean entry: what it was and what the parser did."""

    source: str
    line: int
    kind: str  # boilerplate | glued-boilerplate | no-abstract | missing-title | abstract-without-title | possibly-truncated
    action: str  # skipped | repaired | kept
    text: str  # the offending line (shortened)
    detail: str = ""


@dataclass
class ParsedListing:
    source: str
    format: str
    entries: list[Entry]
    issues: list[Issue]


@dataclass
class ParseResult:
    """All listings of a folder: entries per file and everything the parser had to say."""

    listings: list[ParsedListing]

    @property
    def entries(self) -> list[Entry]:
        return [e for listing in self.listings for e in listing.entries]

    @property
    def issues(self) -> list[Issue]:
        return [i for listing in self.listings for i in listing.issues]

    def counts(self) -> dict[str, int]:
        return {listing.source: len(listing.entries) for listing in self.listings}

    def counts_frame(self):
        import pandas as pd

        rows = []
        for listing in self.listings:
            kinds = Counter(i.action for i in listing.issues)
            rows.append({"listing": listing.source, "format": listing.format,
                         "entries": len(listing.entries),
                         "with arXiv id": sum(e.arxiv_id is not None for e in listing.entries),
                         "without title": sum(e.title is None for e in listing.entries),
                         "lines skipped": kinds.get("skipped", 0),
                         "entries repaired": kinds.get("repaired", 0),
                         "flagged (kept)": kinds.get("kept", 0)})
        return pd.DataFrame(rows)

    def issues_frame(self, short: bool = False):
        """Every issue; ``short`` shows file prefixes and clips texts (for display)."""
        import pandas as pd

        frame = pd.DataFrame([asdict(i) for i in self.issues],
                             columns=["source", "line", "kind", "action", "text", "detail"])
        if short:
            frame["source"] = frame["source"].str.slice(0, 3)
            frame["text"] = frame["text"].map(lambda t: _short(t, 48))
        return frame


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _looks_complete(abstract: str) -> bool:
    """An abstract that ends a sentence (or with a URL, as many do) looks complete."""
    end = abstract.rstrip()
    if end[-1:] in '.!?)"\'”’' or end.endswith((".$", ".}")):
        return True
    last = end.split()[-1] if end.split() else ""
    return "/" in last or last.startswith("http") or ".com" in last or ".io" in last


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------

def detect_format(text: str) -> str:
    """``collection`` | ``arxiv`` | ``title-abstract`` (see the module docstring)."""
    lines = text.splitlines()
    if any(l.startswith("## ") for l in lines) and "<summary>Abstract</summary>" in text:
        return "collection"
    if any(_ARXIV_LINE.match(l.strip()) for l in lines):
        return "arxiv"
    return "title-abstract"


def _parse_collection(source: str, text: str) -> ParsedListing:
    lines = text.splitlines()
    entries: list[Entry] = []
    issues: list[Issue] = []
    starts = [i for i, l in enumerate(lines) if l.startswith("## ")]
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        block = lines[start:end]
        title = block[0][3:].strip()
        body = "\n".join(block)
        match = re.search(r"<summary>\s*Abstract\s*</summary>(.*?)</details>", body, flags=re.S)
        arxiv = _ARXIV_URL.search(body)
        if not match or not match.group(1).strip():
            issues.append(Issue(source, start + 1, "no-abstract", "skipped", _short(title),
                                "section has no <details> abstract"))
            continue
        abstract = " ".join(match.group(1).split())
        entries.append(Entry(source, start + 1, title, abstract, arxiv.group(1) if arxiv else None))
    return ParsedListing(source, "collection", entries, issues)


def _parse_arxiv(source: str, text: str) -> ParsedListing:
    """Records of: abstract paragraph, optional comment lines, ``arXiv:ID``, ``Created: DATE``."""
    entries: list[Entry] = []
    issues: list[Issue] = []
    block: list[tuple[int, str]] = []

    def close(block: list[tuple[int, str]]) -> None:
        longs = [(n, l) for n, l in block if len(l) >= MIN_ABSTRACT_CHARS]
        arxiv = next((m.group(1) for _, l in block if (m := _ARXIV_LINE.match(l))), None)
        created = next((m.group(1) for _, l in block if (m := _CREATED_LINE.match(l))), None)
        comments = [l for _, l in block if len(l) < MIN_ABSTRACT_CHARS
                    and not _ARXIV_LINE.match(l) and not _CREATED_LINE.match(l)]
        if not longs:
            issues.append(Issue(source, block[0][0], "no-abstract", "skipped", _short(block[0][1]),
                                "record without an abstract paragraph"))
            return
        line, abstract = longs[0]
        if len(longs) > 1:
            abstract = " ".join(l for _, l in longs)
        issues.append(Issue(source, line, "missing-title", "kept", _short(abstract),
                            f"arXiv:{arxiv}; no title here (one from a duplicate elsewhere is used)"))
        entries.append(Entry(source, line, None, abstract, arxiv, created,
                             "; ".join(comments) or None))

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        block.append((number, line))
        if _CREATED_LINE.match(line):
            close(block)
            block = []
    if block:
        close(block)
    return ParsedListing(source, "arxiv", entries, issues)


def _parse_title_abstract(source: str, text: str) -> ParsedListing:
    entries: list[Entry] = []
    issues: list[Issue] = []
    pending: tuple[int, str] | None = None  # a title waiting for its abstract
    for number, raw in enumerate(text.splitlines(), start=1):
        line = " ".join(raw.split())
        if not line:
            continue
        if line.lower() in BOILERPLATE or _DATE_LINE.match(line):
            issues.append(Issue(source, number, "boilerplate", "skipped", line,
                                "web-page furniture"))
            continue
        for prefix in GLUED_PREFIXES:
            rest = line[len(prefix):]
            if line.startswith(prefix) and rest[:1].isupper() and len(line) < MIN_ABSTRACT_CHARS:
                issues.append(Issue(source, number, "glued-boilerplate", "repaired", _short(line),
                                    f"removed {prefix!r} stuck to the start of the title"))
                line = rest
        if len(line) >= MIN_ABSTRACT_CHARS:
            if pending is None:
                issues.append(Issue(source, number, "abstract-without-title", "kept", _short(line),
                                    "abstract with no title line before it"))
                entries.append(Entry(source, number, None, line))
            else:
                entries.append(Entry(source, pending[0], pending[1], line))
                pending = None
            continue
        if pending is not None:
            issues.append(Issue(source, pending[0], "no-abstract", "skipped", _short(pending[1]),
                                "short line with no abstract after it (a heading, or a title "
                                "missing its abstract)"))
        pending = (number, line)
    if pending is not None:
        issues.append(Issue(source, pending[0], "no-abstract", "skipped", _short(pending[1]),
                            "last line of the file is not followed by an abstract"))
    return ParsedListing(source, "title-abstract", entries, issues)


_PARSERS = {"collection": _parse_collection, "arxiv": _parse_arxiv,
            "title-abstract": _parse_title_abstract}


def parse_listing(path: str | Path, fmt: str | None = None) -> ParsedListing:
    """Parse one listing file; ``fmt`` forces a layout (one of :data:`FORMATS`)."""
    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"listing {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    fmt = fmt or detect_format(text)
    if fmt not in _PARSERS:
        raise AtlasError(f"unknown listing format {fmt!r}; allowed: {', '.join(FORMATS)}")
    listing = _PARSERS[fmt](path.name, text)
    flagged = [Issue(path.name, e.line, "possibly-truncated", "kept", _short(e.abstract[-90:]),
                     "abstract does not end a sentence")
               for e in listing.entries if not _looks_complete(e.abstract)]
    listing.issues.extend(flagged)
    listing.issues.sort(key=lambda i: i.line)
    return listing


def seeds_dir() -> Path:
    """The book's own copy of the seed listings (``data/seeds``)."""
    from fmbook.core.paths import repo_root

    root = repo_root()
    candidates = [root / "data" / "seeds"] if root is not None else []
    candidates.append(Path(__file__).resolve().parent / "_data" / "seeds")
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise AtlasError("cannot find the seed listings (data/seeds); set FMBOOK_ROOT to the book's "
                     "repository root")


def parse_listings(folder: str | Path | None = None, pattern: str = "[0-9][0-9][0-9]_*.txt") -> ParseResult:
    """Parse every listing in ``folder`` (default :func:`seeds_dir`), in file-name order."""
    folder = Path(folder) if folder is not None else seeds_dir()
    files = sorted(folder.glob(pattern))
    if not files:
        raise AtlasError(f"no listings matching {pattern!r} in {folder}")
    return ParseResult([parse_listing(f) for f in files])


# --------------------------------------------------------------------------------------------------
# De-duplication
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Configuration of the analysis
# --------------------------------------------------------------------------------------------------

CLUSTERERS = ("kmeans", "agglomerative")
PROJECTIONS = ("tsne", "pca")
TEXT_FIELDS = ("title+abstract", "abstract")


@dataclass(frozen=True)
class AtlasConfig:
    """Everything that determines the atlas; the defaults are the ``local`` profile's values."""

    encoder: str = "all-MiniLM-L6-v2"  # offline asset name, or a hub id (full profile)
    text: str = "title+abstract"  # what is embedded: "title+abstract" | "abstract"
    max_seq_length: int | None = None  # word pieces the encoder reads (None: its own, 256 for MiniLM)
    batch_size: int = 32  # texts per encoder batch
    max_papers: int | None = None  # None: all; n: the seven chapter papers + the first n - 7 others
    clusterer: str = "kmeans"  # "kmeans" (on L2-normalised vectors) | "agglomerative" (Ward)
    k_min: int = 3  # smallest number of clusters tried
    k_max: int = 16  # largest number of clusters tried; k is the one with the best silhouette
    n_init: int = 10  # k-means restarts per fit
    stability_seeds: int = 10  # k-means seeds compared pairwise (adjusted Rand index)
    subsample_rounds: int = 10  # re-clusterings of random subsets, compared with the full clustering
    subsample_fraction: float = 0.8  # share of the papers in each subset
    projection: str = "tsne"  # "tsne" (cosine, PCA init) | "pca": the 2-D map
    perplexity: float = 30.0  # t-SNE perplexity (capped at (n - 1) / 3)
    n_neighbours: int = 10  # neighbours listed per chapter paper
    n_terms: int = 3  # distinctive terms in a cluster's name
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> AtlasError:
            return AtlasError(f"AtlasConfig.{name}={getattr(self, name)!r}; allowed: {allowed}")

        if self.text not in TEXT_FIELDS:
            raise bad("text", ", ".join(TEXT_FIELDS))
        if self.clusterer not in CLUSTERERS:
            raise bad("clusterer", ", ".join(CLUSTERERS))
        if self.projection not in PROJECTIONS:
            raise bad("projection", ", ".join(PROJECTIONS))
        if not 2 <= self.k_min <= self.k_max:
            raise bad("k_min", f"2 <= k_min <= k_max (k_max={self.k_max})")
        for name in ("batch_size", "n_init", "stability_seeds", "n_neighbours", "n_terms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "a positive int")
        if self.stability_seeds < 2:
            raise bad("stability_seeds", "an int >= 2 (ARI compares pairs of seeds)")
        if not 0.0 < self.subsample_fraction < 1.0:
            raise bad("subsample_fraction", "a float in (0, 1)")
        if self.max_papers is not None and self.max_papers < len(CHAPTERS) + self.k_max:
            raise bad("max_papers", f"None or an int >= {len(CHAPTERS) + self.k_max} (the seven "
                      "chapter papers plus at least k_max others)")
        if self.max_seq_length is not None and self.max_seq_length < 8:
            raise bad("max_seq_length", "None or an int >= 8")


def select_papers(papers: Sequence[Paper], max_papers: int | None) -> list[Paper]:
    """All papers, or (smoke) the seven chapter papers plus the first others in listing order."""
    if max_papers is None or max_papers >= len(papers):
        return list(papers)
    chosen = [p for p in papers if p.chapter]
    others = [p for p in papers if not p.chapter][: max_papers - len(chosen)]
    keep = {id(p) for p in chosen + others}
    return [p for p in papers if id(p) in keep]


def paper_texts(papers: Sequence[Paper], text: str = "title+abstract") -> list[str]:
    if text not in TEXT_FIELDS:
        raise AtlasError(f"text={text!r}; allowed: {', '.join(TEXT_FIELDS)}")
    return [p.text if text == "title+abstract" else p.abstract for p in papers]


# --------------------------------------------------------------------------------------------------
# Clustering, its stability, names, the 2-D map and neighbours
# --------------------------------------------------------------------------------------------------

def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def cluster(x: np.ndarray, k: int, method: str = "kmeans", seed: int = 0, n_init: int = 10) -> np.ndarray:
    """Cluster labels 0..k-1 of the L2-normalised rows of ``x`` (numbered by descending size)."""
    from sklearn.cluster import AgglomerativeClustering, KMeans

    if method not in CLUSTERERS:
        raise AtlasError(f"unknown clusterer {method!r}; allowed: {', '.join(CLUSTERERS)}")
    if not 2 <= k < len(x):
        raise AtlasError(f"k={k} must be at least 2 and below the number of points ({len(x)})")
    u = _unit(x)
    if method == "kmeans":
        labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(u)
    else:
        labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(u)
    # renumber by size (largest first, ties by first appearance) so labels do not depend on the seed
    sizes = Counter(labels.tolist())
    first = {lab: i for i, lab in reversed(list(enumerate(labels.tolist())))}
    order = sorted(sizes, key=lambda lab: (-sizes[lab], first[lab]))
    remap = {old: new for new, old in enumerate(order)}
    return np.array([remap[lab] for lab in labels.tolist()], dtype=int)


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(_unit(x), labels, metric="cosine"))


def choose_k(x: np.ndarray, k_min: int, k_max: int, method: str = "kmeans", seed: int = 0,
             n_init: int = 10):
    """Silhouette (cosine) for every k in [k_min, k_max]; returns (best k, table of the sweep)."""
    import pandas as pd

    k_max = min(k_max, len(x) - 1)
    if k_min > k_max:
        raise AtlasError(f"k range [{k_min}, {k_max}] is empty for {len(x)} points")
    rows = []
    for k in range(k_min, k_max + 1):
        labels = cluster(x, k, method, seed, n_init)
        sizes = np.bincount(labels)
        rows.append({"k": k, "silhouette": silhouette(x, labels), "smallest cluster": int(sizes.min()),
                     "largest cluster": int(sizes.max())})
    table = pd.DataFrame(rows)
    best = int(table.loc[table["silhouette"].idxmax(), "k"])
    return best, table


@dataclass
class Stability:
    seed_ari: list[float]  # ARI of every pair of seeds
    subsample_ari: list[float]  # ARI of each subset's clustering with the full one, on the subset

    @property
    def seed_ari_mean(self) -> float:
        return float(np.mean(self.seed_ari))

    @property
    def seed_ari_min(self) -> float:
        return float(np.min(self.seed_ari))

    @property
    def subsample_ari_mean(self) -> float:
        return float(np.mean(self.subsample_ari)) if self.subsample_ari else float("nan")

    @property
    def subsample_ari_std(self) -> float:
        return float(np.std(self.subsample_ari)) if self.subsample_ari else float("nan")


def stability(x: np.ndarray, k: int, method: str = "kmeans", seeds: Iterable[int] = range(10),
              n_init: int = 10, subsample_rounds: int = 10, subsample_fraction: float = 0.8,
              seed: int = 0, reference: np.ndarray | None = None) -> Stability:
    """How much the clustering depends on chance, as adjusted Rand indices (1 = identical).

    * seeds: cluster with each seed, ARI of every pair (agglomerative clustering has no seed: 1.0);
    * subsamples: cluster a random ``subsample_fraction`` of the papers, compare with the full
      clustering (``reference``, default the one with ``seed``) on those papers.
    """
    from itertools import combinations

    from sklearn.metrics import adjusted_rand_score

    seeds = list(seeds)
    runs = [cluster(x, k, method, s, n_init) for s in seeds]
    seed_ari = [float(adjusted_rand_score(a, b)) for a, b in combinations(runs, 2)]
    reference = cluster(x, k, method, seed, n_init) if reference is None else reference
    rng = np.random.default_rng(seed)
    n_sub = int(round(subsample_fraction * len(x)))
    sub_ari = []
    for _ in range(subsample_rounds):
        idx = np.sort(rng.choice(len(x), size=n_sub, replace=False))
        sub = cluster(x[idx], k, method, int(rng.integers(1 << 31)), n_init)
        sub_ari.append(float(adjusted_rand_score(reference[idx], sub)))
    return Stability(seed_ari, sub_ari)


GENERIC_WORDS = frozenset("""
paper propose proposed proposes present presents introduce introduces method methods approach
approaches framework result results show shows shown demonstrate demonstrates based using use used
new novel work works study studies existing significant significantly achieve achieves achieved
state art various different including furthermore however address addresses extensive experiments
experimental effective effectively improve improves improved performance comprehensive recent recently
challenges challenge potential key able enable enables learning model models task tasks
""".split())


def _stems(term: str) -> set[str]:
    """Words of a term with a plural 's' removed, to tell 'llm' and 'llms' apart from new terms."""
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in term.split()}


def cluster_terms(texts: Sequence[str], labels: np.ndarray, n_terms: int = 3, max_df: float = 0.5):
    """The most distinctive terms of each cluster: mean TF-IDF inside minus mean TF-IDF outside.

    Uni- and bigrams of the texts (English and generic paper-writing stop words removed), seen in at
    least two papers and in at most ``max_df`` of them. Returns {cluster: [(term, score), ...]}.
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

    stop = sorted(set(ENGLISH_STOP_WORDS) | GENERIC_WORDS)
    vec = TfidfVectorizer(stop_words=stop, ngram_range=(1, 2), min_df=2, max_df=max_df,
                          sublinear_tf=True, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z0-9\-]+\b")
    tfidf = vec.fit_transform(texts)
    vocab = np.array(vec.get_feature_names_out())
    labels = np.asarray(labels)
    out: dict[int, list[tuple[str, float]]] = {}
    for c in sorted(set(labels.tolist())):
        inside = np.asarray(tfidf[labels == c].mean(axis=0)).ravel()
        outside = np.asarray(tfidf[labels != c].mean(axis=0)).ravel() if (labels != c).any() else 0.0
        score = inside - outside
        chosen: list[tuple[str, float]] = []
        for j in np.argsort(-score):
            term = vocab[j]
            words = _stems(term)
            if any(words <= _stems(t) or _stems(t) <= words for t, _ in chosen):
                continue  # "federated" after "federated learning", or the reverse
            chosen.append((term, float(score[j])))
            if len(chosen) == n_terms:
                break
        out[c] = chosen
    return out


def cluster_names(terms: dict[int, list[tuple[str, float]]]) -> dict[int, str]:
    return {c: " · ".join(t for t, _ in ts) for c, ts in terms.items()}


def project_2d(x: np.ndarray, method: str = "tsne", seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D coordinates of the L2-normalised rows, deterministic for a seed; scaled to [0, 1]."""
    from sklearn.decomposition import PCA

    u = _unit(x)
    if method == "pca":
        xy = PCA(n_components=2, random_state=seed).fit_transform(u)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perp = float(min(perplexity, max((len(u) - 1) / 3.0, 2.0)))
        xy = TSNE(n_components=2, perplexity=perp, metric="cosine", init="pca", random_state=seed,
                  learning_rate="auto").fit_transform(u)
    else:
        raise AtlasError(f"unknown projection {method!r}; allowed: {', '.join(PROJECTIONS)}")
    xy = xy - xy.min(axis=0)
    span = xy.max(axis=0)
    return xy / np.where(span == 0, 1.0, span)


def similarity_matrix(x: np.ndarray) -> np.ndarray:
    u = _unit(x)
    return u @ u.T


def nearest(sim: np.ndarray, i: int, n: int) -> list[tuple[int, float]]:
    """The ``n`` rows most similar to row ``i`` (itself excluded), best first, ties by index."""
    row = np.asarray(sim[i], dtype=np.float64).copy()
    row[i] = -np.inf
    order = np.lexsort((np.arange(len(row)), -row))[:n]
    return [(int(j), float(row[j])) for j in order]


def chapter_neighbours(papers: Sequence[Paper], sim: np.ndarray, n: int = 10,
                       labels: np.ndarray | None = None, names: dict[int, str] | None = None):
    """For each of the seven chapters: its ``n`` nearest papers with cosine similarity (a table)."""
    import pandas as pd

    rows = []
    for chapter, i in chapter_papers(papers).items():
        for rank, (j, s) in enumerate(nearest(sim, i, n), start=1):
            p = papers[j]
            rows.append({"chapter": chapter, "rank": rank, "similarity": round(s, 4), "title": p.title,
                         "arxiv_id": p.arxiv_id, "paper_id": p.paper_id,
                         "is_chapter_paper": p.chapter,
                         "cluster": names.get(int(labels[j])) if names and labels is not None else None})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# The whole analysis in one call
# --------------------------------------------------------------------------------------------------

@dataclass
class AtlasResult:
    papers: list[Paper]
    vectors: np.ndarray = field(repr=False)
    k: int
    k_sweep: Any = field(repr=False)  # DataFrame: k, silhouette, cluster sizes
    labels: np.ndarray = field(repr=False)
    silhouette: float
    stability: Stability
    terms: dict[int, list[tuple[str, float]]]
    names: dict[int, str]
    xy: np.ndarray = field(repr=False)  # (n, 2) in [0, 1]
    sim: np.ndarray = field(repr=False)  # cosine similarities
    neighbours: Any = field(repr=False)  # DataFrame of chapter_neighbours
    config: AtlasConfig

    def cluster_table(self):
        import pandas as pd

        chapters = {}
        for p, lab in zip(self.papers, self.labels):
            if p.chapter:
                chapters.setdefault(int(lab), []).append(p.chapter)
        sizes = Counter(self.labels.tolist())
        return pd.DataFrame([{"cluster": c, "name": self.names[c], "papers": sizes[c],
                              "chapters in it": ", ".join(chapters.get(c, [])),
                              "terms (score)": ", ".join(f"{t} ({s:.3f})" for t, s in self.terms[c])}
                             for c in sorted(self.names)])

    def related(self) -> dict[str, list[dict[str, Any]]]:
        """Chapter id -> its neighbours as plain dicts (what the landing pages list)."""
        out: dict[str, list[dict[str, Any]]] = {c: [] for c in CHAPTERS}
        for row in self.neighbours.to_dict("records"):
            clean = {k: row[k] for k in ("rank", "similarity", "title", "arxiv_id", "paper_id",
                                         "is_chapter_paper", "cluster")}
            for key in ("arxiv_id", "is_chapter_paper", "cluster"):
                if not isinstance(clean[key], str):
                    clean[key] = None  # pandas turns a missing string into NaN
            clean["rank"], clean["similarity"] = int(clean["rank"]), float(clean["similarity"])
            out[row["chapter"]].append(clean)
        return out


def build_atlas(papers: Sequence[Paper], vectors: np.ndarray, config: AtlasConfig = AtlasConfig(),
                k: int | None = None) -> AtlasResult:
    """Choose k (unless given), cluster, measure stability, name clusters, project, find neighbours."""
    vectors = np.asarray(vectors)
    if len(vectors) != len(papers):
        raise AtlasError(f"{len(vectors)} vectors for {len(papers)} papers")
    if k is None:
        k, sweep = choose_k(vectors, config.k_min, config.k_max, config.clusterer, config.seed, config.n_init)
    else:
        sweep = None
    labels = cluster(vectors, k, config.clusterer, config.seed, config.n_init)
    stab = stability(vectors, k, config.clusterer, range(config.seed, config.seed + config.stability_seeds),
                     config.n_init, config.subsample_rounds, config.subsample_fraction, config.seed, labels)
    terms = cluster_terms(paper_texts(papers, config.text), labels, config.n_terms)
    names = cluster_names(terms)
    xy = project_2d(vectors, config.projection, config.seed, config.perplexity)
    sim = similarity_matrix(vectors)
    neighbours = chapter_neighbours(papers, sim, config.n_neighbours, labels, names)
    return AtlasResult(list(papers), vectors, k, sweep, labels, silhouette(vectors, labels), stab, terms,
                       names, xy, sim, neighbours, config)


def near_duplicates(papers: Sequence[Paper], sim: np.ndarray, threshold: float = 0.95):
    """Pairs of *different* papers whose embeddings are at least ``threshold`` similar (a check on
    the de-duplication: reported, never merged)."""
    import pandas as pd

    iu = np.triu_indices(len(papers), k=1)
    hits = np.where(np.asarray(sim)[iu] >= threshold)[0]
    rows = [{"similarity": round(float(sim[iu[0][h], iu[1][h]]), 4), "paper A": papers[iu[0][h]].title,
             "paper B": papers[iu[1][h]].title} for h in hits]
    return pd.DataFrame(rows, columns=["similarity", "paper A", "paper B"]).sort_values(
        "similarity", ascending=False, ignore_index=True)


def plot_k_sweep(sweep, k: int, ax=None):
    """Silhouette against the number of clusters, the chosen k marked."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.2))
    ax.plot(sweep["k"], sweep["silhouette"], marker="o")
    best = sweep.loc[sweep["k"] == k, "silhouette"].iloc[0]
    ax.scatter([k], [best], s=120, facecolors="none", edgecolors="C3", linewidths=2, zorder=3,
               label=f"chosen k = {k}")
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel("silhouette (cosine)")
    ax.set_xticks(list(sweep["k"]))
    ax.legend(loc="best")
    return ax.figure


def plot_map(result: "AtlasResult", ax=None, label_chapters: bool = True):
    """The 2-D map as a static figure: papers coloured by cluster, the seven chapter papers labelled."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 5.6))
    xy, labels = result.xy, result.labels
    for c in sorted(result.names):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=14, color=PALETTE[c % len(PALETTE)], alpha=0.8,
                   label=f"{result.names[c]} ({int(m.sum())})", linewidths=0)
    for i, p in enumerate(result.papers):
        if p.chapter:
            ax.scatter(xy[i, 0], xy[i, 1], s=90, color=PALETTE[int(labels[i]) % len(PALETTE)],
                       edgecolors="black", linewidths=1.5, zorder=3)
            if label_chapters:
                ax.annotate(CHAPTER_LABELS.get(p.chapter, p.chapter), (xy[i, 0], xy[i, 1]),
                            xytext=(6, 6), textcoords="offset points", fontsize=8, weight="bold")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{result.config.projection} 1")
    ax.set_ylabel(f"{result.config.projection} 2")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title="cluster")
    return ax.figure


# --------------------------------------------------------------------------------------------------
# The interactive map and table (static HTML + a small inline script; no network)
# --------------------------------------------------------------------------------------------------

# Colour-blind-friendly qualitative palette (Okabe-Ito, then Tableau 10 for more clusters).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
           "#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1", "#FF9DA7",
           "#9C755F", "#BAB0AC", "#8CD17D", "#86BCB6")
CHAPTER_LABELS = {"emotion_prompt": "EmotionPrompt", "emotion_v2": "EmotionPrompt V2",
                  "culture_llm": "CultureLLM", "nmtune": "NMTune", "zoopfl": "ZooPFL",
                  "imbalance": "Imbalanced VLMs", "fedclip": "FedCLIP"}


def _asset_text(name: str) -> str:
    return (Path(__file__).resolve().parent / "atlas_assets" / name).read_text(encoding="utf-8")


def _json_for_script(data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _chapter_labels(papers: Sequence[Paper], xs: np.ndarray, ys: np.ndarray, width: int,
                    height: int) -> list[str]:
    """SVG labels of the chapter papers, each placed where it overlaps no label placed before."""
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for i, p in enumerate(papers):
        if not p.chapter:
            continue
        text = CHAPTER_LABELS.get(p.chapter, p.chapter)
        w, h = 6.6 * len(text) + 4, 14.0
        best = None
        for dx, dy in ((9, -8), (9, 16), (-9, -8), (-9, 16), (9, -22), (-9, -22), (9, 30), (-9, 30)):
            x0 = xs[i] + dx if dx > 0 else xs[i] + dx - w
            y0 = ys[i] + dy - h + 3
            box = (x0, y0, x0 + w, y0 + h)
            inside = box[0] >= 0 and box[2] <= width and box[1] >= 0 and box[3] <= height
            clash = any(not (box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3]) for b in placed)
            if inside and not clash:
                best = (dx, dy, box)
                break
            if best is None and inside:
                best = (dx, dy, box)
        if best is None:
            best = (9, -8, (xs[i] + 9, ys[i] - 19, xs[i] + 9 + w, ys[i] - 5))
        dx, dy, box = best
        placed.append(box)
        anchor = "start" if dx > 0 else "end"
        out.append(f'<text class="atl-lab" x="{xs[i] + dx:.1f}" y="{ys[i] + dy:.1f}" '
                   f'text-anchor="{anchor}">{html.escape(text)}</text>')
    return out


def atlas_html(result: AtlasResult, width: int = 760, height: int = 560, n_neighbours: int | None = None,
               element_id: str | None = None, include_script: bool = True) -> str:
    """The interactive atlas as one HTML fragment (for ``IPython.display.HTML``).

    * an SVG map drawn here: one circle per paper, coloured by cluster, the seven chapter papers
      ringed and labelled; each circle carries an SVG ``<title>`` (hover shows the title even
      without JavaScript);
    * a search box (words in title or abstract, all must match), a chapter picker, a cluster
      legend (click to filter), an info panel (abstract quoted, ten nearest neighbours);
    * a table of all papers, sortable by any column, filtered by the same search;
    * the data as JSON and the script (``atlas_assets/atlas.js``), inline: nothing is fetched.
    """
    papers, labels = result.papers, result.labels
    n_nb = n_neighbours or result.config.n_neighbours
    pad = 18
    xs = pad + result.xy[:, 0] * (width - 2 * pad)
    ys = pad + (1.0 - result.xy[:, 1]) * (height - 2 * pad)
    colours = {c: PALETTE[c % len(PALETTE)] for c in result.names}
    uid = element_id or "atl-" + hashlib.sha1(
        json.dumps([p.paper_id for p in papers] + result.labels.tolist()).encode()).hexdigest()[:10]
    data = {
        "papers": [{"t": p.title, "a": p.abstract, "c": int(lab), "x": round(float(x), 1),
                    "y": round(float(y), 1), "arxiv": p.arxiv_id, "src": ", ".join(s.split("_")[0] for s in p.sources),
                    "ch": p.chapter} for p, lab, x, y in zip(papers, labels, xs, ys)],
        "clusters": [{"name": result.names[c], "color": colours[c]} for c in sorted(result.names)],
        "nb": [[[j, round(s, 3)] for j, s in nearest(result.sim, i, n_nb)] for i in range(len(papers))],
        "chapters": {p.chapter: i for i, p in enumerate(papers) if p.chapter},
    }
    esc = html.escape
    circles = []
    order = sorted(range(len(papers)), key=lambda i: papers[i].chapter is not None)  # chapter papers on top
    for i in order:
        p = papers[i]
        cls = "atl-pt atl-ch" if p.chapter else "atl-pt"
        r = 7 if p.chapter else 4.2
        tab = ' tabindex="0"' if p.chapter else ""
        circles.append(f'<circle class="{cls}" data-i="{i}" cx="{xs[i]:.1f}" cy="{ys[i]:.1f}" r="{r}" '
                       f'fill="{colours[int(labels[i])]}"{tab}><title>{esc(p.title)}</title></circle>')
    labels_svg = _chapter_labels(papers, xs, ys, width, height)
    sizes = Counter(labels.tolist())
    legend = "".join(f'<li data-c="{c}" title="show only this cluster (click again for all)">'
                     f'<span class="atl-swatch" style="background:{colours[c]}"></span>'
                     f'<span>{esc(result.names[c])} <span class="atl-note">({sizes[c]})</span></span></li>'
                     for c in sorted(result.names))
    options = "".join(f'<option value="{c}">{esc(CHAPTER_LABELS.get(c, c))} ({c})</option>'
                      for c in CHAPTERS if c in data["chapters"])
    rows = []
    for i, (p, lab) in enumerate(zip(papers, labels)):
        link = (f'<a href="https://arxiv.org/abs/{esc(p.arxiv_id)}" target="_blank" rel="noopener">'
                f'{esc(p.arxiv_id)}</a>') if p.arxiv_id else ""
        chapter = esc(CHAPTER_LABELS.get(p.chapter, "")) if p.chapter else ""
        rows.append(f'<tr data-i="{i}"><td data-v="{i}">{i + 1}</td><td>{esc(p.title)}</td>'
                    f'<td data-v="{int(lab):03d}"><span class="atl-swatch" style="background:{colours[int(lab)]}"></span> '
                    f'{esc(result.names[int(lab)])}</td><td>{chapter}</td>'
                    f'<td>{esc(", ".join(s.split("_")[0] for s in p.sources))}</td><td>{link}</td></tr>')
    cfg = result.config
    caption = (f"{len(papers)} papers, embedded with {esc(cfg.encoder)}, {result.k} {esc(cfg.clusterer)} clusters, "
               f"2-D map by {esc(cfg.projection)} (seed {cfg.seed}). Distances on the map are only roughly "
               "faithful; the neighbour lists use the cosine similarity of the full embeddings.")
    parts = [
        f'<div class="fmbook-atlas" id="{uid}">',
        f"<style>{_asset_text('atlas.css')}</style>",
        '<div class="atl-controls">',
        '<input type="search" class="atl-search" placeholder="Search words in titles and abstracts…" '
        'aria-label="Search words in titles and abstracts">',
        f'<select class="atl-chapter" aria-label="Highlight a chapter paper and its neighbours">'
        f'<option value="">Highlight a chapter’s neighbours…</option>{options}</select>',
        '<button type="button" class="atl-reset">Reset</button>',
        f'<span class="atl-count" aria-live="polite">{len(papers)} papers</span>',
        "</div>",
        '<div class="atl-body">',
        f'<svg class="atl-map" viewBox="0 0 {width} {height}" role="img" aria-label="Map of {len(papers)} papers">',
        '<g class="atl-edges"></g><g class="atl-points">', *circles, "</g>",
        '<g class="atl-labels">', *labels_svg, "</g></svg>",
        '<div class="atl-side"><ul class="atl-legend">', legend, "</ul>",
        '<div class="atl-info"><p class="atl-note">Hover a point for its title. The search, the chapter '
        "picker and click-to-highlight need JavaScript; the table below works without it.</p></div></div>",
        "</div>",
        f'<p class="atl-note">{caption}</p>',
        '<div class="atl-tooltip" hidden></div>',
        f'<details class="atl-tablewrap" open><summary>All {len(papers)} papers (click a column to sort, '
        "a row to show the paper on the map)</summary>",
        '<div class="atl-scroll"><table class="atl-table"><thead><tr>'
        '<th data-type="num">#</th><th>Title</th><th>Cluster</th><th>Chapter</th><th>Listings</th>'
        "<th>arXiv</th></tr></thead><tbody>", *rows, "</tbody></table></div></details>",
        f'<script type="application/json" class="atl-data">{_json_for_script(data)}</script>',
    ]
    if include_script:
        parts.append(f"<script>{_asset_text('atlas.js')}</script>")
    parts.append("</div>")
    return "\n".join(parts)


def standalone_html(result: AtlasResult, title: str = "Related-work atlas") -> str:
    """A complete HTML page holding :func:`atlas_html` (for the browser tests and for sharing)."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'</head><body><h1>{html.escape(title)}</h1>\n{atlas_html(result)}\n</body></html>\n')


# --------------------------------------------------------------------------------------------------
# "Related work in this collection" on the landing pages of the seven chapters
# --------------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|$~])")


def md_escape(text: str) -> str:
    """Backslash-escape Markdown punctuation so a title is rendered literally by MyST."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def related_markdown(chapter: str, rows: Sequence[dict[str, Any]] | None, n: int = 5,
                     atlas_doc: str | None = None, chapter_docs: dict[str, str] | None = None,
                     encoder: str | None = None, profile: str | None = None) -> str:
    """The Markdown of one chapter's "related work in this collection" list.

    ``rows``: that chapter's entries of :meth:`AtlasResult.related` (None: the atlas has not been
    run, and the text says so). ``atlas_doc``: the atlas page's docname relative to the landing
    page (linked with ``{doc}``); ``chapter_docs``: chapter id -> docname, to link a neighbour that
    is itself a chapter of the book. Only names given here are linked, so a build with ``-n`` never
    sees a dangling reference.
    """
    if chapter not in CHAPTERS:
        raise AtlasError(f"unknown chapter {chapter!r}; allowed: {', '.join(CHAPTERS)}")
    atlas_ref = f"{{doc}}`related-work atlas <{atlas_doc}>`" if atlas_doc else "related-work atlas"
    header = "% generated by fmbook.atlas.write_related_includes from the atlas results; do not edit by hand\n"
    if not rows:
        return header + (f"*The {atlas_ref} has not been run for this build, so there is no list of related "
                         "papers yet (run `python -m fmbook run atlas`).*\n")
    how = f"cosine similarity of {encoder} embeddings of title and abstract" if encoder else "cosine similarity"
    lines = [header, f"The {min(n, len(rows))} papers of the {atlas_ref} closest to this chapter's paper "
             f"({how}{f', profile {profile}' if profile else ''}):", ""]
    for row in list(rows)[:n]:
        title = md_escape(str(row["title"]))
        arxiv = row.get("arxiv_id")
        item = f"*{title}*"
        if arxiv:
            item += f" ([arXiv:{arxiv}](https://arxiv.org/abs/{arxiv}))"
        other = row.get("is_chapter_paper")
        if other and chapter_docs and other in chapter_docs:
            item += f", reproduced in {{doc}}`{md_escape(CHAPTER_LABELS.get(other, other))} <{chapter_docs[other]}>`"
        elif other:
            item += f", reproduced in this book ({md_escape(CHAPTER_LABELS.get(other, other))})"
        item += f" — similarity {float(row['similarity']):.2f}"
        lines.append(f"{row['rank']}. {item}")
    return "\n".join(lines) + "\n"


def write_related_markdown(related: dict[str, Sequence[dict[str, Any]]] | None, folder: str | Path,
                           n: int = 5, atlas_doc: str | None = None,
                           chapter_docs: dict[str, str] | None = None, encoder: str | None = None,
                           profile: str | None = None) -> list[Path]:
    """Write ``<folder>/<chapter>.md`` for all seven chapters (a placeholder where no data)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for chapter in CHAPTERS:
        rows = (related or {}).get(chapter)
        path = folder / f"{chapter}.md"
        path.write_text(related_markdown(chapter, rows, n, atlas_doc, chapter_docs, encoder, profile),
                        encoding="utf-8")
        written.append(path)
    return written


RESULT_NOTEBOOK = "02_map"  # the atlas notebook whose results file carries ``related_work``
RELATED_FOLDER = "chapters/_related"  # inside the staged ``book/`` folder
ATLAS_DOCS = ("notebooks/atlas/02_map", "book/chapters/atlas")  # link targets, first one in the toc wins


def related_from_results(profile: str, root: str | Path | None = None) -> dict[str, Any] | None:
    """``related_work`` (and the encoder) from ``results/atlas/<profile>/02_map.json``; None if absent."""
    from fmbook.book.results import result_path

    path = result_path("atlas", profile, RESULT_NOTEBOOK, Path(root) if root else None)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    related = (record.get("metrics") or {}).get("related_work")
    if not related:
        return None
    return {"related": related, "encoder": (record.get("parameters") or {}).get("encoder"),
            "profile": record.get("profile", profile)}


def write_related_includes(book_dir: str | Path, profile: str, n: int = 5,
                           results_root: str | Path | None = None) -> list[Path]:
    """The book-staging hook: write ``<book_dir>/chapters/_related/<chapter>.md`` for the 7 chapters.

    ``book_dir`` is the staged ``book/`` folder (its parent holds ``_toc.yml``); the lists come from
    the atlas results of ``profile`` (a placeholder sentence when the atlas was not run). The atlas
    page and the chapters' landing pages are linked only when the staged table of contents has
    them, so ``jupyter-book build -W -n`` has nothing to complain about. A landing page shows its
    list with::

        ```{include} _related/fedclip.md
        ```
    """
    import yaml

    book_dir = Path(book_dir)
    toc_path = book_dir.parent / "_toc.yml"
    in_toc: set[str] = set()
    if toc_path.is_file():
        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key in ("file", "root") and isinstance(value, str):
                        in_toc.add(value.removesuffix(".md").removesuffix(".ipynb"))
                    walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(yaml.safe_load(toc_path.read_text()) or {})
    atlas_doc = next((f"/{d}" for d in ATLAS_DOCS if d in in_toc), None)
    chapter_docs = {c: f"/book/chapters/{c}" for c in CHAPTERS if f"book/chapters/{c}" in in_toc}
    found = related_from_results(profile, results_root)
    return write_related_markdown(found["related"] if found else None, book_dir / RELATED_FOLDER, n,
                                  atlas_doc, chapter_docs, found["encoder"] if found else None,
                                  found["profile"] if found else None)
