"""Evaluation: the paper's Table 1 and Figure 3 (its metrics are `symdiff.metrics`, which the app
shows too), and the fit of infills and the coherence of samples. Uses inference and data
modules, never training code.

The names below are what `symdiff evaluate` offers; they live here, free of torch, so that the
command line's help is built without loading the evaluation code."""
from ..dataset import DEFAULT_PATH

TABLE1_TASKS = ("unconditional", "infill")  # table1.py: the paper's Table 1
FIT_TASKS = ("fidelity", "coherence")  # fidelity.py
MIN_BARS = 16  # fidelity: the shortest test piece
CACHE = DEFAULT_PATH.parent / "cache" / "eval"  # table1.py: encoded reference windows
