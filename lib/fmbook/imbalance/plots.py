"""The chapter's figures: long-tailed profiles, the results heat map, per-method bars with intervals."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fmbook.imbalance.data import GROUPS

GROUP_COLOURS = {"many": "#0173b2", "medium": "#de8f05", "few": "#d55e00"}
METRIC_LABELS = {"overall": "overall", "many": "many", "medium": "medium", "few": "few",
                 "balanced_accuracy": "bal. acc.", "macro_f1": "macro-F1"}


def counts_figure(counts: pd.DataFrame, seed: int, many_above: float, few_below: float):
    """Training images per class (log scale) at every ratio for one seed, coloured by shot group."""
    sub = counts[counts["seed"] == seed]
    ratios = sorted(sub["ratio"].unique())
    fig, axes = plt.subplots(1, len(ratios), figsize=(min(10, 3.3 * len(ratios)), 3.8), sharey=True, squeeze=False)
    for ax, ratio in zip(axes[0], ratios):
        part = sub[sub["ratio"] == ratio].sort_values("rank")
        ax.bar(np.arange(len(part)), part["count"], color=[GROUP_COLOURS[g] for g in part["group"]])
        ax.set_yscale("log")
        ax.axhline(many_above, color="grey", ls="--", lw=1)
        ax.axhline(few_below, color="grey", ls=":", lw=1)
        ax.set_xticks(np.arange(len(part)), part["class"], rotation=60, ha="right", fontsize=9)
        ax.set_title(f"ρ = {ratio:g}: {int(part['count'].sum()):,} images", fontsize=11)
    axes[0][0].set_ylabel("training images (log scale)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=GROUP_COLOURS[g]) for g in GROUPS]
    handles += [plt.Line2D([], [], color="grey", ls="--", lw=1), plt.Line2D([], [], color="grey", ls=":", lw=1)]
    axes[0][-1].legend(handles, [f"{g}-shot" for g in GROUPS] + ["many-shot above", "few-shot below"],
                       loc="upper right", fontsize=9, framealpha=0.9)
    fig.suptitle(f"Long-tailed training sets (seed {seed}), classes by rank", fontsize=11)
    fig.tight_layout()
    return fig


def heatmap(summary: pd.DataFrame, metrics: Sequence[str], methods: Sequence[str], title: str):
    """Method (rows) x metric (columns) per ratio (panels), mean over seeds in %; empty cells grey."""
    import seaborn as sns

    ratios = sorted(summary["ratio"].unique())
    labels = summary.drop_duplicates("method").set_index("method")["label"]
    fig, axes = plt.subplots(1, len(ratios), figsize=(10, 0.42 * len(methods) + 1.8), sharey=True, squeeze=False)
    for i, (ax, ratio) in enumerate(zip(axes[0], ratios)):
        part = summary[summary["ratio"] == ratio].set_index("method").reindex(list(methods))
        values = part[list(metrics)].astype(float)
        sns.heatmap(values, ax=ax, annot=True, fmt=".1f", annot_kws={"fontsize": 9}, cmap="viridis", vmin=0, vmax=100,
                    cbar=i == len(ratios) - 1, cbar_kws={"label": "accuracy / F1 (%)"} if i == len(ratios) - 1 else None,
                    yticklabels=[labels.get(m, m) for m in methods], mask=values.isna())
        ax.set_xticklabels([METRIC_LABELS.get(m, m) for m in metrics], rotation=45, ha="right", fontsize=9)
        ax.set_title(f"ρ = {ratio:g}", fontsize=11)
        ax.grid(False)
        ax.set_facecolor("#eeeeee")
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="y", labelsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def bars_with_intervals(summary: pd.DataFrame, metric: str, methods: Sequence[str], title: str, ylabel: str):
    """One bar per method and ratio: the mean over seeds with its t-interval as an error bar."""
    ratios = sorted(summary["ratio"].unique())
    labels = summary.drop_duplicates("method").set_index("method")["label"]
    fig, ax = plt.subplots(figsize=(min(10, 1.0 + 0.75 * len(methods)), 4.2))
    width = 0.8 / len(ratios)
    x = np.arange(len(methods))
    for j, ratio in enumerate(ratios):
        part = summary[summary["ratio"] == ratio].set_index("method").reindex(list(methods))
        ax.bar(x + (j - (len(ratios) - 1) / 2) * width, part[metric], width, yerr=part[f"{metric}_pm"].fillna(0),
               capsize=2, label=f"ρ = {ratio:g}")
    ax.set_xticks(x, [labels.get(m, m) for m in methods], rotation=35, ha="right", fontsize=9)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=9, ncol=len(ratios), loc="lower right")
    fig.tight_layout()
    return fig


def interval_table(summary: pd.DataFrame, metrics: Sequence[str], methods: Sequence[str]) -> pd.DataFrame:
    """``"mean ± half-width"`` strings per metric (in %), one row per ratio and method, in ``methods`` order."""
    order = {m: i for i, m in enumerate(methods)}
    part = summary[summary["method"].isin(order)].copy()
    part["_o"] = part["method"].map(order)
    part = part.sort_values(["ratio", "_o"])
    out = pd.DataFrame({"data": part["dataset"].to_numpy(), "method": part["label"].to_numpy()})
    for m in metrics:
        mean, pm = part[m].to_numpy(dtype=float), part[f"{m}_pm"].to_numpy(dtype=float)
        out[METRIC_LABELS.get(m, m)] = [None if np.isnan(a) else (f"{a:.1f}" if np.isnan(b) else f"{a:.1f} ± {b:.1f}")
                                        for a, b in zip(mean, pm)]
    return out
