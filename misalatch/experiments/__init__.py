"""Experiments built on trained runs: sweeps, searches, comparisons, reports, robustness curves.

The names below are the Python side of ``misalatch sweep`` and ``misalatch report``; they are imported
on first use (a sweep needs Optuna, a report torch), so importing one module of this package stays light.
"""

from __future__ import annotations

from misalatch.io.lazy import lazy_attributes

_LAZY = {
    "SweepSpec": ("misalatch.experiments.sweep", "SweepSpec"),
    "Sweep": ("misalatch.experiments.sweep", "Sweep"),
    "start_sweep": ("misalatch.experiments.sweep", "start_sweep"),
    "run_worker": ("misalatch.experiments.sweep", "run_worker"),
    "write_results": ("misalatch.experiments.results", "write_results"),
    "report": ("misalatch.experiments.html_report", "report"),
}

__all__ = list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY)
