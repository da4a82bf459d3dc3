"""cohort_sync: the thin publisher of the cohort_sync dbt package.

SQL decides who is in which cohort and what changed (the dbt models);
this package delivers those changes to Braze's partner cohort import API
and records each acknowledged batch.
"""

__version__ = "0.6.0"
