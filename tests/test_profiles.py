"""Parameter discovery, profile resolution and validation (no notebook is executed)."""

import pytest

from fmbook.book import profiles as P


def test_parse_parameters_reads_literals_types_and_help():
    params = P.parse_parameters('profile = "auto"  # which profile\nseed = 3\nratios = [0.0, 0.1]  # noise\nx: float = 1.0\n')
    assert params["profile"].default == "auto" and params["profile"].help == "which profile"
    assert params["seed"].type_name == "int" and params["ratios"].type_name == "list"
    assert params["x"].type_name == "float"


def test_parse_parameters_refuses_non_literals():
    with pytest.raises(P.ParameterError, match="'n' must be a literal"):
        P.parse_parameters("n = len('abc')\n")


def test_resolve_applies_defaults_then_all_then_notebook_then_overrides(mini_book):
    r = P.resolve("demo", "01_first", "smoke", {"seed": 7})
    assert r.values == {"profile": "smoke", "seed": 7, "n": 3, "scale": 0.5, "label": "x", "fail": False}
    assert r.sources["n"] == "profile" and r.sources["seed"] == "override" and r.sources["label"] == "default"
    assert P.resolve("demo", "01_first", "local").values["n"] == 10
    assert P.resolve("demo", "02_second", "full").values["n"] == 1000


@pytest.mark.parametrize("call, message", [
    (lambda: P.resolve("demo", "01_first", "huge"), "unknown profile 'huge'; allowed: smoke, local, full"),
    (lambda: P.parse_target("nope"), "unknown chapter 'nope'; allowed: demo"),
    (lambda: P.parse_target("demo/03_x"), "unknown notebook of chapter 'demo' '03_x'; allowed: 01_first, 02_second"),
    (lambda: P.resolve("demo", "01_first", "smoke", {"nn": 1}), "unknown parameter of demo/01_first 'nn'"),
    (lambda: P.resolve("demo", "01_first", "smoke", {"n": "ten"}), "parameter 'n' expects int"),
    (lambda: P.resolve("demo", "01_first", "smoke", {"n": 1.5}), "parameter 'n' expects int"),
    (lambda: P.resolve("demo", "01_first", "smoke", {"fail": 1}), "parameter 'fail' expects bool"),
])
def test_bad_names_and_types_are_refused_with_the_allowed_values(mini_book, call, message):
    with pytest.raises(P.ParameterError) as info:
        call()
    assert message in str(info.value)


def test_ints_are_accepted_for_floats(mini_book):
    assert P.resolve("demo", "01_first", "smoke", {"scale": 2}).values["scale"] == 2.0


def test_profiles_file_with_unknown_names_is_refused(mini_book):
    path = mini_book / "notebooks/demo/profiles.yml"
    path.write_text("smoke:\n  01_first: {bogus: 1}\n")
    with pytest.raises(P.ParameterError, match="unknown parameter 'bogus'"):
        P.load_profiles("demo")
    path.write_text("tiny:\n  01_first: {n: 1}\n")
    with pytest.raises(P.ParameterError, match="unknown profile 'tiny'"):
        P.load_profiles("demo")
    path.write_text("smoke:\n  09_nothing: {n: 1}\n")
    with pytest.raises(P.ParameterError, match="unknown notebook '09_nothing'"):
        P.load_profiles("demo")


def test_describe_lists_every_parameter_and_profile(mini_book):
    text = P.describe("demo", "01_first")
    for word in ("scale", "smoke", "full", "0.5", "spread"):
        assert word in text
