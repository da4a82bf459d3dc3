{#
  The few generic tests the package needs, written here because dbt hub
  packages (dbt_utils) are not a dependency of this package.
#}

{# Passes when the model has no rows; used with severity warn on rejects. #}
{% test has_no_rows(model) %}
  {{ return(adapter.dispatch('test_has_no_rows', 'cohort_sync')(model)) }}
{% endtest %}

{% macro default__test_has_no_rows(model) %}
select * from {{ model }}
{% endmacro %}


{# Passes when no two rows share the combination of columns. #}
{% test unique_combination_of_columns(model, combination_of_columns) %}
  {{ return(adapter.dispatch('test_unique_combination_of_columns', 'cohort_sync')(model, combination_of_columns)) }}
{% endtest %}

{% macro default__test_unique_combination_of_columns(model, combination_of_columns) %}
{%- set columns = combination_of_columns | join(', ') %}
select {{ columns }}, count(*) as occurrences
from {{ model }}
group by {{ columns }}
having count(*) > 1
{% endmacro %}


{# Passes when no partner cohort import batch (cohort, batch) holds more than `limit` identifiers. #}
{% test batches_within_limit(model, limit=1000) %}
  {{ return(adapter.dispatch('test_batches_within_limit', 'cohort_sync')(model, limit)) }}
{% endtest %}

{% macro default__test_batches_within_limit(model, limit) %}
select cohort_id, batch_number, count(*) as identifiers
from {{ model }}
where delivery = 'cohort_import'
group by cohort_id, batch_number
having count(*) > {{ limit }}
{% endmacro %}


{# Passes when no /users/track batch of the plan holds more than `limit` members (one object each). #}
{% test track_batches_within_limit(model, limit=75) %}
  {{ return(adapter.dispatch('test_track_batches_within_limit', 'cohort_sync')(model, limit)) }}
{% endtest %}

{% macro default__test_track_batches_within_limit(model, limit) %}
select batch_number, count(distinct member_key) as objects
from {{ model }}
where delivery = 'attribute'
group by batch_number
having count(distinct member_key) > {{ limit }}
{% endmacro %}


{# Passes when no attribute sync's batch holds more than `limit` users (one /users/track object each). #}
{% test sync_batches_within_limit(model, limit=75) %}
  {{ return(adapter.dispatch('test_sync_batches_within_limit', 'cohort_sync')(model, limit)) }}
{% endtest %}

{% macro default__test_sync_batches_within_limit(model, limit) %}
select sync_id, batch_number, count(distinct member_key) as objects
from {{ model }}
group by sync_id, batch_number
having count(distinct member_key) > {{ limit }}
{% endmacro %}


{# An event sync's batches hold at most `limit` events (Braze takes 75 objects per /users/track request). #}
{% test event_batches_within_limit(model, limit=75) %}
  {{ return(adapter.dispatch('test_event_batches_within_limit', 'cohort_sync')(model, limit)) }}
{% endtest %}

{% macro default__test_event_batches_within_limit(model, limit) %}
select sync_id, batch_number, count(distinct event_id) as objects
from {{ model }}
group by sync_id, batch_number
having count(distinct event_id) > {{ limit }}
{% endmacro %}
