{#
  Batch number (1-based) of the n-th change of a cohort, so that no batch
  holds more than `batch_size` identifiers. Braze accepts at most 1,000
  identifiers per request.
#}
{% macro batch_number(change_number, batch_size) %}
  {{ return(adapter.dispatch('batch_number', 'cohort_sync')(change_number, batch_size)) }}
{% endmacro %}

{% macro default__batch_number(change_number, batch_size) -%}
  cast(floor(({{ change_number }} - 1) / {{ batch_size }}) as {{ dbt.type_bigint() }}) + 1
{%- endmacro %}


{# The configured batch size, validated against Braze's limit. #}
{% macro batch_size() %}
  {{ return(adapter.dispatch('batch_size', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__batch_size() %}
  {%- set size = var('cohort_sync_batch_size', 1000) -%}
  {%- if size is not number or size < 1 or size > 1000 or size != size | int -%}
    {{ exceptions.raise_compiler_error("cohort_sync: var 'cohort_sync_batch_size' must be a whole number from 1 to 1000 (Braze's limit per request), got: " ~ size) }}
  {%- endif -%}
  {{ return(size | int) }}
{% endmacro %}


{# Objects per /users/track request, validated against Braze's limit (75 across the request's arrays). #}
{% macro users_track_batch_size() %}
  {{ return(adapter.dispatch('users_track_batch_size', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__users_track_batch_size() %}
  {%- set size = var('cohort_sync_users_track_batch_size', 75) -%}
  {%- if size is not number or size < 1 or size > 75 or size != size | int -%}
    {{ exceptions.raise_compiler_error("cohort_sync: var 'cohort_sync_users_track_batch_size' must be a whole number from 1 to 75 (Braze's limit of objects per /users/track request), got: " ~ size) }}
  {%- endif -%}
  {{ return(size | int) }}
{% endmacro %}
