"""Chapters, notebooks, their parameters and the named parameter profiles (smoke, local, full).

A notebook's parameters are the literal assignments in its cell tagged ``parameters`` (the
defaults, which are the ``local`` values). ``notebooks/<chapter>/profiles.yml`` overrides them per
profile, either for one notebook or for every notebook of the chapter that declares the name
(key ``_all``). Everything is validated before any notebook starts.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fmbook.core.paths import chapters_dir

PROFILES = ("smoke", "local", "full")
RUNNER_FLAG = "fmbook_runner"  # injected by the runner: parameters are already resolved
SOURCES_PARAM = "fmbook_sources"  # injected by the runner: where each value came from


class ParameterError(ValueError):
    """A profile, chapter, notebook or parameter name is unknown, or a value has the wrong type."""


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    type_name: str  # "int" | "float" | "str" | "bool" | "list" | "dict" | "None"
    help: str


def _choices(kind: str, name: str, allowed: list[str] | tuple[str, ...]) -> ParameterError:
    return ParameterError(f"unknown {kind} {name!r}; allowed: {', '.join(allowed) or '(none)'}")


def list_chapters() -> list[str]:
    root = chapters_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("[0-9][0-9]_*.ipynb")))


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise _choices("profile", profile, PROFILES)
    return profile


def check_chapter(chapter: str) -> str:
    chapters = list_chapters()
    if chapter not in chapters:
        raise _choices("chapter", chapter, chapters)
    return chapter


def list_notebooks(chapter: str) -> list[str]:
    check_chapter(chapter)
    return sorted(p.stem for p in (chapters_dir() / chapter).glob("[0-9][0-9]_*.ipynb"))


def notebook_path(chapter: str, notebook: str) -> Path:
    notebooks = list_notebooks(chapter)
    if notebook not in notebooks:
        raise _choices(f"notebook of chapter '{chapter}'", notebook, notebooks)
    return chapters_dir() / chapter / f"{notebook}.ipynb"


def parse_target(target: str) -> tuple[str, str | None]:
    """``'nmtune'`` -> (nmtune, None); ``'nmtune/01_noisy_pretraining'`` -> (nmtune, 01_...)."""
    chapter, _, notebook = target.strip("/").partition("/")
    check_chapter(chapter)
    if notebook:
        notebook = notebook.removesuffix(".ipynb")
        notebook_path(chapter, notebook)
        return chapter, notebook
    return chapter, None


def _type_name(value: Any) -> str:
    if value is None:
        return "None"
    return type(value).__name__


def parameters_cell_source(nb_json: dict) -> str:
    for cell in nb_json.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell.get("source", "")
            return "".join(src) if isinstance(src, list) else src
    raise ParameterError("notebook has no cell tagged 'parameters'")


def parse_parameters(source: str) -> dict[str, Parameter]:
    """Parameters declared in a parameters cell: ``name = literal  # help``."""
    tree = ast.parse(source)
    lines = source.splitlines()
    params: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value_node = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value_node = node.target.id, node.value
        else:
            continue
        try:
            default = ast.literal_eval(value_node)
        except ValueError as exc:
            raise ParameterError(f"parameter {target!r} must be a literal ({exc})") from None
        line = lines[node.end_lineno - 1]
        comment = re.search(r"#\s*(.*)$", line)
        params[target] = Parameter(target, default, _type_name(default), comment.group(1).strip() if comment else "")
    return params


def notebook_metadata(chapter: str, notebook: str) -> dict[str, Any]:
    """The ``fmbook`` block of a notebook's front matter: description, ``budget_s`` per profile,
    ``accelerator_full`` and ``licences`` (empty where the notebook has none)."""
    nb_json = json.loads(notebook_path(chapter, notebook).read_text())
    return dict(nb_json.get("metadata", {}).get("fmbook") or {})


def notebook_parameters(chapter: str, notebook: str) -> dict[str, Parameter]:
    nb_json = json.loads(notebook_path(chapter, notebook).read_text())
    try:
        return parse_parameters(parameters_cell_source(nb_json))
    except ParameterError as exc:
        raise ParameterError(f"{chapter}/{notebook}: {exc}") from None


def load_profiles(chapter: str) -> dict[str, dict[str, dict[str, Any]]]:
    """The chapter's profiles.yml, checked for unknown profile, notebook and parameter names."""
    path = chapters_dir() / chapter / "profiles.yml"
    raw = yaml.safe_load(path.read_text()) if path.is_file() else {}
    raw = raw or {}
    notebooks = list_notebooks(chapter)
    declared = {nb: notebook_parameters(chapter, nb) for nb in notebooks}
    for profile, entries in raw.items():
        if profile not in PROFILES:
            raise ParameterError(f"{path}: unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
        for key, values in (entries or {}).items():
            if key != "_all" and key not in notebooks:
                raise ParameterError(f"{path}: profile {profile!r} names unknown notebook {key!r}; "
                                     f"allowed: _all, {', '.join(notebooks)}")
            scope = notebooks if key == "_all" else [key]
            for name, value in (values or {}).items():
                owners = [nb for nb in scope if name in declared[nb]]
                if not owners:
                    raise ParameterError(f"{path}: profile {profile!r}, {key}: unknown parameter {name!r}")
                for nb in owners:
                    check_value(declared[nb][name], value, f"{chapter}/{nb} ({profile})")
    return {p: raw.get(p) or {} for p in PROFILES}


def check_value(param: Parameter, value: Any, where: str = "") -> Any:
    """Refuse a value whose type does not match the parameter's default (ints pass for floats)."""
    expected = param.type_name
    ok = (
        expected == "None"
        or (expected == "float" and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (expected == "int" and isinstance(value, int) and not isinstance(value, bool))
        or (expected == "bool" and isinstance(value, bool))
        or (expected == "str" and isinstance(value, str))
        or (expected == "list" and isinstance(value, (list, tuple)))
        or (expected == "dict" and isinstance(value, dict))
    )
    if not ok:
        raise ParameterError(f"{where + ': ' if where else ''}parameter {param.name!r} expects {expected} "
                             f"(default {param.default!r}), got {type(value).__name__} {value!r}")
    if param.name == "profile" and value not in (*PROFILES, "auto"):
        raise _choices("profile", str(value), (*PROFILES, "auto"))
    if expected == "float":
        return float(value)
    if expected == "list":
        return list(value)
    return value


@dataclass(frozen=True)
class Resolved:
    chapter: str
    notebook: str
    profile: str
    values: dict[str, Any]
    sources: dict[str, str]  # name -> "default" | "profile" | "override"


def resolve(chapter: str, notebook: str, profile: str, overrides: dict[str, Any] | None = None) -> Resolved:
    """Defaults of the parameters cell <- profile values (``_all`` then per notebook) <- overrides."""
    check_profile(profile)
    declared = notebook_parameters(chapter, notebook)
    profile_values = load_profiles(chapter)[profile]
    values = {name: p.default for name, p in declared.items()}
    sources = {name: "default" for name in declared}
    for key in ("_all", notebook):
        for name, value in (profile_values.get(key) or {}).items():
            if name in declared:
                values[name] = check_value(declared[name], value)
                sources[name] = "profile"
    for name, value in (overrides or {}).items():
        if name not in declared:
            raise _choices(f"parameter of {chapter}/{notebook}", name, sorted(declared))
        values[name] = check_value(declared[name], value, f"{chapter}/{notebook}")
        sources[name] = "override"
    if "profile" in declared:
        values["profile"] = profile
        sources["profile"] = "override" if "profile" in (overrides or {}) else "runner"
    return Resolved(chapter, notebook, profile, values, sources)


def describe(chapter: str, notebook: str) -> str:
    """A text table of a notebook's parameters and each profile's values (``fmbook params``)."""
    declared = notebook_parameters(chapter, notebook)
    profiles = load_profiles(chapter)
    rows = [("name", "type", "default (local)", *[p for p in PROFILES if p != "local"], "help")]
    for name, param in declared.items():
        per_profile = []
        for profile in PROFILES:
            if profile == "local":
                continue
            value = "-"
            for key in ("_all", notebook):
                if name in (profiles[profile].get(key) or {}):
                    value = repr(profiles[profile][key][name])
            per_profile.append(value)
        rows.append((name, param.type_name, repr(param.default), *per_profile, param.help))
    widths = [min(max(len(str(r[i])) for r in rows), 40) for i in range(len(rows[0]) - 1)]
    out = [f"Parameters of {chapter}/{notebook} ('-': the default applies)"]
    for row in rows:
        cells = [str(c)[:40].ljust(w) for c, w in zip(row[:-1], widths)]
        out.append("  ".join(cells) + "  " + str(row[-1]))
    return "\n".join(out)
