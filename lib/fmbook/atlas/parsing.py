"""Reading the seed listings: three layouts, every skipped or repaired line reported."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from fmbook.atlas.common import AtlasError, short as _short

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



def _looks_complete(abstract: str) -> bool:
    """An abstract that ends a sentence (or with a URL, as many do) looks complete."""
    end = abstract.rstrip()
    if end[-1:] in '.!?)"\'”’' or end.endswith((".$", ".}")):
        return True
    last = end.split()[-1] if end.split() else ""
    return "/" in last or last.startswith("http") or ".com" in last or ".io" in last


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
    candidates.append(Path(__file__).resolve().parents[1] / "_data" / "seeds")  # inside the wheel
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

