"""ktlib: Gutstein, Fuentes & Freudenthal (2007), knowledge transfer in deep convolutional nets, reproduced."""
from .config import Config
from .records import read_results
from .tables import mean_table
from .study import Study
from .sweep import run

__all__ = ["Config", "Study", "run", "read_results", "mean_table"]
