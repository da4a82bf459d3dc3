{#
  Every value of every declared attribute sync, one row per model row and
  attribute: who it is for (identified by the audience contract's rules:
  macros/audience_rows.sql, identify_ctes), the value as sent and its hash
  (macros/attribute_values.sql), or why it cannot be sent.

  - member_key: the user (the publisher reads the identifier from it);
  - raw_<identifier>: the model's identifiers as they were, on rejected
    values only (for cohort_sync_rejects: repeated on every attribute of
    every row, they were a third of the cost of writing the table);

  - is_null: the model's value is a SQL null (what that means is the
    sync's `nulls`: cohort_sync_attribute_changes);
  - value_hash: the md5 of the kind and the canonical value, what the
    acknowledged state keeps (cohort_sync_attribute_state);
  - data_points: what writing it costs in Braze (0 for subscription states);
  - counts_row: true on one value of each model row (its first attribute),
    to count model rows;
  - rejects_row: the reject is the whole row's (its identifier, or a
    conflict), not only this value's;
  - reject_reason: the row's identifier is unusable (the audience contract's
    reasons), the name is one Braze refuses (invalid_attribute_name: a
    leading $ or over 255 characters), the value is (string_too_long,
    array_too_long, array_has_null, not_a_finite_number, invalid_<standard
    field>), or two rows of one user disagree (conflicting_rows: every value
    of that user in the sync is held back until the model agrees).
#}
{#- with nothing declared it is empty: a view costs nothing to build (a table costs seconds on Spark) #}
{{ config(materialized='table' if var('cohort_sync_attribute_syncs', none) else 'view') }}
{%- set string = dbt.type_string() -%}
{%- set identifiers = cohort_sync.identifier_columns() -%}
{%- set max_array = cohort_sync.max_array_length() -%}
{%- set syncs = cohort_sync.declared_attribute_syncs() -%}
{%- set value_columns = ['attribute_name', 'value_type', 'is_null', 'value_text', 'value_hash', 'data_points', 'value_reason'] -%}

with

{% for sync in syncs %}
{%- set read = cohort_sync.sync_columns(sync) %}
sync_{{ loop.index }}_raw as (
    select
        {{ cohort_sync.quoted_literal(sync.sync_id) }} as cohort_id,
        cast('attribute' as {{ string }}) as delivery,
        cast(null as {{ string }}) as attribute_name,
        {%- for name in identifiers %}
        {% if name in read.identifiers -%}
        cast({{ adapter.quote(read.identifiers[name]) }} as {{ string }})
        {%- else -%}
        cast(null as {{ string }})
        {%- endif %} as raw_{{ name }},
        {%- endfor %}
        {%- for attribute in read.attributes %}
        {%- set column = adapter.quote(attribute.column) %}
        {%- set value = cohort_sync.attribute_value_sql(column, attribute.kind, attribute.name, max_array, attribute.dtype) %}
        {{ column }} is null as a{{ loop.index }}_is_null,
        {{ value.text }} as a{{ loop.index }}_text,
        {{ value.canonical }} as a{{ loop.index }}_canonical,
        {{ value.reason }} as a{{ loop.index }}_reason{{ "," if not loop.last }}
        {%- endfor %}
    from {{ ref(sync.package, sync.model) }}
),

{{ cohort_sync.identify_ctes('sync_' ~ loop.index ~ '_raw', 'sync_' ~ loop.index ~ '_', cohort_sync.sync_value_columns(read)) }},

{#- the unpivot: one pass over the identified rows, crossed with the
    sync's attributes (a few literal rows), each picking its columns #}
sync_{{ loop.index }}_attributes as (
    {%- for attribute in read.attributes %}
    {%- set bad_name = attribute.name.startswith('$') or attribute.name | length > 255 %}
    select
        {{ loop.index }} as attribute_number,
        cast({{ cohort_sync.quoted_literal(attribute.name) }} as {{ string }}) as attribute_name,
        cast('{{ attribute.kind }}' as {{ string }}) as value_type,
        {{ cohort_sync.attribute_data_points(attribute.name) }} as data_points,
        cast({{ "'invalid_attribute_name'" if bad_name else 'null' }} as {{ string }}) as name_reason
    {% if not loop.last %}union all{% endif %}
    {%- else %}
    select
        0 as attribute_number,
        cast(null as {{ string }}) as attribute_name,
        cast(null as {{ string }}) as value_type,
        0 as data_points,
        cast(null as {{ string }}) as name_reason
    where 1 = 0
    {%- endfor %}
),

sync_{{ loop.index }}_pivoted as (
    select
        {%- for name in cohort_sync.sync_row_columns() %}
        identified.{{ 'cohort_id as sync_id' if name == 'sync_id' else name }},
        {%- endfor %}
        attributes.attribute_number,
        attributes.attribute_name,
        attributes.value_type,
        attributes.data_points,
        attributes.name_reason,
        {%- for part in ['is_null', 'text', 'canonical', 'reason'] %}
        case attributes.attribute_number
            {%- for attribute in read.attributes %}
            when {{ loop.index }} then identified.a{{ loop.index }}_{{ part }}
            {%- endfor %}
        end as value_{{ part }}{{ "," if not loop.last }}
        {%- endfor %}
    from sync_{{ loop.index }}_identified as identified
    cross join sync_{{ loop.index }}_attributes as attributes
),

sync_{{ loop.index }}_values as (
    select
        {%- for name in cohort_sync.sync_row_columns() %}
        {{ name }},
        {%- endfor %}
        attribute_name,
        value_type,
        value_is_null as is_null,
        case when not value_is_null then value_text end as value_text,
        case when not value_is_null then {{ dbt.hash(dbt.concat(["value_type", "':'", "value_canonical"])) }} end as value_hash,
        data_points,
        attribute_number = 1 as counts_row,
        coalesce(name_reason, case when not value_is_null then value_reason end) as value_reason
    from sync_{{ loop.index }}_pivoted
),
{#- two rows of one user disagree when one attribute has two values (a
    null counts as a value): each attribute's kind and canonical value (what
    its hash is of), compared across the user's rows on the wide rows, so
    the unpivoted rows stream into the table once and are never held #}
sync_{{ loop.index }}_repeated as (
    select
        cohort_id,
        member_key
    from sync_{{ loop.index }}_identified
    where member_key is not null
    group by cohort_id, member_key
    having count(*) > 1
),

sync_{{ loop.index }}_conflicted as (
    select
        identified.cohort_id as sync_id,
        identified.member_key
    from sync_{{ loop.index }}_identified as identified
    inner join sync_{{ loop.index }}_repeated as repeated
        on repeated.cohort_id = identified.cohort_id
        and repeated.member_key = identified.member_key
    group by identified.cohort_id, identified.member_key
    having
        {%- for attribute in read.attributes %}
        {%- set key = "coalesce(case when not identified.a" ~ loop.index ~ "_is_null then " ~ dbt.concat(["'" ~ attribute.kind ~ "'", "':'", "identified.a" ~ loop.index ~ "_canonical"]) ~ " end, '-')" %}
        min({{ key }}) <> max({{ key }}){{ " or" if not loop.last }}
        {%- endfor %}
),
{% endfor %}

all_values as (
    {%- for sync in syncs %}
    select * from sync_{{ loop.index }}_values
    {% if not loop.last %}union all{% endif %}
    {%- else %}
    select
        {%- for name in cohort_sync.sync_row_columns() %}
        cast(null as {{ string }}) as {{ name }},
        {%- endfor %}
        cast(null as {{ string }}) as attribute_name,
        cast(null as {{ string }}) as value_type,
        cast(null as {{ dbt.type_boolean() }}) as is_null,
        cast(null as {{ string }}) as value_text,
        cast(null as {{ string }}) as value_hash,
        cast(null as {{ dbt.type_int() }}) as data_points,
        cast(null as {{ dbt.type_boolean() }}) as counts_row,
        cast(null as {{ string }}) as value_reason
    where 1 = 0
    {%- endfor %}
),

conflicted as (
    {%- for sync in syncs %}
    select sync_id, member_key from sync_{{ loop.index }}_conflicted
    {% if not loop.last %}union all{% endif %}
    {%- else %}
    select
        cast(null as {{ string }}) as sync_id,
        cast(null as {{ string }}) as member_key
    where 1 = 0
    {%- endfor %}
),

judged as (
    select
        {%- for name in cohort_sync.sync_row_columns() if name != 'reject_reason' %}
        all_values.{{ name }},
        {%- endfor %}
        all_values.attribute_name,
        all_values.value_type,
        all_values.is_null,
        all_values.value_text,
        all_values.value_hash,
        all_values.data_points,
        all_values.counts_row,
        coalesce(
            all_values.reject_reason,
            case when conflicted.member_key is not null then 'conflicting_rows' end,
            all_values.value_reason
        ) as reject_reason,
        all_values.reject_reason is not null or conflicted.member_key is not null as rejects_row
    from all_values
    left join conflicted
        on conflicted.sync_id = all_values.sync_id
        and conflicted.member_key = all_values.member_key
),

{#- the raw identifiers only where cohort_sync_rejects reads them #}
final as (
    select
        sync_id,
        member_key,
        {%- for name in identifiers %}
        case when reject_reason is not null then raw_{{ name }} end as raw_{{ name }},
        {%- endfor %}
        attribute_name,
        value_type,
        is_null,
        value_text,
        value_hash,
        data_points,
        counts_row,
        reject_reason,
        rejects_row
    from judged
)

select * from final
