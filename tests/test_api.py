"""The public surface: `softhard/__init__.py` is the contract, flat and explicit."""

import ast
import pathlib
import re

import softhard as sh

ROOT = pathlib.Path(__file__).resolve().parent.parent
INIT = ROOT / "softhard" / "__init__.py"
DESIGN = ROOT.parent / "shared" / "DESIGN.md"


def _imported_names() -> list[str]:
    tree = ast.parse(INIT.read_text())
    names = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            for alias in node.names:
                # one `name as name` re-export each: nothing renamed, nothing starred
                assert alias.asname == alias.name, f"`{alias.name}` must be imported as itself"
                names.append(alias.name)
    return names


def test_all_is_exactly_the_explicit_reexports():
    names = _imported_names()
    assert len(names) == len(set(names)), "a name is imported twice"
    assert sorted(sh.__all__) == sorted(n for n in names if not n.startswith("_"))


def test_every_public_name_resolves_and_is_documented():
    for name in sh.__all__:
        obj = getattr(sh, name)
        assert getattr(obj, "__doc__", None), f"`softhard.{name}` has no docstring"


def test_contract_names_are_public():
    # the calls in DESIGN.md's contract table that exist must be in __all__
    text = DESIGN.read_text() if DESIGN.exists() else ""
    table = text.split("## The public contract", 1)[-1].split("\n## ", 1)[0]
    called = set(re.findall(r"`(\w+)\(", table))
    missing = {n for n in called if hasattr(sh, n) and n not in sh.__all__}
    assert not missing


def test_experiment_material_is_not_top_level():
    # reachable from its own module, kept out of the flat contract
    from softhard import reduced
    from softhard.diagnostics import saddles, setups

    for name in ("table3_model",):
        assert hasattr(setups, name) and name not in sh.__all__
    for name in ("format_report", "strict_saddle_report"):
        assert hasattr(saddles, name) and name not in sh.__all__
    for name in ("reduced_model", "reduced_risk", "reduced_risk_exact", "train_router"):
        assert hasattr(reduced, name) and name not in sh.__all__
