"""The coreset selection's former module: its names, from models.patchcore.coreset (where it now
lives, one module per job), for code that imports them from here."""
from models.patchcore.coreset import (coreset_size, greedy_coreset, greedy_coreset_continued,  # noqa: F401
                                      greedy_coreset_paddle, greedy_coreset_reference, greedy_coreset_sharded,
                                      projection_matrix, random_projection, squared_norms)
from models.patchcore.coreset.distances import start_index as _start_index  # noqa: F401
