"""The whole analysis in one call: configuration, :func:`build_atlas`, its result and static figures."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from fmbook.atlas.clustering import (CLUSTERERS, PROJECTIONS, Stability, choose_k, cluster, cluster_names,
                                     cluster_terms, nearest, project_2d, silhouette, similarity_matrix, stability)
from fmbook.atlas.common import CHAPTER_LABELS, CHAPTERS, AtlasError
from fmbook.atlas.dedup import Paper, chapter_papers

TEXT_FIELDS = ("title+abstract", "abstract")
# Colour-blind-friendly qualitative palette (Okabe-Ito, then Tableau 10 for more clusters).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
           "#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F", "#EDC948", "#B07AA1", "#FF9DA7",
           "#9C755F", "#BAB0AC", "#8CD17D", "#86BCB6")


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

    def related_how(self) -> str:
        """How the neighbours were found, in words (printed above each landing page's list)."""
        what = "title and abstract" if self.config.text == "title+abstract" else "abstract"
        return f"cosine similarity of {self.config.encoder} embeddings of {what}"

    def related(self) -> dict[str, list[dict[str, Any]]]:
        """Chapter id -> its neighbours as plain dicts (what the landing pages list)."""
        out: dict[str, list[dict[str, Any]]] = {c: [] for c in CHAPTERS}
        for row in self.neighbours.to_dict("records"):
            clean = {k: row[k] for k in ("rank", "similarity", "title", "arxiv_id", "paper_id", "cluster")}
            clean["chapter"] = row["is_chapter_paper"]  # the neighbour's own chapter, if it has one
            for key in ("arxiv_id", "chapter", "cluster"):
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
        _, ax = plt.subplots(figsize=(6.6, 5.2))  # with the legend beside it, under 10 in
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
                            xytext=(6, 6), textcoords="offset points", fontsize=10, weight="bold")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{result.config.projection} 1")
    ax.set_ylabel(f"{result.config.projection} 2")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="cluster")
    return ax.figure


