"""The warehouse side: the ledger of what Braze acknowledged (ledger), each engine's dialect
(engines), the state migrations (migrations), and the dbt target and manifest (target).
"""
