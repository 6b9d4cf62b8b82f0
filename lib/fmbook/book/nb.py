"""The notebook side of the book: what every chapter notebook calls.

>>> run = nb.start(globals(), chapter="nmtune", notebook="01_noisy_pretraining")
>>> run.uses_model("fmbook/small-cnn"); run.uses_data("fashion-mnist")
>>> run.log(accuracy=0.91); run.glue("acc", 0.91); run.stamp(fig)
>>> run.claims(nmtune.claims(...))   # paper-vs-ours rows, each decided by its interval
>>> run.finish()

When the runner executes a notebook it injects the resolved parameters (``fmbook_runner=True``).
Opened by hand (Jupyter, Colab) the notebook resolves its profile here: ``profile="auto"`` becomes
``full`` on a GPU and ``local`` otherwise, the profile's values replace the defaults that the reader
left unchanged, and any value the reader edited is kept as an override.
"""

from __future__ import annotations

import html
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from fmbook.book import profiles as _profiles
from fmbook.core.claims import Claim, interval_text
from fmbook.core.display import rows_html
from fmbook.core.plotting import apply_style, provenance_line, stamp_figure
from fmbook.core.progress import route_output
from fmbook.book.results import atomic_write_json, provenance, result_path, to_jsonable
from fmbook.core.paths import package_dir, repo_root
from fmbook.core.seeding import has_gpu, seed_everything, select_device

RESULT_PATH_ENV = "FMBOOK_RESULT_PATH"  # set by the runner: where finish() writes (staging)


def repository_url() -> str:
    """The book's public repository: ``repository.url`` in ``_config.yml``, its one setting.

    Launch buttons and the repository button read it (Jupyter Book); the install line of every
    notebook's bootstrap cell is written from it (``python -m fmbook sync`` keeps them in step).
    """
    import yaml

    root = repo_root()
    config = root / "_config.yml" if root is not None else package_dir() / "_book_config.yml"
    return yaml.safe_load(config.read_text(encoding="utf-8"))["repository"]["url"].rstrip("/")


def pip_spec() -> str:
    """What the bootstrap cell installs when the library is missing (Colab): the repository's main."""
    return f"fmbook @ git+{repository_url()}"

BOOTSTRAP_TEMPLATE = '''try:  # Colab or a bare kernel: install the book's library first
    import fmbook
except ImportError:
    import os, subprocess, sys
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           os.environ.get("FMBOOK_PIP_SPEC", "{pip_spec}")])
from fmbook.book import nb
run = nb.start(globals(), chapter="{chapter}", notebook="{notebook}")'''


def bootstrap_cell(chapter: str, notebook: str) -> str:
    """The exact second code cell of every notebook (a test holds all notebooks to it)."""
    return BOOTSTRAP_TEMPLATE.format(pip_spec=pip_spec(), chapter=chapter, notebook=notebook)


def _display(obj: Any) -> None:
    try:
        from IPython.display import display
    except ImportError:  # plain Python: print the text form
        print(getattr(obj, "data", obj))
        return
    display(obj)


def _html(text: str):
    from IPython.display import HTML

    return HTML(text)


@dataclass
class Run:
    """One execution of one notebook: what it used, what it measured, where it came from."""

    chapter: str
    notebook: str
    profile: str
    params: dict[str, Any]
    sources: dict[str, str]
    device: str
    started_at: str
    _t0: float = field(repr=False)
    models: list[dict[str, Any]] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    claim_rows: list[dict[str, Any]] = field(default_factory=list)
    related: dict[str, Any] | None = None
    finished: bool = False
    result_file: Path | None = None

    @property
    def seed(self) -> Any:
        return self.params.get("seed")

    # --- what produced the numbers -------------------------------------------------------------
    def uses_model(self, model_id: str, **info: Any) -> None:
        """Record a model (asset name or hub id, plus anything that identifies it)."""
        if not any(m["id"] == model_id for m in self.models):
            self.models.append({"id": model_id, **to_jsonable(info)})

    def uses_data(self, data_id: str, **info: Any) -> None:
        if not any(d["id"] == data_id for d in self.data):
            self.data.append({"id": data_id, **to_jsonable(info)})

    # --- numbers --------------------------------------------------------------------------------
    def log(self, **metrics: Any) -> None:
        self.metrics.update(to_jsonable(metrics))

    def glue(self, name: str, value: Any, display: bool = False) -> Any:
        """Store ``value`` as a metric and glue it for ``{glue:text}`name``` in the prose."""
        rich = hasattr(value, "_repr_html_") or hasattr(value, "savefig")
        if not rich:
            self.metrics[name] = to_jsonable(value)  # NaN is stored as null in the results file
            if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
                value = value.item()  # numpy/torch scalars: glue "0.5", not "np.float64(0.5)"
            if value is None:
                value = float("nan")  # formats as "nan" in {glue:text}`name:.2f` instead of failing
        try:
            from myst_nb import glue as _glue
        except ImportError:  # Colab without myst-nb: the value is still logged
            if display:
                _display(value)
            return value
        _glue(name, value, display=display)
        return value

    def claims(self, rows: Sequence[Claim], show: bool = True) -> None:
        """Paper-vs-ours rows from the chapter's ``claims(...)``: stored in the results file (the
        status page reads them) and shown as a table with the interval and the three-way verdict."""
        new = [to_jsonable(r.row()) for r in rows]
        self.claim_rows.extend(new)
        if show:
            _display(_html(claims_table(new)))

    def related_work(self, rows: dict[str, Sequence[dict[str, Any]]], how: str = "") -> None:
        """Neighbouring papers per chapter id, for the landing pages' "related work" lists.

        Each row: ``rank``, ``title``, ``similarity``, optionally ``arxiv_id`` and ``chapter`` (see
        :mod:`fmbook.book.related`, which writes the lists when the book is built).
        """
        from fmbook.book.related import check_rows

        check_rows(rows)
        self.related = {"how": how, "rows": to_jsonable(rows)}

    # --- figures --------------------------------------------------------------------------------
    def stamp(self, fig, models: list[str] | None = None, data: list[str] | None = None) -> None:
        """Print which model, data, profile and seed produced ``fig`` under it."""
        text = provenance_line(models if models is not None else [m["id"] for m in self.models],
                               data if data is not None else [d["id"] for d in self.data],
                               self.profile, self.seed)
        stamp_figure(fig, text)

    # --- the end --------------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        return {
            "chapter": self.chapter, "notebook": self.notebook, "profile": self.profile,
            "parameters": self.params, "parameter_sources": self.sources,
            "models": self.models, "data": self.data, "device": self.device,
            "metrics": self.metrics, "claims": self.claim_rows,
            **({"related_work": self.related} if self.related else {}),
            "started_at": self.started_at, "duration_s": round(time.perf_counter() - self._t0, 2),
            "provenance": provenance(),
        }

    def finish(self) -> None:
        """Write the results file (atomically) and show where the numbers came from.

        Returns nothing (so that the last cell prints no path); the file is ``run.result_file``.
        """
        record = self.record()
        target = os.environ.get(RESULT_PATH_ENV)
        path = Path(target) if target else result_path(self.chapter, self.profile, self.notebook)
        atomic_write_json(path, record)
        self.finished, self.result_file = True, path
        prov = record["provenance"]
        hw = prov["hardware"]
        commit = prov["git"].get("commit")
        rows = [
            ("profile", self.profile), ("seed", self.seed),
            ("models", ", ".join(m["id"] for m in self.models) or "none"),
            ("data", ", ".join(d["id"] for d in self.data) or "none"),
            ("hardware", f"{hw['cpu']} ({hw['cpu_count']} cores)" + (f", {hw['gpu']}" if hw["gpu"] else "")),
            ("device", self.device),
            ("packages", ", ".join(f"{k} {v}" for k, v in prov["packages"].items()
                                   if k in ("torch", "transformers", "fmbook"))),
            ("commit", (commit[:10] + (" (with local changes)" if prov["git"].get("dirty") else "")) if commit else "not a git checkout"),
            ("started", self.started_at), ("notebook time", f"{record['duration_s']:.1f} s"),
        ]
        _display(_html(_table("Where these numbers came from", rows, ("", ""))))


def _table(caption: str, rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    return rows_html(caption, rows, header)


def claims_table(rows: Sequence[dict[str, Any]]) -> str:
    """HTML table of claim rows: the paper's statement and number, ours with its interval, the verdict."""
    body = []
    for r in rows:
        paper = "qualitative" if r.get("paper") is None else f"{r['paper']}"
        if r.get("paper_source"):
            paper += f" ({r['paper_source']})"
        detail = r.get("comparison", "")
        if r.get("resolvable") is not None:
            detail += f"; could resolve effects of about {r['resolvable']:.2g}{(' ' + r['unit']) if r.get('unit') else ''}"
        verdict = r["verdict"]
        body.append((r["claim"], paper, interval_text(r), verdict, detail))
    head = ("claim (the paper's)", "paper", "ours, 95% interval", "verdict", "what was compared")
    cells = "".join("<tr>" + "".join(
        f'<td class="fmbook-verdict fmbook-{html.escape(row[3]).replace(" ", "-")}">{html.escape(str(c))}</td>' if i == 3
        else f"<td>{html.escape(str(c))}</td>" for i, c in enumerate(row)) + "</tr>" for row in body)
    return ('<div class="fmbook-scroll" tabindex="0" role="region" aria-label="The paper\'s claims and what we measured">'
            '<table class="fmbook-table fmbook-claims"><caption>The paper\'s claims and '
            "what we measured (verdict from the interval: holds, contradicted or not resolved)</caption><thead><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr></thead><tbody>{cells}</tbody></table></div>")


def start(namespace: dict[str, Any], chapter: str, notebook: str) -> Run:
    """Resolve the parameters, seed everything, pick the device, and show the parameter table."""
    t0 = time.perf_counter()
    route_output()  # warnings, logging and progress: to the runner's console, not into the notebook
    requested = namespace.get("profile", "auto")
    if requested == "auto":
        profile = "full" if has_gpu() else "local"
    else:
        profile = _profiles.check_profile(requested)
    declared = _profiles.notebook_parameters(chapter, notebook)
    if namespace.get(_profiles.RUNNER_FLAG):
        values = {name: namespace.get(name, p.default) for name, p in declared.items()}
        values["profile"] = profile
        sources = dict(namespace.get(_profiles.SOURCES_PARAM) or {})
    else:
        edited = {name: namespace[name] for name, p in declared.items()
                  if name != "profile" and name in namespace and namespace[name] != p.default}
        resolved = _profiles.resolve(chapter, notebook, profile, edited)
        values, sources = dict(resolved.values), dict(resolved.sources)
        sources["profile"] = "auto" if requested == "auto" else "notebook"
        namespace.update(values)
    apply_style()
    seed = values.get("seed", 0)
    seed_everything(int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else 0)
    device = select_device(values.get("device", "auto")) if "device" in values else select_device()
    run = Run(chapter=chapter, notebook=notebook, profile=profile, params=values,
              sources={k: sources.get(k, "default") for k in values}, device=device,
              started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), _t0=t0)
    rows = [(name, repr(value), run.sources[name], declared[name].help if name in declared else "")
            for name, value in values.items()]
    _display(_html(_table(f"Parameters of this run: profile '{profile}', device {device}", rows,
                          ("parameter", "value", "from", "meaning"))))
    return run
