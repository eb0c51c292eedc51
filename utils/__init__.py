"""Bottom layer: settings, errors, safe file output, metrics, tables, figures, runtime setup.

Imports no other project package. Importing it first (as every other package does) puts the
process-wide settings in place before NumPy and Paddle load.
"""
from utils.runtime import configure_environment

configure_environment()
