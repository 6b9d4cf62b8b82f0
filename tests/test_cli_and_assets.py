"""The command line and the offline-asset registry: clear errors, checksums."""

from __future__ import annotations

import pytest

from fmbook.core import assets

from fmbook.book import cli


def test_params_command_lists_parameters_and_profiles(mini_book, capsys):
    assert cli.main(["params", "demo/01_first"]) == 0
    out = capsys.readouterr().out
    assert "Parameters of demo/01_first" in out and "scale" in out and "smoke" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "demo", "--profile", "huge"], "unknown profile 'huge'; allowed: smoke, local, full"),
    (["run", "nope"], "unknown chapter 'nope'; allowed: demo"),
    (["run", "demo", "-p", "bogus", "1"], "unknown parameter 'bogus'"),
    (["run", "demo", "-p", "n", "ten"], "parameter 'n' expects int"),
    (["fetch", "no-such-model"], "unknown asset 'no-such-model'; known assets: all-MiniLM-L6-v2, fashion-mnist"),
])
def test_bad_input_exits_2_and_names_what_is_allowed(mini_book, capsys, argv, message):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_overrides_are_read_as_yaml():
    assert cli._parse_overrides([["n", "3"], ["r", "0.5"], ["s", "[0, 1]"], ["b", "true"], ["t", "abc"]]) == {
        "n": 3, "r": 0.5, "s": [0, 1], "b": True, "t": "abc"}


def test_missing_asset_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path))
    monkeypatch.setenv("FMBOOK_AUTO_FETCH", "0")
    with pytest.raises(assets.AssetError, match="python -m fmbook fetch fashion-mnist"):
        assets.require("fashion-mnist")


def test_every_asset_has_licence_source_and_checksums():
    for asset in assets.ASSETS.values():
        assert asset.licence and asset.source and asset.sha256
        assert all(len(v) == 64 for v in asset.sha256.values())


@pytest.mark.parametrize("name", sorted(assets.ASSETS))
def test_fetched_assets_match_their_checksums(name):
    if not assets.is_ready(name):
        pytest.skip(f"{name} is not fetched (make fetch)")
    assets.verify(name)


def test_corrupted_asset_is_detected(tmp_path, monkeypatch):
    monkeypatch.setenv("FMBOOK_CACHE", str(tmp_path))
    asset = assets.ASSETS["fashion-mnist"]
    folder = asset.path()
    folder.mkdir(parents=True)
    for file in asset.sha256:
        (folder / file).write_bytes(b"not the data")
    (folder / "MANIFEST.json").write_text("{}")
    with pytest.raises(assets.AssetError, match="is corrupted; re-fetch with: python -m fmbook fetch --force fashion-mnist"):
        assets.verify("fashion-mnist")


def test_atomic_folder_moves_into_place_only_on_success(tmp_path):
    from fmbook.core.paths import atomic_folder

    target = tmp_path / "model"
    with atomic_folder(target) as staging:
        (staging / "weights").write_text("v1")
    assert (target / "weights").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as staging:
            (staging / "weights").write_text("half written")
            raise RuntimeError("interrupted")
    assert (target / "weights").read_text() == "v1" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_folder(target, replace=False) as staging:  # someone else's complete copy is kept
        (staging / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v1" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_folder(target, replace=lambda: True) as staging:
        (staging / "weights").write_text("v3")
    assert (target / "weights").read_text() == "v3"
