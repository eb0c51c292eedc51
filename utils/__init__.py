"""Bottom layer: settings, errors, safe file output, metrics, tables, figures, runtime setup.

Imports no other project package. Importing it changes no process-wide state: the entry scripts
call utils.runtime.prepare_process (the environment NumPy and Paddle read when they load, the
Ctrl-C hook) as their first statement (tests/unit/test_import_side_effects.py).
"""
