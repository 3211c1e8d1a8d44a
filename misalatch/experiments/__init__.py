"""Experiments above single runs: sweeps, searches, statistics, comparisons and reports."""
