"""Evaluation: the paper's metrics, its Table 1 and Figure 3, and the fit of infills and the
coherence of samples. Uses inference and data modules, never training code."""
