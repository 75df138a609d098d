"""The training-free reductions of the M3 paper (Table 4) that `--baseline` names.

The same names as the bundle's `token_reducers.VISUAL_TOKEN_REDUCTIONS` (a test checks they agree), listed here so
that the command line knows them without importing torch.
"""

BASELINES = ("average_pooling", "spatial_sampling", "sequential_sampling")
