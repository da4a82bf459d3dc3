"""A publish run: the loop that sends every kind of request (publish), the history rows it
writes (history), schedules (schedule), and its entry inside `dbt run` (dbt_model).
"""
