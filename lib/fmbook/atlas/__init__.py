"""The related-work atlas: where the seven reproduced papers sit among ~300 neighbouring papers.

Pipeline (each step a plain function, the notebooks of ``notebooks/atlas/`` only call them):

1. :mod:`~fmbook.atlas.parsing`: :func:`parse_listings` reads the seed listings (``data/seeds/*.txt``)
   into entries, one per paper *per listing*, and reports every line it skipped or repaired
   (:class:`Issue`): nothing is dropped silently. Three layouts occur and are detected per file
   (:func:`detect_format`): ``collection`` (markdown with ``## Title`` and ``<details>`` abstracts:
   the seven papers), ``arxiv`` (abstract, comments, ``arXiv:ID``, ``Created:``; no titles) and
   ``title-abstract`` (a title line, then its abstract line, with a little web-page boilerplate).
2. :mod:`~fmbook.atlas.dedup`: :func:`deduplicate` merges entries that are the same paper (same arXiv
   id, same normalised title or same normalised abstract opening, or overlapping 5-word shingles)
   into one table of papers (:func:`papers_frame`).
3. :mod:`~fmbook.atlas.clustering` and :mod:`~fmbook.atlas.analysis`: the texts are embedded by
   :mod:`fmbook.core.text_encoder`; :func:`build_atlas` picks the number of k-means clusters by
   silhouette (:func:`choose_k`), measures how much the clustering depends on the seed
   (:func:`stability`, adjusted Rand index), names clusters by class-based TF-IDF
   (:func:`cluster_names`), draws the map (:func:`project_2d`) and lists each chapter's neighbours
   (:func:`chapter_neighbours`; :meth:`AtlasResult.related` gives them as rows for the results file).
4. :mod:`~fmbook.atlas.page`: :func:`atlas_html` renders the interactive map and table (SVG drawn in
   Python, so hover titles and the table work without JavaScript; a small inline script adds search,
   click-to-highlight and sorting).

The "related work in this collection" lists on the chapters' landing pages are written by the book's
machinery (:mod:`fmbook.book.related`) from the rows the atlas notebook stores with
``run.related_work(...)``; this package knows nothing about the book's build. The reproduced papers
come from the chapter registry (:mod:`fmbook.book.registry`).

Abstracts are quoted from the listings; the book presents them as quotations, never as its prose.
"""

from fmbook.atlas.analysis import (PALETTE, TEXT_FIELDS, AtlasConfig, AtlasResult, build_atlas,
                                   chapter_neighbours, near_duplicates, paper_texts, plot_k_sweep, plot_map,
                                   select_papers)
from fmbook.atlas.clustering import (CLUSTERERS, GENERIC_WORDS, PROJECTIONS, Stability, choose_k, cluster,
                                     cluster_names, cluster_terms, nearest, project_2d, silhouette,
                                     similarity_matrix, stability)
from fmbook.atlas.common import CHAPTER_ARXIV, CHAPTER_LABELS, CHAPTERS, AtlasError
from fmbook.atlas.dedup import (ABSTRACT_KEY_CHARS, FUZZY_JACCARD, MERGE_REASONS, SHINGLE_WORDS, Paper,
                                chapter_papers, deduplicate, duplicates_frame, jaccard, max_cross_paper_jaccard,
                                normalise, papers_frame)
from fmbook.atlas.page import atlas_html, standalone_html
from fmbook.atlas.parsing import (BOILERPLATE, FORMATS, MIN_ABSTRACT_CHARS, Entry, Issue, ParsedListing,
                                  ParseResult, detect_format, parse_listing, parse_listings, seeds_dir)

__all__ = [name for name in dir() if not name.startswith("_")]
