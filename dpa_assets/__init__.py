"""DPA: a Dagster code location loading daily rail freight movements into the warehouse.

Importing the package builds nothing (``definitions.py`` assembles the code location). It pins one
pandas option, once, for every module: with pyarrow installed, pandas 3 backs its default text dtypes
with Arrow strings, which must be valid UTF-8 and fail on a lone surrogate ('\\ud800') that a received
payload can carry, where the rules quarantine that row and load the day (test_column_bounds).
Arrow storage validated a 200,000-row day ~20% faster, but that is not worth a day that fails.
"""

import pandas as pd

pd.options.mode.string_storage = "python"
