"""fmbook.catalog: the appendix's registry table, timing helpers and figures, on small cases."""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from fmbook.core import assets

from fmbook import catalog  # noqa: E402


def test_asset_table_has_one_row_per_asset_with_registry_facts():
    rows = catalog.asset_table()
    assert [r["asset"] for r in rows] == list(assets.ASSETS)
    for row in rows:
        asset = assets.ASSETS[row["asset"]]
        assert row["licence"] == asset.licence and row["source"] == asset.source
        assert row["registry_mb"] == asset.size_mb
        if assets.is_ready(row["asset"]):
            assert row["on_disk_mb"] > 0 and row["fetched_at"]


def test_folder_mb_counts_bytes(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 1_500_000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 500_000)
    assert catalog.folder_mb(tmp_path) == pytest.approx(2.0)
    assert catalog.folder_mb(tmp_path / "missing") == 0.0


def test_throughput_sentences_are_distinct_and_seeded():
    a, b = catalog.throughput_sentences(50, seed=3), catalog.throughput_sentences(50, seed=3)
    assert a == b and len(set(a)) == 50
    assert a != catalog.throughput_sentences(50, seed=4)


def test_class_grid_has_a_row_per_class_and_is_seeded():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (60, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 20)
    fig = catalog.plot_class_grid(images, labels, ["a", "b", "c"], per_class=4, seed=1, title="t")
    assert len(fig.axes) == 12
    shown = [ax.images[0].get_array().data.copy() for ax in fig.axes]
    again = catalog.plot_class_grid(images, labels, ["a", "b", "c"], per_class=4, seed=1)
    assert all(np.array_equal(x, ax.images[0].get_array().data) for x, ax in zip(shown, again.axes))
    for row in range(3):  # every image in row r comes from class r
        for ax in fig.axes[4 * row:4 * row + 4]:
            data = ax.images[0].get_array().data
            idx = [i for i in range(60) if np.array_equal(images[i], data)]
            assert idx and labels[idx[0]] == row


def test_scratch_cache_links_assets_and_restores_the_environment(monkeypatch, tmp_path):
    if not assets.is_ready("fashion-mnist"):
        pytest.skip("fashion-mnist is not fetched")
    monkeypatch.setenv("FMBOOK_CACHE", str(assets.ASSETS["fashion-mnist"].path().parents[1]))
    before = os.environ["FMBOOK_CACHE"]
    with catalog._scratch_cache(["fashion-mnist"]) as scratch:
        assert os.environ["FMBOOK_CACHE"] == str(scratch)
        assert (scratch / "assets" / "fashion-mnist" / "MANIFEST.json").is_file()
        assert not (scratch / "datasets").exists()
    assert os.environ["FMBOOK_CACHE"] == before and not scratch.exists()


def test_gemma_terms_are_found_in_the_shipped_copy():
    if not assets.is_ready("gemma-3-270m-gguf"):
        pytest.skip("gemma-3-270m-gguf is not fetched")
    terms = catalog.gemma_terms()
    assert terms["url"] == "https://ai.google.dev/gemma/terms"
    assert terms["opening"].startswith("By using") and terms["last_modified"]
    assert terms["path"].endswith("GEMMA_TERMS.html") and "/" not in terms["file"]
