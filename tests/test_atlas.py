"""fmbook.atlas: the listings parser (counts pinned per file), de-duplication, clustering,
names, neighbours, the interactive map (in Chromium when it is installed) and the landing-page lists.

No model is loaded here: where vectors are needed they are TF-IDF + SVD vectors of the real
abstracts, or Gaussian blobs, so these tests take seconds.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fmbook import atlas
from fmbook.atlas import clustering, page
from fmbook.book import related

SEEDS = Path(__file__).resolve().parents[1] / "data" / "seeds"
COUNTS = {  # entries per listing, as found by the parser (pinned: a change here is a change of data or parser)
    "000_b44f4037433f177b.txt": 7,
    "001_00e0450333fb4c4e.txt": 82,
    "002_423e5be2b46bba5a.txt": 10,
    "003_f9f70f7172c98964.txt": 188,
    "004_3da032744649fc50.txt": 10,
}
FORMATS = {"000": "collection", "001": "title-abstract", "002": "arxiv", "003": "title-abstract",
           "004": "title-abstract"}
N_ENTRIES, N_PAPERS = 297, 293


@pytest.fixture(scope="module")
def parsed():
    return atlas.parse_listings(SEEDS)


@pytest.fixture(scope="module")
def papers(parsed):
    return atlas.deduplicate(parsed.entries)


@pytest.fixture(scope="module")
def tfidf_vectors(papers):
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    x = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit_transform([p.text for p in papers])
    return TruncatedSVD(64, random_state=0).fit_transform(x)


def _blobs(n_per=20, k=3, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:k] * 5.0
    x = np.concatenate([c + rng.normal(scale=0.3, size=(n_per, dim)) for c in centres])
    return x, np.repeat(np.arange(k), n_per)


# ----------------------------------------------------------------------------------------- parsing

def test_entries_per_listing_are_pinned(parsed):
    assert parsed.counts() == COUNTS
    assert len(parsed.entries) == N_ENTRIES
    assert {l.source[:3]: l.format for l in parsed.listings} == FORMATS


def test_every_line_is_an_entry_or_a_reported_issue(parsed):
    """Nothing is dropped silently: each non-empty line of a title-abstract listing is a title, an
    abstract, or a skipped line named in the report."""
    for listing in parsed.listings:
        if listing.format != "title-abstract":
            continue
        lines = [l for l in (SEEDS / listing.source).read_text().splitlines() if l.strip()]
        used = sum(2 if e.title else 1 for e in listing.entries)
        skipped = sum(i.action == "skipped" for i in listing.issues)
        assert used + skipped == len(lines), listing.source


def test_malformed_lines_are_reported(parsed):
    issues = {(i.source[:3], i.line, i.kind, i.action) for i in parsed.issues}
    # page furniture of the trending-paper pages
    assert {(s, n) for s, n, k, a in issues if k == "boilerplate"} == {
        ("001", 1), ("001", 3), ("001", 5), ("001", 7), ("001", 9), ("003", 1), ("003", 2)}
    # "SubscribePEFT-U: ..." lost its line break: repaired, and said so
    assert ("003", 3, "glued-boilerplate", "repaired") in issues
    # a heading line with no abstract after it is skipped, and said so
    assert ("004", 1, "no-abstract", "skipped") in issues
    # the group's listing gives no titles: kept, flagged
    assert sum(k == "missing-title" for s, n, k, a in issues) == 10
    assert {(s, n) for s, n, k, a in issues if k == "possibly-truncated"} == {("003", 135), ("004", 4)}
    peft = next(e for e in parsed.entries if e.source.startswith("003") and e.line == 3)
    assert peft.title == "PEFT-U: Parameter-Efficient Fine-Tuning for User Personalization"


def test_arxiv_ids_come_with_the_collection_and_the_group_listing(parsed):
    by_source = {l.source[:3]: l for l in parsed.listings}
    assert [e.arxiv_id for e in by_source["000"].entries] == [
        "2402.10946", "2312.11111", "2309.17002", "2310.05143", "2307.11760", "2304.01457", "2302.13485"]
    assert all(e.arxiv_id and e.title is None and e.created for e in by_source["002"].entries)
    assert by_source["002"].entries[0].comments == "18 pages, 6 figures"


def test_synthetic_listing_reports_each_malformed_kind(tmp_path):
    long_a = "An abstract sentence that goes on. " * 10
    (tmp_path / "100_x.txt").write_text(
        "Subscribe\nA Title\n\n" + long_a + "\nOrphan heading\nAnother Title\n" + long_a +
        "\n" + long_a + "\nTrailing title\n")
    listing = atlas.parse_listing(tmp_path / "100_x.txt")
    assert listing.format == "title-abstract"
    assert [(e.title, e.line) for e in listing.entries] == [("A Title", 2), ("Another Title", 6), (None, 8)]
    kinds = [(i.line, i.kind, i.action) for i in listing.issues]
    assert kinds == [(1, "boilerplate", "skipped"), (5, "no-abstract", "skipped"),
                     (8, "abstract-without-title", "kept"), (9, "no-abstract", "skipped")]


def test_synthetic_arxiv_and_collection_records_without_abstract(tmp_path):
    (tmp_path / "a.txt").write_text("Short comment only\n\narXiv:2401.00001\nCreated: 2024-01-01\n")
    listing = atlas.parse_listing(tmp_path / "a.txt")
    assert listing.format == "arxiv" and listing.entries == []
    assert [(i.kind, i.action) for i in listing.issues] == [("no-abstract", "skipped")]
    (tmp_path / "c.txt").write_text("## Paper one\n<details>\n<summary>Abstract</summary>\n"
                                    "Text of it.\n</details>\n\n## Paper two\nno abstract here\n")
    listing = atlas.parse_listing(tmp_path / "c.txt")
    assert listing.format == "collection"
    assert [e.title for e in listing.entries] == ["Paper one"]
    assert [(i.line, i.kind) for i in listing.issues] == [(7, "no-abstract")]


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(atlas.AtlasError, match="does not exist"):
        atlas.parse_listing(tmp_path / "missing.txt")
    (tmp_path / "x.txt").write_text("x\n")
    with pytest.raises(atlas.AtlasError, match="allowed: collection, arxiv, title-abstract"):
        atlas.parse_listing(tmp_path / "x.txt", fmt="csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(atlas.AtlasError, match="no listings"):
        atlas.parse_listings(tmp_path / "empty")


# ------------------------------------------------------------------------------------ de-duplication

def test_dedup_count_and_why(papers):
    assert len(papers) == N_PAPERS
    merged = {p.title[:30]: (p.merged_by, tuple(s[:3] for s in p.sources)) for p in papers if len(p.entries) > 1}
    assert merged == {
        "CultureLLM: Incorporating Cult": (("arxiv", "abstract"), ("000", "002")),
        "Privacy Preserving Prompt Engi": (("title", "abstract"), ("001", "003")),
        "TrustLLM: Trustworthiness in L": (("abstract",), ("001", "002")),
        "Can Language Models Teach Weak": (("fuzzy-abstract",), ("003", "004")),
    }
    trust = next(p for p in papers if p.title.startswith("TrustLLM"))
    assert trust.arxiv_id == "2401.05561" and not trust.title_missing  # title from 001, id from 002
    teach = next(p for p in papers if p.title.startswith("Can Language Models Teach"))
    assert teach.other_titles == ("Can Language Models Teach? Teacher Explanations Improve Student "
                                  "Performance via Personalization",)
    assert sum(p.title_missing for p in papers) == 8
    assert len({p.paper_id for p in papers}) == len(papers)


def test_fuzzy_rule_has_a_margin_and_can_be_turned_off(parsed, papers):
    assert atlas.max_cross_paper_jaccard(papers) < 0.05 < atlas.FUZZY_JACCARD
    assert len(atlas.deduplicate(parsed.entries, fuzzy_jaccard=None)) == N_PAPERS + 1
    with pytest.raises(atlas.AtlasError, match="fuzzy_jaccard"):
        atlas.deduplicate(parsed.entries, fuzzy_jaccard=1.5)


def test_dedup_rules_on_small_cases():
    abstract = "word " * 80
    e = atlas.Entry
    entries = [
        e("a", 1, "Deep Nets: A Study", abstract + "one"),
        e("b", 1, "deep nets - a study!", "something else entirely " * 20),  # same title
        e("b", 5, None, "a third text " * 30, arxiv_id="2401.00001"),
        e("c", 9, "Renamed", "yet another text " * 30, arxiv_id="2401.00001"),  # same arXiv id
        e("c", 12, "Unrelated", "completely different words here " * 20),
    ]
    papers = atlas.deduplicate(entries)
    assert [len(p.entries) for p in papers] == [2, 2, 1]
    assert papers[1].title == "Renamed" and papers[1].paper_id == "arXiv:2401.00001"
    assert papers[0].merged_by == ("title",) and papers[1].merged_by == ("arxiv",)


def test_the_seven_chapter_papers_are_found(papers):
    found = atlas.chapter_papers(papers)
    assert list(found) == list(atlas.CHAPTERS)
    assert papers[found["fedclip"]].title.startswith("FedCLIP")
    assert papers[found["culture_llm"]].sources == ("000_b44f4037433f177b.txt", "002_423e5be2b46bba5a.txt")
    with pytest.raises(atlas.AtlasError, match="fedclip"):
        atlas.chapter_papers([p for p in papers if p.chapter != "fedclip"])


def test_select_papers_keeps_the_seven(papers):
    chosen = atlas.select_papers(papers, 40)
    assert len(chosen) == 40 and sum(p.chapter is not None for p in chosen) == 7
    assert atlas.select_papers(papers, None) == list(papers)


# ----------------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("kwargs, name", [
    ({"clusterer": "dbscan"}, "clusterer"), ({"projection": "umap"}, "projection"),
    ({"text": "title"}, "text"), ({"k_min": 1}, "k_min"), ({"k_min": 9, "k_max": 5}, "k_min"),
    ({"stability_seeds": 1}, "stability_seeds"), ({"subsample_fraction": 1.0}, "subsample_fraction"),
    ({"max_papers": 10}, "max_papers"), ({"n_neighbours": 0}, "n_neighbours"),
    ({"max_seq_length": 2}, "max_seq_length"),
])
def test_config_refuses_bad_values_by_name(kwargs, name):
    with pytest.raises(atlas.AtlasError, match=rf"AtlasConfig\.{name}=.*allowed"):
        atlas.AtlasConfig(**kwargs)


# --------------------------------------------------------------------------------------- clustering

def test_clustering_is_deterministic_and_numbered_by_size():
    x, truth = _blobs(n_per=15, k=3)
    x = np.concatenate([x, x[:5] + 0.01])  # make cluster sizes differ
    a = atlas.cluster(x, 3, seed=4)
    b = atlas.cluster(x, 3, seed=4)
    np.testing.assert_array_equal(a, b)
    sizes = np.bincount(a)
    assert list(sizes) == sorted(sizes, reverse=True)
    with pytest.raises(atlas.AtlasError, match="allowed: kmeans, agglomerative"):
        atlas.cluster(x, 3, method="spectral")


def test_choose_k_and_stability_on_clear_blobs():
    x, truth = _blobs(n_per=20, k=4)
    k, sweep = atlas.choose_k(x, 2, 7, seed=0, n_init=3)
    assert k == 4 and list(sweep["k"]) == list(range(2, 8))
    labels = atlas.cluster(x, k)
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    stab = atlas.stability(x, 4, seeds=range(3), n_init=3, subsample_rounds=3, reference=labels)
    assert stab.seed_ari == [pytest.approx(1.0)] * 3
    assert stab.subsample_ari_mean == pytest.approx(1.0)
    agg = atlas.stability(x, 4, method="agglomerative", seeds=range(2), subsample_rounds=2)
    assert agg.seed_ari_min == pytest.approx(1.0)


def test_stability_is_below_one_on_noise():
    x = np.random.default_rng(0).normal(size=(60, 8))
    stab = atlas.stability(x, 5, seeds=range(4), n_init=1, subsample_rounds=3)
    assert stab.seed_ari_min < 0.99


def test_cluster_terms_name_clusters_by_their_distinctive_words():
    fed = ["federated learning clients aggregate local updates privacy server",
           "personalized federated learning heterogeneous clients server rounds"] * 3
    img = ["diffusion models generate images from text prompts guidance",
           "text-to-image diffusion sampling images quality guidance"] * 3
    terms = atlas.cluster_terms(fed + img, np.array([0] * 6 + [1] * 6), n_terms=3, max_df=1.0)
    names = atlas.cluster_names(terms)
    assert "federated" in names[0] or "clients" in names[0]
    assert "diffusion" in names[1] or "images" in names[1] or "guidance" in names[1]
    for ts in terms.values():  # no term repeats another's words ("federated", "federated learning")
        stems = [clustering._stems(t) for t, _ in ts]
        assert all(not (a <= b or b <= a) for i, a in enumerate(stems) for b in stems[i + 1:])


def test_projection_is_deterministic_and_scaled():
    x, _ = _blobs(n_per=10, k=3)
    for method in ("pca", "tsne"):
        a, b = atlas.project_2d(x, method, seed=1), atlas.project_2d(x, method, seed=1)
        np.testing.assert_array_equal(a, b)
        assert a.shape == (30, 2) and a.min() == pytest.approx(0) and a.max() == pytest.approx(1)
    with pytest.raises(atlas.AtlasError, match="allowed: tsne, pca"):
        atlas.project_2d(x, "umap")


# ---------------------------------------------------------------------------------------- neighbours

def test_nearest_excludes_itself_sorts_and_breaks_ties_by_index():
    sim = np.array([[1.0, 0.5, 0.9, 0.5], [0.5, 1, 0, 0], [0.9, 0, 1, 0], [0.5, 0, 0, 1]])
    assert atlas.nearest(sim, 0, 3) == [(2, 0.9), (1, 0.5), (3, 0.5)]


def test_chapter_neighbours(papers, tfidf_vectors):
    sim = atlas.similarity_matrix(tfidf_vectors)
    table = atlas.chapter_neighbours(papers, sim, n=10)
    assert len(table) == 70 and list(table["chapter"].unique()) == list(atlas.CHAPTERS)
    found = atlas.chapter_papers(papers)
    for chapter, rows in table.groupby("chapter", sort=False):
        assert list(rows["rank"]) == list(range(1, 11))
        assert list(rows["similarity"]) == sorted(rows["similarity"], reverse=True)
        assert papers[found[chapter]].paper_id not in set(rows["paper_id"])
    fed = table[table["chapter"] == "fedclip"]
    assert "zoopfl" in set(fed["is_chapter_paper"].dropna())  # the other federated chapter is near


@pytest.fixture(scope="module")
def small_result(papers, tfidf_vectors):
    config = atlas.AtlasConfig(k_min=3, k_max=6, n_init=2, stability_seeds=2, subsample_rounds=2,
                               projection="pca", max_papers=60)
    chosen = atlas.select_papers(papers, config.max_papers)
    index = [papers.index(p) for p in chosen]
    return atlas.build_atlas(chosen, tfidf_vectors[index], config)


def test_build_atlas_is_reproducible(small_result, papers, tfidf_vectors):
    chosen = small_result.papers
    index = [papers.index(p) for p in chosen]
    again = atlas.build_atlas(chosen, tfidf_vectors[index], small_result.config)
    np.testing.assert_array_equal(again.labels, small_result.labels)
    np.testing.assert_array_equal(again.xy, small_result.xy)
    assert again.names == small_result.names and again.k == small_result.k
    related = small_result.related()
    assert list(related) == list(atlas.CHAPTERS) and all(len(v) == 10 for v in related.values())
    json.dumps(related)  # goes into the results file as it is


# ------------------------------------------------------------------------------- the interactive map

def test_atlas_html_is_self_contained(small_result):
    page = atlas.atlas_html(small_result)
    n = len(small_result.papers)
    assert page.count('<circle class="atl-pt') == n and page.count("<tr data-i=") == n
    assert page.count("</title></circle>") == n  # hover titles without JavaScript
    assert not re.search(r'<script[^>]+src=|<link[^>]+href=|@import|cdn\.', page)
    data = re.search(r'<script type="application/json" class="atl-data">(.*?)</script>', page, re.S).group(1)
    parsed = json.loads(data.replace("<\\/", "</"))
    assert len(parsed["papers"]) == n and len(parsed["nb"]) == n
    assert set(parsed["chapters"]) == set(atlas.CHAPTERS)
    assert all(len(row) == small_result.config.n_neighbours for row in parsed["nb"])


def test_script_data_cannot_close_the_script_tag():
    assert "</script>" not in page._json_for_script({"t": "</script><script>alert(1)</script>"})


# ------------------------------------------------------------------------- landing-page related lists

def test_md_escape():
    assert related.md_escape("A_b *c* [d](e) $x$ <f>") == r"A\_b \*c\* \[d\]\(e\) \$x\$ \<f\>"


def test_related_markdown_and_placeholder(small_result):
    rows = small_result.related()["fedclip"]
    text = related.chapter_markdown("fedclip", rows, n=5, source_doc="/notebooks/atlas/02_map",
                                    chapter_docs={"zoopfl": "/book/chapters/zoopfl"}, how="enc", profile="smoke")
    assert text.startswith("% generated") and text.count("\n1. ") == 1 and "\n5. " in text and "\n6. " not in text
    assert "{doc}`related-work atlas </notebooks/atlas/02_map>`" in text
    placeholder = related.chapter_markdown("fedclip", None)
    assert "has not been run" in placeholder and "{doc}" not in placeholder
    with pytest.raises(related.RelatedError, match="registered: nmtune"):
        related.chapter_markdown("nonexistent", rows)


def test_the_atlas_uses_the_registry():
    from fmbook.book.registry import PAPERS

    assert atlas.CHAPTERS == tuple(p.id for p in PAPERS)
    assert atlas.CHAPTER_ARXIV == {p.arxiv: p.id for p in PAPERS}


def test_the_book_machinery_imports_no_chapter_module():
    """The builder writes the related-work lists from results files, not by calling the atlas."""
    import ast

    for path in sorted((Path(related.__file__).parent).glob("*.py")):
        tree = ast.parse(path.read_text())
        names = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        bad = [n for n in names if n.startswith("fmbook.") and not n.startswith(("fmbook.book", "fmbook.core"))]
        assert not bad, f"{path.name} imports {bad}"


def test_write_related_includes_reads_results_and_links_only_toc_pages(small_result, tmp_path):
    from fmbook.book.results import atomic_write_json

    results = tmp_path / "results"
    atomic_write_json(results / "atlas" / "smoke" / "02_map.json",
                      {"profile": "smoke", "parameters": {"encoder": "all-MiniLM-L6-v2"},
                       "related_work": {"rows": small_result.related(), "how": small_result.related_how()},
                       "chapter": "atlas", "notebook": "02_map", "metrics": {}})
    staged = tmp_path / "src"
    (staged / "book").mkdir(parents=True)
    (staged / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                     "  - file: book/chapters/zoopfl\n  - file: book/chapters/atlas\n")
    written = related.write_includes(staged / "book", "smoke", results_root=results)
    assert [p.name for p in written] == [f"{c}.md" for c in atlas.CHAPTERS]
    fed = (staged / "book" / "chapters" / "_related" / "fedclip.md").read_text()
    assert "{doc}`related-work atlas </book/chapters/atlas>`" in fed and "all-MiniLM-L6-v2" in fed
    assert "/book/chapters/fedclip" not in fed  # not in this toc: never linked
    missing = related.write_includes(staged / "book", "local", results_root=results)
    assert "has not been run" in missing[0].read_text()


def test_run_related_work_goes_into_the_results_file(small_result, mini_book):
    from fmbook.book import nb

    run = nb.start({"profile": "smoke"}, chapter="demo", notebook="02_second")
    run.related_work(small_result.related(), how=small_result.related_how())
    record = run.record()
    assert record["related_work"]["rows"]["fedclip"][0]["rank"] == 1
    with pytest.raises(related.RelatedError, match="lacks similarity"):
        run.related_work({"fedclip": [{"rank": 1, "title": "x"}]})
    with pytest.raises(related.RelatedError, match="unknown chapter"):
        run.related_work({"nope": []})


# ------------------------------------------------------------------------------------- in the browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_map_interactions_in_chromium(small_result, tmp_path):
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "atlas.html"
    page_file.write_text(atlas.standalone_html(small_result))
    papers = small_result.papers
    fed = next(i for i, p in enumerate(papers) if p.chapter == "fedclip")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors, external = [], []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda r: external.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
        page.goto(page_file.as_uri())
        # hover shows the title
        page.hover(f'circle[data-i="{fed}"]', force=True)
        tip = page.locator(".atl-tooltip")
        assert tip.is_visible() and papers[fed].title in tip.inner_text()
        # the search filters table rows and dims points
        page.fill(".atl-search", "federated")
        expected = sum("federated" in (q.title + " " + q.abstract).lower() for q in papers)
        assert page.locator("tbody tr[data-i]:visible").count() == expected
        assert page.locator("circle.atl-pt:not(.atl-dim)").count() == expected
        assert f"{expected} of {len(papers)}" in page.inner_text(".atl-count")
        page.fill(".atl-search", "")
        assert page.locator("tbody tr[data-i]:visible").count() == len(papers)
        # clicking a chapter's paper highlights its neighbours
        page.click(f'circle[data-i="{fed}"]', force=True)
        nb = {j for j, _ in atlas.nearest(small_result.sim, fed, small_result.config.n_neighbours)}
        marked = {int(x) for x in page.eval_on_selector_all("circle.atl-nb", "els => els.map(e => e.dataset.i)")}
        assert marked == nb and page.locator("line.atl-edge").count() == len(nb)
        assert page.locator(".atl-nblist li").count() == len(nb)
        assert page.input_value("select.atl-chapter") == "fedclip"
        # the chapter picker does the same
        page.select_option("select.atl-chapter", "nmtune")
        nm = next(i for i, q in enumerate(papers) if q.chapter == "nmtune")
        assert page.locator(f'circle.atl-sel[data-i="{nm}"]').count() == 1
        # the table sorts by a column
        page.click(".atl-table th:nth-child(2)")
        assert page.get_attribute(".atl-table th:nth-child(2)", "aria-sort") == "ascending"
        order = page.evaluate("""() => Array.from(document.querySelectorAll('tbody tr[data-i] td:nth-child(2)'))
            .map(e => [e.textContent, e.hasAttribute('data-last')])""")
        titled = [t for t, last in order if not last]
        untitled = [t for t, last in order if last]
        assert len(titled) > 1 and page.evaluate("t => t.every((x, i) => i === 0 || t[i - 1].localeCompare(x) <= 0)", titled)
        assert [last for _, last in order] == sorted(last for _, last in order)  # "[untitled]" rows last
        assert all(t.startswith("[untitled]") for t in untitled)
        page.click(".atl-table th:nth-child(2)")  # descending: still last
        order = page.evaluate("""() => Array.from(document.querySelectorAll('tbody tr[data-i] td:nth-child(2)'))
            .map(e => e.hasAttribute('data-last'))""")
        assert order == sorted(order)
        arxiv_cells = page.evaluate("""() => Array.from(document.querySelectorAll('tbody tr[data-i] td:nth-child(6)'))
            .map(e => e.textContent)""")
        assert "" not in arxiv_cells and "nan" not in arxiv_cells
        browser.close()
    assert not errors, errors
    assert not external, external
