"""ktlib: Gutstein, Fuentes & Freudenthal (2007), knowledge transfer in deep convolutional nets, reproduced.

Three wings over the design (config, recipes, paths): ktlib.compute trains the nets, ktlib.record runs the sweeps and
studies and keeps their record, ktlib.analysis turns the record into intervals, verdicts and figures."""
from ktlib.config import Config
from ktlib.record.files import read_results
from ktlib.record.studies import plan
from ktlib.record.sweep import run
from ktlib.record.tables import mean_table

__all__ = ["Config", "plan", "run", "read_results", "mean_table"]
