"""The bookkeeping that rebuilds `results/`: scripts, not part of the installed packages.

Run from the repository root (the Makefile's `results`, `table` and `em` targets do):

    python -m experiments.results table                      # results/README.md's tables
    python -m experiments.results row cross --data-dir DATA  # retrain and publish one row
    python -m experiments.ensemble --members ... --runs runs # the EM row

These modules import `kerasbert`, `training` and `export`; nothing installed
imports them (`tests/test_layout.py`).
"""
