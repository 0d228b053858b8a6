"""ktlib: Gutstein, Fuentes & Freudenthal (2007), knowledge transfer in deep convolutional nets, reproduced."""
from .sweep import Config, mean_table, read_results, run

__all__ = ["Config", "run", "read_results", "mean_table"]
