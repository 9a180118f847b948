"""The repository documents itself: its model page, the files it cites, its experiment scripts."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def tracked_text_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:  # not a git checkout (an sdist): read what is there
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()]
    else:
        names = out.stdout.split()
    return [ROOT / n for n in names if n.endswith((".py", ".md", ".toml", ".sh", ".txt"))]


def test_no_file_cites_a_specification_a_clone_does_not_have():
    for path in tracked_text_files():
        if path.name == "test_docs.py":
            continue
        text = path.read_text(errors="replace")
        for needle in ("MODEL.md", "../shared", "shared/docs"):
            assert needle not in text, f"{path.relative_to(ROOT)} cites {needle}"


def test_model_page_covers_the_model():
    text = (ROOT / "docs" / "model.md").read_text()
    for topic in ("Eq. 4", "patience", "Bundled", "Separate", "Eq. 40", "Eq. 42",
                  "Gate-and-Route", "FI-WSP", "TPOT(X)", "fairness", "paper is silent"):
        assert topic in text, topic
    assert "docs/model.md" in (ROOT / "README.md").read_text()


def pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_resolves_to_a_file_of_the_repository():
    # [text](target): every target that is not a URL or an anchor names a file of the clone.
    for page in pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.is_file(), f"{page.relative_to(ROOT)} links {target}, which is missing"
            assert ROOT in path.parents, f"{page.relative_to(ROOT)} links outside: {target}"


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


def test_readme_is_a_front_page_whose_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    ci = (ROOT / ".ci" / "run").read_text().replace(" --quiet", "")
    for command in ('python3 -m pip install -e ".[test]"', "python3 -m pytest -q"):
        assert command in readme and command in ci, command
    assert "pip install . && jaxqueue convergence" in readme  # the main job on its defaults


def load_script(name, monkeypatch):
    # The scripts expose one CPU device per core before JAX starts, unless XLA_FLAGS says so.
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "") +
                       " --xla_force_host_platform_device_count=1")
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIGURES = ["fig2_pricing", "fig4_6_convergence", "fig7_policies", "fig8_sli",
           "fig9_10_sensitivity", "table1_dolly"]


@pytest.mark.parametrize("name", [*FIGURES, "sec63_policies"])
def test_experiment_help_is_whole_and_every_option_explained(name, monkeypatch, capsys):
    module = load_script(name, monkeypatch)
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit):
        module.main() if name == "sec63_policies" else module.common.command_line(
            module.__doc__, module.main)
    text = capsys.readouterr().out
    first = module.__doc__.strip().split("\n\n")[0]
    assert " ".join(first.split()) in " ".join(text.split())  # the whole first paragraph
    options = text.split("options:")[1]
    names = [line.split()[0] for line in options.splitlines() if line.strip().startswith("--")]
    assert len(names) >= 3
    assert " ".join(options.split()).count("(default:") == len(names)  # each option explained


def _docs_tables():
    path = ROOT / "scripts" / "docs_tables.py"
    spec = importlib.util.spec_from_file_location("docs_tables", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["docs_tables"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_every_generated_table_is_what_its_data_renders_to():
    tables = _docs_tables()
    assert tables.stale() == []
    for name, table in tables.TABLES.items():
        data = tables.load(name)
        if table.sources:  # a summary of other tables' data
            assert data["sources"].keys() == set(table.sources)
            continue
        # The data is the named commands' own output, not a transcription.
        assert data["commands"] == table.commands
        assert data["outputs"].keys() == table.commands.keys()


def test_a_hand_edited_number_in_a_generated_table_is_caught(tmp_path):
    tables = _docs_tables()
    name, table = next(iter(tables.TABLES.items()))
    page = tmp_path / table.page
    page.parent.mkdir(parents=True)
    text = (ROOT / table.page).read_text()
    block = tables._pattern(name).search(text).group(2)
    digit = re.search(r"\d", block)
    bumped = str((int(digit.group()) + 1) % 10)
    edited = block[:digit.start()] + bumped + block[digit.end():]
    page.write_text(text.replace(block, edited))
    for other in tables.TABLES.values():  # the other pages, unchanged
        if other.page != table.page:
            (tmp_path / other.page).write_text((ROOT / other.page).read_text())
    assert [s.split(" ")[0] for s in tables.stale(tmp_path)] == [name]


def _block(ref=None, z_spsa=None, z_es=None, gains=(0.5, 0.6), start=200.0, pooled=None):
    """A stored tuning block's summary, in the shape `tuning_bench.py --report --json` writes
    (``pooled``: the pooled z of both comparisons, as summaries made since it was computed)."""
    seeds = {str(k): {"gain": {"mean": g, "ci95": 0.1}} for k, g in enumerate(gains)}
    versus = {m: {"mean": 0.0, "se": 0.1, "z": z, "seeds": {"0": {}, "1": {}},
                  **({} if pooled is None else {"z_pooled": pooled, "se_pooled": 0.2})}
              for m, z in (("spsa", z_spsa), ("es", z_es)) if z is not None}
    problem = {"settings": {"estimator": "score", "rule": "rprop", "learning_rate": 0.3,
                            "steps": 20, "reps": 16, "temperature": 20.0,
                            "eval_reps": 128, "eval_horizon": 1000.0},
               "start": {"final": {"mean": start, "ci95": 0.1}},
               "methods": {"score": {"seeds": seeds, "mean_gain": {
                   "mean": sum(gains) / len(gains), "se": 0.05, "seeds": len(gains)}}},
               "gradient_versus": versus}
    if ref is not None:
        problem["reference_gain"] = {"mean": ref, "ci95": 0.1}
    return {"outputs": {"report": {"problems": {"dolly-tpot-100": problem}}}}


def test_the_tuning_scorecard_computes_each_bar_both_ways():
    tables = _docs_tables()
    sources = {
        "tuning_tpot50": _block(ref=1.0, gains=(0.95, 0.85)),                 # missed
        "tuning_fair200": _block(ref=1.0, gains=(0.95, 1.1),                  # met
                                 z_spsa=3.5, z_es=2.9, start=300.0),        # not both
        # no reference of its own: the one made from the same start on the same key
        "tuning_served_rep": _block(gains=(1.2, 0.8), start=300.0),
        "tuning_served": _block(z_spsa=3.1, z_es=4.0, start=250.0),          # both
        "tuning_rprop": _block(z_spsa=9.0, z_es=9.0),                        # superseded
        # over the seeds' errors both pass, pooled with the final key's noise neither does
        "tuning_averaged": _block(z_spsa=3.5, z_es=3.2, pooled=2.5, start=260.0),
        "tuning_many16": _block(ref=0.0, gains=(0.0, -0.5)),                  # lost
    }
    text = tables._tuning_scorecard({"sources": sources})
    bars = text.split("The benchmark's bars")[1]
    share, beat, lost = bars.strip().split("\n- ")[1:]
    assert "met by tuning_fair200 (0.95 to 1.10)" in share
    assert "missed by tuning_tpot50 (0.85 to 0.95), tuning_served_rep (0.80 to 1.20)" in share
    assert "| 1.00 ± 0.10 (tuning_fair200) | 0.80 to 1.20 |" in text
    assert beat.endswith("problem: tuning_served.")
    assert "| +3.5 (+2.5) | +3.2 (+2.5) |" in text and "tuning_averaged" not in beat
    assert "tuning_rprop" not in bars and "tuning_rprop (superseded)" in text
    assert lost.endswith("tuning_many16 seed 1 (-0.50 ± 0.10).")
    # Nothing met: the lines say so.
    none = tables._tuning_scorecard({"sources": {"tuning_tpot50": sources["tuning_tpot50"]}})
    assert "met by no block" in none and "at least one problem: no block" in none


def test_tuning_comparisons_pool_the_final_keys_noise_with_the_seeds():
    # Two seeds whose paired differences share the final key's noise e (the same replications)
    # and differ by 0.2 in their means: the seeds' standard error is 0.1, the key's that of
    # e's mean, and the pooled one both together.
    path = ROOT / "scripts" / "tuning_bench.py"
    spec = importlib.util.spec_from_file_location("tuning_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    e = np.array([-1.0, 1.0, -1.0, 1.0])
    runs = {"0": {"v": list(e + 1.0)}, "1": {"v": list(e + 1.2)}}
    others = {"0": {"v": [0.0] * 4}, "1": {"v": [0.0] * 4}}
    v = bench._paired(runs, others, ["0", "1"], "v")
    se_key = e.std(ddof=1) / 2.0
    assert v["mean"] == pytest.approx(1.1) and v["se"] == pytest.approx(0.1)
    assert v["z"] == pytest.approx(11.0)
    assert v["se_key"] == pytest.approx(se_key)
    assert v["se_pooled"] == pytest.approx(np.hypot(0.1, se_key))
    assert v["z_pooled"] == pytest.approx(1.1 / np.hypot(0.1, se_key))
    one = bench._paired(runs, others, ["0"], "v")  # one seed: its evaluation's own interval
    assert one["se_pooled"] == one["se"] and one["z_pooled"] == one["z"]


def test_rederiving_a_report_may_add_values_but_not_change_one():
    tables = _docs_tables()
    old = {"a": 1.0, "b": {"z": 3.2, "seeds": [1, 2]}}
    assert tables._kept(old, {"a": 1.0, "b": {"z": 3.2, "z_pooled": 2.6, "seeds": [1, 2]}}) == []
    assert tables._kept(old, {"a": 1.0, "b": {"z": 3.1, "seeds": [1, 2]}}) == ["/b/z"]
    assert tables._kept(old, {"a": 1.0, "b": {"seeds": [1, 3]}}) == ["/b/z", "/b/seeds[1]"]
    assert tables._kept(old, {"a": 1.0, "b": {"z": 3.2, "seeds": [1]}}) == ["/b/seeds"]
