"""One plan for every study: a study is an entry in the table of studies (ktlib.record.studies.STUDIES), and its
command, sweeps, layout and reader come with the entry."""
import pytest

import ktlib
from ktlib import cli
from ktlib.record import files, layout, reproduce, studies
from ktlib.record.plans import Design, Part, Plan

# A toy study: the paper's recipe on every class split, and one-of-n codes on the first split only, whose n=0 runs
# are the first part's (they copy nothing).
TOY = Design("toy", "a toy study: the paper's recipe, and one-of-n codes on the first split",
             base=dict(recipes=["frozen"]),
             parts=(Part("toy-plain"), Part("toy-one-of-n", "first", dict(code_scheme="one-of-n"), zero=False)),
             counts=lambda profile, splits: {"first": 1})


def test_a_new_study_is_one_table_entry_with_its_command_sweeps_layout_and_reader(monkeypatch, tmp_path, smoke_data):
    monkeypatch.setitem(studies.STUDIES, "toy", TOY)  # the one edit a new study needs
    where = dict(data_dir=str(smoke_data), results_dir=str(tmp_path))
    assert cli.main(["toy", "--profile", "smoke", "--splits", "2", "--data-dir", where["data_dir"],
                     "--results-dir", where["results_dir"], "--no-progress"]) == 0
    plan = ktlib.plan("toy", ktlib.Config.for_profile("smoke", **where), 2)
    rows = plan.runs()
    assert set(zip(rows.part, rows.split)) == {("toy-plain", 0), ("toy-plain", 1), ("toy-one-of-n", 0)}
    assert (rows[rows.part == "toy-one-of-n"].n > 0).all() and set(rows.recipe) == {"frozen"}
    for part, split in (("toy-plain", 1), ("toy-one-of-n", 0)):
        assert (layout.sweep_dir(plan.root, part, split) / files.RESULTS_FILE).exists()
    header, _ = files.read_results(layout.sweep_dir(plan.root, "toy-one-of-n", 0) / files.RESULTS_FILE)
    assert header["config"]["code_scheme"] == "one-of-n" and header["config"]["split"] == 0
    assert list(plan.sources().part) == ["toy-plain", "toy-plain", "toy-one-of-n"]
    assert set(plan.readouts().part) == {"toy-plain", "toy-one-of-n"}
    found = [name for name, _ in reproduce.sweeps(tmp_path)]  # what publish would copy, found without the plan
    assert found == [files.RESULTS_FILE, "study/toy-one-of-n/split-0", "study/toy-plain/split-0",
                     "study/toy-plain/split-1"]
    assert plan.run(progress=False).equals(rows)  # resumed: nothing trained again


def test_a_study_refuses_a_count_its_profile_does_not_name_and_a_part_over_no_count(tmp_path, smoke_data):
    cfg = ktlib.Config.for_profile("smoke", data_dir=str(smoke_data), results_dir=str(tmp_path))
    with pytest.raises(ValueError, match="splits must be an integer >= 1"):
        ktlib.plan("study", cfg, 0)
    odd = Design("odd", "a part over a count the design does not make", base={}, parts=(Part("a", "nowhere"),))
    with pytest.raises(ValueError, match="'nowhere'"):
        Plan.of(odd, cfg)


def test_no_two_studies_share_a_part_and_a_study_that_would_is_refused(monkeypatch, real_dir, tmp_path):
    """Every study keeps its sweeps under study/<part>/: a part of one study named like another's would write into
    its sweeps, so the table refuses it."""
    cfg = ktlib.Config.for_profile("smoke", data_dir=str(real_dir), results_dir=str(tmp_path))
    names = [p.name for name in studies.STUDIES for p in ktlib.plan(name, cfg).parts]
    assert len(names) == len(set(names))
    monkeypatch.setitem(studies.STUDIES, "clash", Design("clash", "a part named like the study's", base={},
                                                         parts=(Part("baseline"),)))
    with pytest.raises(ValueError, match="baseline.*study"):
        ktlib.plan("clash", cfg)
