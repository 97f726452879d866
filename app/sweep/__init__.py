"""Hyperparameter sweeps: many normal runs, chosen by Optuna, compared in TensorBoard's HParams tab.

spec.py reads the sweep file; study.py is the Optuna study and who runs which trial; leases.py
tells a dead sweeper from a live one on one host, database.py across hosts (the study in PostgreSQL,
Optuna's heartbeat); runner.py is the loop above train(config); __main__.py is the command line
(`python -m app.sweep FILE`). docs/sweeps.md describes all of it.
"""
