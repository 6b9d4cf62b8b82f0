"""What Colab does, minus the network: one notebook alone in an empty folder, a kernel without
``fmbook``, the library installed by the notebook's own bootstrap cell from a wheel of this repo,
then executed at the smoke profile (the profile's values come from the copy inside the wheel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from fmbook.core.paths import repo_root

ROOT = repo_root()
NOTEBOOK = "nmtune/01_noisy_pretraining"  # a notebook that also exercises the data assets


@pytest.mark.notebooks
def test_notebook_alone_installs_the_library_and_runs_at_smoke(tmp_path):
    source = ROOT / "notebooks" / f"{NOTEBOOK}.ipynb"
    if not source.is_file():
        pytest.skip(f"{NOTEBOOK} does not exist")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, text=True)
    wheel = next(dist.glob("fmbook-*.whl"))

    # A fresh environment that sees the heavy dependencies (torch, transformers, ipykernel) of the
    # book's environment, but not fmbook itself (its editable .pth is not processed from there).
    venv = tmp_path / "venv"
    # --without-pip: pip and setuptools then come from the book's environment too, as on Colab where
    # they are preinstalled (a venv's own old setuptools would not satisfy torch's requirement).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # A view of the book's site-packages without fmbook itself (an editable install leaves an
    # fmbook/_chapters folder there, which would import as a namespace package).
    deps = tmp_path / "book_deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("fmbook", "_editable_impl_fmbook", "__editable__")):
            (deps / entry.name).symlink_to(entry)
    Path(site, "book_deps.pth").write_text(str(deps) + "\n")
    probe = subprocess.run([str(python), "-c", "import fmbook"], capture_output=True, text=True)
    assert probe.returncode != 0, "the fresh environment must not see fmbook before the notebook installs it"

    kernels = tmp_path / "jupyter" / "kernels" / "colab-like"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "colab-like", "language": "python"}))

    work = tmp_path / "colab"
    work.mkdir()
    shutil.copy2(source, work / source.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMBOOK_") or k == "FMBOOK_CACHE"}
    env.update({"FMBOOK_PIP_SPEC": str(wheel), "JUPYTER_PATH": str(tmp_path / "jupyter"),
                "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    out = work / "executed.ipynb"
    proc = subprocess.run([sys.executable, "-m", "papermill", str(work / source.name), str(out), "-k", "colab-like",
                           "-p", "profile", "smoke", "--cwd", str(work), "--no-progress-bar"],
                          env=env, capture_output=True, text=True, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path(site, "fmbook", "_chapters", NOTEBOOK.split("/")[0], "profiles.yml").is_file()
    chapter, name = NOTEBOOK.split("/")
    record = json.loads((work / "results" / chapter / "smoke" / f"{name}.json").read_text())
    assert record["profile"] == "smoke"
    assert record["provenance"]["git"]["commit"] is None  # not a checkout: said so, not invented
    assert any(v == "profile" for v in record["parameter_sources"].values())
