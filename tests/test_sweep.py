import inspect
import json
import math
import signal
import subprocess
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, as_ordinary_user, dry_run, fingerprint, ktlib_cli, run, toc_notebooks, write_emnist

import ktlib
from ktlib import cli, config, paths
from ktlib.analysis import study
from ktlib.compute import data as D
from ktlib.compute import executors, experiment, native, train
from ktlib.compute.model import PAPER_FREE_PARAMETERS
from ktlib.compute.transfer import transfer
from ktlib.config import Purpose, derive_seed
from ktlib.paths import DATA_DIR_ENV
from ktlib.recipes import BASELINE, CORE, PROBES, RECIPES, STUDY, TUNED
from ktlib.record import checks, files, layout, studies, sweep, tables

NUMBERS = ["n", "retained", "k", "trial", "seed", "test_accuracy", "train_accuracy", "train_loss", "epochs",
           "stopped_by", "trainable_parameters"]  # everything but wall time and commit


def small(tmp_path, data_dir, **overrides) -> ktlib.Config:
    """The smoke profile, shrunk further to fit the tests' tiny synthetic EMNIST."""
    base = dict(data_dir=str(data_dir), results_dir=str(tmp_path / "results"), source_per_class=10,
                test_per_class=5, levels=[0, 3, 5], sizes=[1, 2], trials=2, max_epochs=20)
    return ktlib.Config.for_profile("smoke", **{**base, **overrides})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_emnist(tmp_path_factory.mktemp("emnist"), {"train": 14, "test": 10})


# --------------------------------------------------------------------------- config


def test_paper_profile_is_the_papers_protocol():
    cfg = ktlib.Config()
    assert (cfg.profile, cfg.levels, cfg.sizes, cfg.trials) == ("paper", [0, 1, 2, 3, 4, 5], [1, 5, 10, 20, 40], 5)
    assert (cfg.n_classes, cfg.source_per_class, cfg.source_accuracy, cfg.test_per_class) == (20, 400, 0.9438, 50)
    assert cfg.n_classes * cfg.test_per_class == 1000


def test_every_notebook_has_the_parameters_of_the_notebook_setup_helper():
    helper = set(inspect.signature(ktlib.Config.for_notebook).parameters) - {"cls"}
    assert helper <= {f.name for f in fields(ktlib.Config)}
    for name in toc_notebooks():
        cells = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", 4).cells
        parameters = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
        assert len(parameters) == 1, name
        names = {line.split("=")[0].strip() for line in parameters[0].source.splitlines() if "=" in line}
        assert helper <= names <= helper | {"splits", "orders", "draws"}, name  # the studies' notebooks: their size
        assert "ktlib.Config.for_notebook(" in "".join(c.source for c in cells), name


@pytest.mark.parametrize("overrides, message", [
    (dict(profile="huge"), "profile must be one of"),
    (dict(levels=[0, 6]), r"must be an integer in 0\.\.5"),
    (dict(sizes=[0, 1]), "sizes integers >= 1"),
    (dict(sizes=[2.5]), "sizes integers >= 1"),
    (dict(levels=[2.5]), r"must be an integer in 0\.\.5"),
    (dict(trials=0), "trials must be an integer >= 1, got 0"),
    (dict(source_accuracy=1.5), r"source_accuracy must be a number in \(0, 1\]"),
    (dict(engine="gpu"), "engine must be one of"),
    (dict(workers=0), "workers must be an integer >= 1"),
    (dict(seed="abc"), "seed must be an integer >= 0, got 'abc'"),
    (dict(seed=1.5), "seed must be an integer >= 0, got 1.5"),
    (dict(seed=-1), "seed must be an integer >= 0"),
    (dict(trials=1.5), "trials must be an integer >= 1"),
    (dict(lr="fast"), "lr must be a number > 0"),
    (dict(batch_size=64), "batch_size=64: the native engine takes batches of at most 32"),
    (dict(code_bits=16), "code_bits=16: the native engine is built for 20 code bits"),
    (dict(code_scheme="one-of-n", code_bits=21, engine="batched"), "code_bits must equal n_classes"),
])
def test_bad_configs_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        ktlib.Config(**overrides)


def test_results_dir_comes_from_the_argument_then_the_environment_then_the_profile(monkeypatch):
    monkeypatch.delenv(paths.RESULTS_DIR_ENV, raising=False)
    assert ktlib.Config().results_dir == str(Path.cwd() / "results" / "paper")
    assert ktlib.Config.for_profile("smoke").results_dir == str(Path.cwd() / "results" / "smoke")
    monkeypatch.setenv(paths.RESULTS_DIR_ENV, "/tmp/elsewhere")
    assert ktlib.Config().results_dir == "/tmp/elsewhere"
    assert ktlib.Config(results_dir="given").results_dir == str(Path.cwd() / "given")


def test_the_native_engines_limits_are_those_its_kernels_were_built_for():
    from ktlib.compute import native
    lib = native.library()
    assert (lib.kt_max_batch(), lib.kt_code_bits()) == (native.MAX_BATCH, native.CODE_BITS)
    assert ktlib.Config(batch_size=native.MAX_BATCH).batch_size == native.MAX_BATCH
    assert ktlib.Config(batch_size=64, engine="batched").batch_size == 64  # the other engines take any size


def test_the_engine_is_part_of_the_experiment_and_the_worker_count_is_not():
    base = ktlib.Config().experiment()
    assert base["engine"] == "native" and "workers" not in base
    assert ktlib.Config(workers=1).experiment() == base
    assert ktlib.Config(engine="plain").experiment() != base
    assert ktlib.Config(engine="batched").experiment() != base


def test_numpy_integers_are_accepted_and_stored_as_ints():
    cfg = ktlib.Config(levels=list(np.arange(3)), sizes=list(np.array([5, 1, 5])))
    assert (cfg.levels, cfg.sizes) == ([0, 1, 2], [1, 5])
    assert all(type(v) is int for v in cfg.levels + cfg.sizes)
    json.dumps(cfg.experiment())  # the results file's metadata must serialise


def test_seed_purposes_keep_their_values_and_give_independent_seeds():
    # the committed record's seeds were derived with these values: none may move, and a new purpose takes a new one
    recorded = {"SPLIT": 0, "SOURCE_DATA": 1, "SOURCE_INIT": 2, "SOURCE_CODES": 3, "TARGET_CODES": 4, "TEST_DATA": 5,
                "TRIAL": 6, "SPLIT_SEED": 7, "RANDOM_SOURCE": 8, "SOURCE_TEST": 9, "BOOTSTRAP": 10, "SHUFFLE": 11,
                "COVERAGE": 12}
    assert {p.name: int(p) for p in Purpose if p.name in recorded} == recorded
    assert len({int(p) for p in Purpose}) == len(Purpose)
    trials = {derive_seed(0, Purpose.TRIAL, k, t) for k in (1, 5) for t in (0, 1)}
    assert len({derive_seed(0, p) for p in Purpose} | trials) == len(Purpose) + len(trials)


def test_the_committed_record_was_made_with_the_seeds_derived_today():
    meta, rows = ktlib.read_results(layout.record_path("paper"))
    seed = meta["config"]["seed"]
    for (k, trial), s in rows.groupby(["k", "trial"]).seed.first().items():
        assert s == derive_seed(seed, Purpose.TRIAL, k, trial)


def test_split_zero_is_the_seeds_own_and_other_splits_draw_their_own(tmp_path, data_dir):
    assert ktlib.Config(seed=3).split_seed() == ktlib.Config(seed=3, split=0).split_seed() == 3
    assert len({ktlib.Config(seed=3, split=s).split_seed() for s in range(5)}) == 5
    splits = [experiment.Experiment.load(small(tmp_path, data_dir, split=s)).split for s in range(3)]
    assert len(set(splits)) == 3


def test_each_recipe_runs_every_n_above_zero_and_the_n0_runs_are_shared():
    cfg = ktlib.Config(levels=[0, 2, 5], sizes=[1, 5], trials=2, recipes=["shuffled", "fine-tuned", "frozen"])
    assert cfg.recipes == ["frozen", "fine-tuned", "shuffled"]  # in RECIPES' order, whatever order they were given in
    grid = experiment.grid(cfg)
    assert len(grid) == len(set(grid)) == 2 * 2 * (1 + 2 * 3)
    assert {key.recipe for key in grid if key.n == 0} == {BASELINE}
    with pytest.raises(ValueError, match="recipe must be one of"):
        ktlib.Config(recipes=["thawed"])


def test_the_plain_record_is_todays_plain_experiment_and_another_with_more_recipes():
    meta, rows = ktlib.read_results(layout.record_path("paper", "plain"))
    assert (rows.recipe == BASELINE).all()
    today = ktlib.Config(engine="plain").experiment()
    assert not checks.experiment_differences(meta, {**meta, "config": today})
    assert checks.experiment_differences(meta, {**meta, "config": {**today, "recipes": list(RECIPES)}})


# --------------------------------------------------------------------------- the sweep


def test_sweep_writes_one_tidy_row_per_run_with_provenance(tmp_path, data_dir):
    cfg = small(tmp_path, data_dir)
    rows = ktlib.run(cfg, progress=False)
    assert len(rows) == 3 * 2 * 2 and not rows.duplicated(["n", "k", "trial"]).any()
    assert list(rows.columns) == train.COLUMNS
    assert rows["test_accuracy"].between(0, 1).all() and (rows["epochs"] >= 1).all()
    assert set(rows["stopped_by"]) <= {"fit", "plateau", "cap"}
    assert (rows.groupby(["k", "trial"])["seed"].nunique() == 1).all()  # a trial's seed is shared by every n
    expected = {n: sum(list(PAPER_FREE_PARAMETERS.values())[n:]) for n in (0, 3, 5)}
    assert rows.set_index("n")["trainable_parameters"].to_dict() == expected
    meta, on_disk = ktlib.read_results(Path(cfg.results_dir) / files.RESULTS_FILE)
    assert len(on_disk) == 12
    assert meta["config"] == cfg.experiment() and meta["config"]["seed"] == cfg.seed
    assert set(meta["data_checksums"]) == set(D.data_files())
    assert {"torch", "numpy", "python", "ktlib", "cpu", "native_target"} <= set(meta["versions"])
    assert meta["versions"]["native_compiler"] == native.compiler_version() != "unknown"  # the kernels' compiler
    assert meta["git_commit"] and len(meta["source_classes"]) == len(meta["target_classes"]) == 20
    assert {"train_accuracy", "epochs", "seconds", "state_sha256", "seed"} <= set(meta["source"])
    assert tables.mean_table(rows).shape == (3, 2)
    record = files.read_source_record(cfg.results_dir)  # the source net's curve, readable without torch
    assert len(record["history"]) == record["epochs"] == meta["source"]["epochs"]
    assert record["state_sha256"] == meta["source"]["state_sha256"]


def test_training_test_and_source_sets_are_disjoint_and_from_the_right_split(tmp_path, data_dir):
    exp = experiment.Experiment.load(small(tmp_path, data_dir, sizes=[1, 4]))
    assert not set(exp.split.source) & set(exp.split.target)
    source = exp.source_set()
    assert set(exp.data.train.labels[source.index]) == set(exp.split.source)
    test = exp.test_set()
    assert len(test.y) == 20 * exp.cfg.test_per_class
    assert set(exp.data.test.labels[test.index]) == set(exp.split.target)  # from the test split
    for k in (1, 4):
        for trial in range(2):
            train, _ = exp.trial_set(k, trial)
            assert set(exp.data.train.labels[train.index]) == set(exp.split.target)
            assert np.bincount(train.y).tolist() == [k] * 20
            assert not set(train.index) & set(source.index)  # same split, other classes


def test_validation_images_are_as_many_as_the_test_images_and_none_of_them(tmp_path, data_dir):
    exp = experiment.Experiment.load(small(tmp_path, data_dir))
    test, valid = exp.test_set(), exp.validation_set()
    assert np.bincount(valid.y).tolist() == np.bincount(test.y).tolist() == [exp.cfg.test_per_class] * 20
    rest = np.flatnonzero(~np.isin(np.arange(len(exp.data.test.labels)), test.index))
    held = rest[valid.index]  # the validation set's images, as indices into the test file
    assert not set(held) & set(test.index)
    assert (exp.data.test.labels[held] == np.array(exp.split.target)[valid.y]).all()
    assert (exp.validation_set().x == valid.x).all()  # drawn by its own seed, the same every time


def test_too_few_test_file_images_for_validation_is_refused_naming_the_classes(tmp_path, data_dir):
    with pytest.raises(D.DataError, match="fewer than 12 test-file images"):
        experiment.Experiment.load(small(tmp_path, data_dir, test_per_class=6))


def test_a_reseeded_replicate_keeps_the_classes_and_held_out_images_and_draws_the_rest_again(tmp_path, data_dir):
    own, again = (experiment.Experiment.load(small(tmp_path, data_dir, reseed=r)) for r in (0, 1))
    assert own.split == again.split
    assert (own.test_set().index == again.test_set().index).all()
    assert (own.validation_set().x == again.validation_set().x).all()
    assert own.trial_seed(1, 0) != again.trial_seed(1, 0) and own.source_key() != again.source_key()
    assert "reseed" not in own.cfg.experiment() and again.cfg.experiment()["reseed"] == 1


def test_the_test_curve_is_read_at_each_power_of_two_steps_and_at_the_last_step(tmp_path, data_dir):
    rows = ktlib.run(small(tmp_path, data_dir), progress=False)
    for r in rows.itertuples():
        steps = [s for s, _ in train.curve_points(r.test_curve)]
        per_epoch = math.ceil(r.k * 20 / 32)
        assert steps[-1] == r.epochs * per_epoch and steps == sorted(set(steps))
        assert all(s & (s - 1) == 0 or (s - per_epoch).bit_length() < s.bit_length() for s in steps[:-1])
        assert train.curve_points(r.test_curve)[-1][1] == r.test_accuracy


@pytest.mark.parametrize("engine", ["native", "batched"])
def test_the_plain_path_and_the_engine_give_the_same_runs_within_rounding(tmp_path, data_dir, engine):
    fast = ktlib.run(small(tmp_path / engine, data_dir, levels=[0, 2, 4, 5], engine=engine), progress=False)
    plain = ktlib.run(small(tmp_path / "plain", data_dir, levels=[0, 2, 4, 5], engine="plain"), progress=False)
    both = fast.merge(plain, on=["n", "k", "trial", "seed"], suffixes=("", "_plain"))
    assert len(both) == 16 and (both.epochs == both.epochs_plain).all()  # here every run trains 20 epochs
    assert both.train_loss.to_numpy() == pytest.approx(both.train_loss_plain.to_numpy(), rel=1e-5)
    assert (both.test_accuracy == both.test_accuracy_plain).all()
    assert (both.validation_accuracy == both.validation_accuracy_plain).all()
    assert (both.test_curve == both.test_curve_plain).all()  # read at the same steps, to the same accuracies
    with pytest.raises(RuntimeError, match="holds runs of another experiment"):
        ktlib.run(small(tmp_path / engine, data_dir, levels=[0, 2, 4, 5], engine="plain"), progress=False)


def test_the_engine_gives_the_same_numbers_on_one_worker_or_two(tmp_path, data_dir):
    one = ktlib.run(small(tmp_path / "one", data_dir, workers=1), progress=False)
    two = ktlib.run(small(tmp_path / "two", data_dir, workers=2), progress=False)
    assert one[NUMBERS].equals(two[NUMBERS])


def test_run_applies_overrides_to_a_given_config(tmp_path, data_dir):
    rows = ktlib.run(small(tmp_path, data_dir), progress=False, levels=[5], sizes=[1], trials=1)
    assert rows[["n", "k", "trial"]].values.tolist() == [[5, 1, 0]]


def test_same_seed_and_config_give_the_same_numbers(tmp_path, data_dir):
    a = ktlib.run(small(tmp_path / "a", data_dir), progress=False)
    b = ktlib.run(small(tmp_path / "b", data_dir), progress=False)
    assert a[NUMBERS].equals(b[NUMBERS])
    c = ktlib.run(small(tmp_path / "c", data_dir, seed=1), progress=False)
    assert not a[NUMBERS].equals(c[NUMBERS])


def test_a_rerun_reuses_the_source_net_and_the_finished_runs(tmp_path, data_dir):
    cfg = small(tmp_path, data_dir)
    first = ktlib.run(cfg, progress=False)
    csv, source = (Path(cfg.results_dir) / f for f in (files.RESULTS_FILE, files.SOURCE_FILE))
    stamps = csv.stat().st_mtime_ns, source.stat().st_mtime_ns
    again = ktlib.run(cfg, progress=False)
    assert (csv.stat().st_mtime_ns, source.stat().st_mtime_ns) == stamps  # nothing was redone
    assert first.equals(again)


def test_resuming_with_another_config_is_refused_naming_the_fields(tmp_path, data_dir):
    ktlib.run(small(tmp_path, data_dir, sizes=[1]), progress=False)
    with pytest.raises(RuntimeError, match=r"holds runs of another experiment: config.max_epochs \(20 there, 21 now\)"):
        ktlib.run(small(tmp_path, data_dir, sizes=[1], max_epochs=21), progress=False)
    with pytest.raises(RuntimeError, match=r"config.lr \(0.001 there, 0.002 now\)"):
        ktlib.run(small(tmp_path, data_dir, sizes=[1], lr=0.002), progress=False)


@pytest.mark.parametrize("kept", [("sweep.csv", "source.json"), ("source.json",), ("source.pt", "source.json")],
                         ids=["committed-record", "source-record-only", "source-net-only"])
def test_a_refused_config_changes_nothing_in_the_directory(tmp_path, data_dir, kept):
    """The committed record's layout (no source.pt) and others: seed 1 is refused before any training or write."""
    cfg = small(tmp_path, data_dir, sizes=[1])
    ktlib.run(cfg, progress=False)
    where = Path(cfg.results_dir)
    for p in where.iterdir():
        if p.name not in kept:
            p.unlink()
    before = fingerprint(where)
    with pytest.raises(RuntimeError, match=r"seed \(0 there, 1 now\)|trained under another configuration"):
        ktlib.run(small(tmp_path, data_dir, sizes=[1], seed=1), progress=False)
    with pytest.raises(RuntimeError, match=r"seed \(0 there, 1 now\)|trained under another configuration"):
        sweep.train_or_load_source(small(tmp_path, data_dir, sizes=[1], seed=1), progress=False)  # the source notebook's call
    assert fingerprint(where) == before


def test_a_source_net_that_differs_from_the_record_is_not_written(tmp_path, data_dir):
    cfg = small(tmp_path, data_dir, sizes=[1])
    ktlib.run(cfg, progress=False)
    where = Path(cfg.results_dir)
    (where / files.SOURCE_FILE).unlink()
    record = json.loads((where / files.SOURCE_RECORD).read_text())
    record["state_sha256"] = "0" * 64  # as if another machine had trained it
    (where / files.SOURCE_RECORD).write_text(json.dumps(record))
    before = fingerprint(where)
    with pytest.raises(RuntimeError, match="is not the one .*source.json was made with.*nothing was written"):
        sweep.train_or_load_source(cfg, progress=False)
    assert fingerprint(where) == before


@pytest.mark.parametrize("content", ["[]", '{"key": 3}'])
def test_a_source_record_that_is_not_one_is_one_error_naming_it_and_nothing_changes(tmp_path, smoke_data, content):
    where = tmp_path / "results"
    assert run(ktlib_cli(*dry_run(smoke_data, where))).returncode == 0
    (where / files.SOURCE_RECORD).write_text(content)
    before = fingerprint(where)
    out = run(ktlib_cli(*dry_run(smoke_data, where)))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"{where / files.SOURCE_RECORD} is not a source net's record" in out.stderr
    assert fingerprint(where) == before


def test_a_results_file_whose_last_row_was_cut_is_detected_and_the_run_redone(tmp_path, data_dir, capfd):
    cfg = small(tmp_path, data_dir)
    whole = ktlib.run(cfg, progress=False)
    path = Path(cfg.results_dir) / files.RESULTS_FILE
    text = path.read_text()
    path.write_text(text[:text.rstrip("\n").rindex(",")])  # cut inside the last row, as a failing copy would
    with pytest.raises(files.ResultsError, match="its last row was cut short"):
        ktlib.read_results(path)
    again = ktlib.run(cfg, progress=False)
    assert "its last row was cut short; that run is done again" in capfd.readouterr().err
    assert again[NUMBERS].equals(whole[NUMBERS]) and not again.drop(columns=list(files.OPTIONAL)).isna().any().any()


def test_a_damaged_row_inside_a_results_file_is_an_error_naming_the_line(tmp_path, data_dir):
    cfg = small(tmp_path, data_dir, sizes=[1])
    ktlib.run(cfg, progress=False)
    path = Path(cfg.results_dir) / files.RESULTS_FILE
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].split(",", 3)[0] + "\n"
    path.write_text("".join(lines))
    with pytest.raises(files.ResultsError, match=r"sweep.csv:4: a row with missing values"):
        ktlib.run(cfg, progress=False)


@pytest.mark.parametrize("curve, message", [("", "a row with missing values"), ("4:0.5 2:0.6", "is not a test curve"),
                                            ("1:1.5", "is not a test curve")])
def test_a_damaged_test_curve_is_an_error_naming_the_line(tmp_path, data_dir, curve, message):
    cfg = small(tmp_path, data_dir, sizes=[1])
    ktlib.run(cfg, progress=False)
    path = Path(cfg.results_dir) / files.RESULTS_FILE
    meta, rows = files.read_results(path)
    rows.loc[1, "test_curve"] = curve
    files.write_results(path, meta, rows)
    with pytest.raises(files.ResultsError, match=f"sweep.csv:4: .*{message}"):
        files.read_results(path)


def test_a_record_from_before_the_validation_images_reads_with_those_columns_empty(tmp_path, data_dir):
    cfg = small(tmp_path, data_dir, sizes=[1])
    ktlib.run(cfg, progress=False)
    path = Path(cfg.results_dir) / files.RESULTS_FILE
    meta, rows = files.read_results(path)
    files.write_results(path, meta, rows.drop(columns=list(files.LATER)))
    _, older = files.read_results(path)
    assert older.validation_accuracy.isna().all() and older.drop(columns=list(files.LATER)).equals(
        rows.drop(columns=list(files.LATER)))


def test_a_sweep_removes_the_temporary_files_of_killed_writers(tmp_path, data_dir):
    cfg = small(tmp_path, data_dir, sizes=[1])
    where = Path(cfg.results_dir)
    where.mkdir(parents=True)
    for name in (".source.pt.123.abcd1234.part", ".sweep.csv.456.0000ffff.part", ".source.json.7.00000000.part"):
        (where / name).write_bytes(b"half written")
    ktlib.run(cfg, progress=False)
    assert not list(where.glob(".*.part"))


def test_an_unwritable_results_directory_is_refused_before_training(tmp_path, smoke_data):
    where = tmp_path / "read-only"
    where.mkdir()
    where.chmod(0o555)
    try:
        out = run(as_ordinary_user(ktlib_cli(*dry_run(smoke_data, where))))
    finally:
        where.chmod(0o755)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"results directory {where} cannot be written: Permission denied" in out.stderr
    assert "source net" not in out.stderr  # its progress bar never started
    assert not list(where.iterdir())


@pytest.mark.parametrize("option, message", [
    (["--trials", "0"], "trials must be an integer >= 1, got 0"),  # not the profile's default in its place
    (["--seed", "-3"], "seed must be an integer >= 0, got -3"),
    (["--levels", "-1"], "n (retained levels) must be an integer in 0..5, got -1\n"),  # and says nothing of n=6
    (["--sizes", "100000"], "have 100000 training and 10 test images; 20 target classes were asked for"),
    (["--cluster", "local:100000"], "would start 100000 worker processes here"),
    (["--trials", "100000000"], "trials=100000000: at most 1000. Each draws its images and initial weights from a "
                                "31-bit seed"),
])
def test_the_cli_refuses_bad_values_before_any_work(tmp_path, smoke_data, option, message):
    out = run(ktlib_cli(*dry_run(smoke_data, tmp_path / "r", *option)))
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command, option, value", [("study", "--splits", "1000000"),
                                                    ("breadth", "--orders", "100000000000000000000"),
                                                    ("sweep", "--trials", "1001")])
def test_replicates_beyond_what_the_seed_space_keeps_apart_are_refused_before_anything_is_allocated(
        tmp_path, smoke_data, capsys, command, option, value):
    start = time.monotonic()
    assert cli.main([command, "--dry-run", "--data-dir", str(smoke_data), "--results-dir", str(tmp_path / "r"),
                     option, value]) == 2
    name = option.removeprefix("--")
    assert (f"{name}={value}: at most {config.MAX_REPLICATES}. Each draws its images and initial weights from a 31-bit "
            f"seed, and two that share one are one run counted twice") in capsys.readouterr().err
    assert time.monotonic() - start < 10 and not (tmp_path / "r").exists()


# The child takes SIGINT as a terminal's Ctrl-C would, even when the tests run as a shell's background job, which
# starts with SIGINT ignored (the test then failed: the child never saw the signal and finished with 0). It waits a
# second before each group of runs, so that the signal lands mid-sweep however fast or busy the machine is.
CHILD = """
import json, signal, sys, time, ktlib
from ktlib.compute import executors
signal.signal(signal.SIGINT, signal.default_int_handler)
train_group = executors.train_group
def slow_group(*args, **kwargs):
    time.sleep(1.0)
    return train_group(*args, **kwargs)
executors.train_group = slow_group
ktlib.run(ktlib.Config.for_profile("smoke", **json.loads(sys.argv[1])), progress=False)
"""


@pytest.mark.parametrize("sig, where", [(signal.SIGKILL, None), (signal.SIGINT, None), (signal.SIGKILL, "local:2")],
                         ids=["SIGKILL", "SIGINT", "SIGKILL-cluster"])
def test_an_interrupted_sweep_resumes_to_the_same_results(tmp_path, data_dir, sig, where):
    """Kill a real sweep process part-way (on a cluster: the client, the files' one writer), check the file
    it left, finish it, compare with an unbroken run in this process."""
    cfg = small(tmp_path, data_dir, levels=[0, 1, 2, 3, 4, 5], sizes=[1, 3], max_epochs=60, cluster=where)
    args = {k: v for k, v in asdict(cfg).items() if k != "profile"}
    csv = Path(cfg.results_dir) / files.RESULTS_FILE
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (csv.exists() and len(ktlib.read_results(csv)[1]) >= 3):
        assert child.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.02)
    child.send_signal(sig)
    _, err = child.communicate(timeout=60)
    assert child.returncode != 0
    if sig == signal.SIGINT:
        assert "run again to resume" in err

    _, partial = ktlib.read_results(csv)  # whatever moment it died, the file is whole
    assert 3 <= len(partial) < 24 and not partial.duplicated(["n", "k", "trial"]).any()

    resumed = ktlib.run(cfg, progress=False)
    assert not [p for p in csv.parent.iterdir() if p.name.endswith(".part")]
    unbroken = ktlib.run(small(tmp_path / "unbroken", data_dir, levels=[0, 1, 2, 3, 4, 5], sizes=[1, 3],
                               max_epochs=60), progress=False)
    assert len(resumed) == 24
    assert resumed[NUMBERS].equals(unbroken[NUMBERS])
    kept = resumed.merge(partial, on=["n", "k", "trial"], suffixes=("", "_before"))
    assert (kept["seconds"] == kept["seconds_before"]).all()  # finished runs were not redone


# --------------------------------------------------------------------------- command line


def test_cli_reports_a_missing_data_dir_without_a_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    out = subprocess.run([sys.executable, "-m", "ktlib", "sweep", "--dry-run", "--data-dir", str(tmp_path / "no")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "ktlib: error:" in out.stderr and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_cli_dry_run_on_the_real_subset(real_dir, tmp_path):
    out = subprocess.run([sys.executable, "-m", "ktlib", "sweep", "--dry-run", "--no-progress", "--data-dir",
                          str(real_dir), "--results-dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "2 runs in" in out.stdout and "mean test accuracy" in out.stdout
    assert len(ktlib.read_results(tmp_path / files.RESULTS_FILE)[1]) == 2


def test_a_sweep_keeps_every_runs_test_predictions_which_give_its_test_accuracy(tmp_path, data_dir):
    cfg = small(tmp_path, data_dir, recipes=list(RECIPES), sizes=[1])
    rows = ktlib.run(cfg, progress=False)
    assert set(rows.recipe) == set(RECIPES) and len(rows) == 2 * (1 + 2 * len(RECIPES))
    keys, predicted, labels = files.read_predictions(cfg.results_dir)
    assert predicted.shape == (len(rows), 20 * cfg.test_per_class) and predicted.dtype == np.uint8
    accuracy = pd.DataFrame({**keys, "from_predictions": (predicted == labels).mean(1)})
    both = rows.merge(accuracy, on=experiment.KEY)
    assert len(both) == len(rows)
    assert np.allclose(both.test_accuracy, both.from_predictions, atol=1e-6)


def test_fine_tuned_runs_train_every_parameter_and_the_controls_the_frozen_count(tmp_path, data_dir):
    rows = ktlib.run(small(tmp_path, data_dir, recipes=list(RECIPES), sizes=[1], trials=1), progress=False)
    count = rows.set_index(["recipe", "n"]).trainable_parameters
    total = sum(PAPER_FREE_PARAMETERS.values())
    for recipe in RECIPES:
        expected = total if RECIPES[recipe].trains else count["frozen", 3]
        assert count[recipe, 3] == expected and count[BASELINE, 0] == total
    assert count["frozen", 3] < total


def test_only_runs_that_train_copied_layers_measure_the_source_task(tmp_path, data_dir):
    rows = ktlib.run(small(tmp_path, data_dir, recipes=list(RECIPES), sizes=[1], trials=1), progress=False)
    measured = rows.source_task_accuracy.notna()
    assert (measured == rows.recipe.map(lambda r: RECIPES[r].trains) & (rows.n > 0)).all()
    assert rows[measured].source_task_accuracy.between(0, 1).all()


def test_copied_layers_that_have_not_trained_yet_forget_nothing_of_the_source_task(tmp_path, data_dir):
    exp, source, info = sweep.train_or_load_source(small(tmp_path, data_dir, recipes=[TUNED]), progress=False)
    task = exp.task(source)
    for n in (1, 5):
        untrained = transfer(source, n, seed=3, recipe=TUNED)
        assert executors.forgotten(task, untrained, experiment.RunKey(n, 1, 0, TUNED)) == info["held_out_accuracy"]
    assert np.isnan(executors.forgotten(task, transfer(source, 5, seed=3), experiment.RunKey(5, 1, 0, "frozen")))


def test_the_engine_trains_the_source_net_as_the_plain_loop_does(tmp_path, data_dir):
    infos = [sweep.train_or_load_source(small(tmp_path / how, data_dir, source_training=how, source_max_epochs=3),
                           progress=False)[2] for how in ("plain", "engine")]
    plain, fast = ([h["train_loss"] for h in info["history"]] for info in infos)
    assert fast == pytest.approx(plain, rel=1e-5)
    assert infos[0]["held_out_accuracy"] == pytest.approx(infos[1]["held_out_accuracy"], abs=0.02)
    assert infos[0]["state_sha256"] != infos[1]["state_sha256"]  # the same steps, rounded differently


def test_a_study_runs_every_split_recipe_and_variant_and_resumes_without_retraining(tmp_path, smoke_data):
    cfg = ktlib.Config.for_profile("smoke", data_dir=str(smoke_data), results_dir=str(tmp_path))
    plan = studies.plan("study", cfg)
    rows = plan.run(progress=False)
    assert rows.groupby("part").split.nunique().to_dict() == {"baseline": 2, **{p.name: 1 for p in plan.parts[1:]}}
    assert set(rows[rows.part == "baseline"].recipe) == set(CORE)
    probes = rows[rows.part == "probes"]
    assert set(probes.recipe) == set(PROBES) and (probes.n > 0).all()  # their n=0 runs: the baseline's
    assert set(study.with_probes(rows, plan.counts["variant_splits"]).recipe) == set(STUDY)
    assert set(rows[rows.part.isin(studies.VARIANTS)].recipe) == {BASELINE}
    readouts = plan.readouts()
    assert set(readouts.readout) == {"nearest-mean", "nearest-neighbour"}
    frozen_kinds = {r for r in STUDY if not RECIPES[r].trains}  # the study's recipes whose features stay as copied
    assert set(readouts[readouts.part == "baseline"].recipe) == frozen_kinds & set(CORE)
    assert set(study.with_probes(readouts, plan.counts["variant_splits"]).recipe) == frozen_kinds
    budget = rows[rows.part == "budget"]
    assert (budget.epochs == studies.BUDGET_EPOCHS).all() and (budget.stopped_by == "cap").all()
    nets = plan.sources()
    assert nets.groupby("part").source.nunique()["baseline"] == 2  # each split its own classes and net
    again = plan.run(progress=False)
    assert again.equals(rows)  # nothing was trained again: even the seconds are those saved


@pytest.mark.slow
def test_the_engine_reproduces_the_plain_runs_on_the_real_subset(real_dir, tmp_path):
    """The paper's source net, then n in {0, 3, 5} at k = 1, two trials, by both paths."""
    cfg = dict(data_dir=str(real_dir), levels=[0, 3, 5], sizes=[1], trials=2)
    plain = ktlib.run(ktlib.Config(results_dir=str(tmp_path / "p"), engine="plain", **cfg), progress=False)
    for engine in ("native", "batched"):
        fast = ktlib.run(ktlib.Config(results_dir=str(tmp_path / engine), engine=engine, **cfg), progress=False)
        assert (fast.test_accuracy - plain.test_accuracy).abs().max() <= 0.01  # 10 of the 1,000 test images
        assert ((fast.epochs - plain.epochs).abs() <= 0.05 * plain.epochs).all()


@pytest.mark.slow
def test_frozen_c1_to_c5_beats_no_transfer_with_one_sample_per_class(real_dir, tmp_path):
    """End to end on real EMNIST: the paper's source net, then n in {0, 5} at k = 1, one trial."""
    cfg = ktlib.Config(data_dir=str(real_dir), results_dir=str(tmp_path), levels=[0, 5], sizes=[1], trials=1)
    rows = ktlib.run(cfg, progress=False).set_index("n")
    meta, _ = ktlib.read_results(tmp_path / files.RESULTS_FILE)
    assert meta["source"]["reached_target"] and meta["source"]["train_accuracy"] >= cfg.source_accuracy
    assert (rows["train_accuracy"] == 1.0).all()  # both trained to fit their 20 images
    assert rows.loc[5, "test_accuracy"] > rows.loc[0, "test_accuracy"] + 0.05
    assert rows.loc[0, "test_accuracy"] > 0.10  # the baseline learned something: chance is 0.05


def test_a_smaller_study_in_a_directory_that_holds_more_splits_returns_only_its_own(tmp_path, smoke_data):
    cfg = ktlib.Config.for_profile("smoke", data_dir=str(smoke_data), results_dir=str(tmp_path))
    studies.plan("study", cfg, 2).run(progress=False)
    rows = studies.plan("study", cfg, 1).run(progress=False)
    on_disk = studies.plan("study", cfg, 2).runs()
    assert set(rows.split) == {0} and set(on_disk[on_disk.part == "baseline"].split) == {0, 1}
