"""Clustering the embedded papers, its stability, cluster names, the 2-D map and neighbours."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from fmbook.atlas.common import AtlasError

CLUSTERERS = ("kmeans", "agglomerative")
PROJECTIONS = ("tsne", "pca")


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

