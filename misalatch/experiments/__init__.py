"""Experiments built on trained runs: sweeps, searches, comparisons, reports, robustness curves."""
