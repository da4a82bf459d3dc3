{#
  The events of every declared event sync that a run may send or must
  report: those of the sync's model from where its window may reach (see
  macros/event_values.sql, event_window), one row per event and field.
  An event's first row (property_number 0) is its header: who it is for
  (the audience contract's rules, identify_ctes), its id, time, name or
  purchase fields, the hash of its content, its data points and why it
  cannot be sent; each property with a value follows in a row of its own
  (value_type and value_text as attribute values are rendered:
  macros/attribute_values.sql), repeating the header's columns.

  - event_time_ms: the event's time in milliseconds since the epoch, UTC;
  - window_status: in_window (not older than the window's start: sent
    once, unless acknowledged), late (older: counted and reported, never
    sent);
  - content_hash: the md5 of everything the event sends: the same event_id
    with another content is a duplicate_event_id, every row of it rejected;
  - reject_reason: the identifier's (the audience contract's reasons),
    missing_event_id, missing_time, invalid_time (not ISO 8601, infinite,
    or out of range), missing_event_name, invalid_event_name,
    invalid_product_id, invalid_currency (not ISO 4217), invalid_price,
    invalid_quantity (not a whole number from 1 to 100),
    invalid_property_name ($..., over 255 characters, time, event_name),
    string_too_long, not_a_finite_number, invalid_date, invalid_properties
    (the JSON column: not an object Braze takes), duplicate_event_id.
#}
{#- with nothing declared it is empty: a view costs nothing to build (a table costs seconds on Spark) #}
{{ config(materialized='table' if var('cohort_sync_event_syncs', none) else 'view') }}
{%- set string = dbt.type_string() -%}
{%- set bigint = dbt.type_bigint() -%}
{%- set identifiers = cohort_sync.identifier_columns() -%}
{%- set syncs = cohort_sync.declared_event_syncs() -%}
{%- set header_columns = ['event_id', 'event_time_ms', 'event_name', 'product_id', 'currency', 'price_text',
                          'quantity_text', 'data_points', 'header_reason'] -%}

with

{% for sync in syncs %}
{%- set read = cohort_sync.event_sync_columns(sync) %}
{%- set window = cohort_sync.event_window(sync, read) %}
{%- set fields = cohort_sync.event_field_sql(sync, read) %}
event_{{ loop.index }}_raw as (
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
        {%- for name in header_columns %}
        {{ fields[name] }} as {{ name }},
        {%- endfor %}
        {%- for property in fields.properties %}
        {{ property.is_null }} as p{{ loop.index }}_is_null,
        {{ property.text }} as p{{ loop.index }}_text,
        {{ property.canonical }} as p{{ loop.index }}_canonical,
        {{ property.reason }} as p{{ loop.index }}_reason,
        {%- endfor %}
        {{ fields.properties | length }} as property_count
    from {{ ref(sync.package, sync.model) }}
    {%- if window.prefilter %}
    where {{ window.prefilter }}
    {%- endif %}
),

{%- set passthrough = header_columns + ['property_count'] %}
{%- set property_columns = [] %}
{%- for property in fields.properties %}
{%- set index = loop.index %}
{%- for part in ['is_null', 'text', 'canonical', 'reason'] %}
{%- do property_columns.append('p' ~ index ~ '_' ~ part) %}
{%- endfor %}
{%- endfor %}

{{ cohort_sync.identify_ctes('event_' ~ loop.index ~ '_raw', 'event_' ~ loop.index ~ '_', passthrough + property_columns) }},

event_{{ loop.index }}_checked as (
    select
        cohort_id as sync_id,
        member_key,
        identifier_type,
        external_id,
        alias_name,
        alias_label,
        braze_id,
        email,
        phone,
        {%- for name in identifiers %}
        raw_{{ name }},
        {%- endfor %}
        event_id,
        event_time_ms,
        case
            when event_time_ms is null then cast(null as {{ string }})
            when event_time_ms >= {{ window.window_start_ms }} then 'in_window'
            else 'late'
        end as window_status,
        event_name,
        product_id,
        currency,
        price_text,
        quantity_text,
        {{ dbt.hash(dbt.concat(["coalesce(member_key, '~')", "'|'", "coalesce(event_name, '~')", "'|'",
                                "coalesce(cast(event_time_ms as " ~ string ~ "), '~')", "'|'",
                                "coalesce(product_id, '~')", "'|'", "coalesce(currency, '~')", "'|'",
                                "coalesce(price_text, '~')", "'|'", "coalesce(quantity_text, '~')"]
                               + fields.canonical_parts)) }} as content_hash,
        data_points,
        coalesce(reject_reason, header_reason
            {%- for property in fields.properties %}, case when not p{{ loop.index }}_is_null then p{{ loop.index }}_reason end{%- endfor %}) as reject_reason,
        {%- for column in property_columns %}
        {{ column }},
        {%- endfor %}
        property_count
    from event_{{ loop.index }}_identified
),

{#- the unpivot: each event crossed with its header (0) and properties #}
event_{{ loop.index }}_fields as (
    select 0 as property_number, cast(null as {{ string }}) as property_name, cast(null as {{ string }}) as value_type
    {%- for property in fields.properties %}
    union all
    select {{ loop.index }}, cast({{ cohort_sync.quoted_literal(property.name) }} as {{ string }}), cast('{{ property.kind }}' as {{ string }})
    {%- endfor %}
),

event_{{ loop.index }}_rows as (
    select
        checked.sync_id,
        checked.member_key,
        checked.identifier_type,
        checked.external_id,
        checked.alias_name,
        checked.alias_label,
        checked.braze_id,
        checked.email,
        checked.phone,
        {%- for name in identifiers %}
        checked.raw_{{ name }},
        {%- endfor %}
        checked.event_id,
        checked.event_time_ms,
        checked.window_status,
        checked.event_name,
        checked.product_id,
        checked.currency,
        checked.price_text,
        checked.quantity_text,
        checked.content_hash,
        checked.data_points,
        checked.reject_reason,
        fields.property_number,
        fields.property_name,
        fields.value_type,
        {%- if fields.properties %}
        case fields.property_number
            {%- for property in fields.properties %}
            when {{ loop.index }} then checked.p{{ loop.index }}_text
            {%- endfor %}
        end as value_text
        {%- else %}
        {#- no properties declared: a case without a when is not SQL #}
        cast(null as {{ string }}) as value_text
        {%- endif %}
    from event_{{ loop.index }}_checked as checked
    cross join event_{{ loop.index }}_fields as fields
    where (checked.event_time_ms is null or checked.event_time_ms >= {{ window.read_from_ms }})
        and (fields.property_number = 0
        {%- for property in fields.properties %}
            or (fields.property_number = {{ loop.index }} and not checked.p{{ loop.index }}_is_null)
        {%- endfor %})
),
{% endfor %}

all_rows as (
    {%- for sync in syncs %}
    select * from event_{{ loop.index }}_rows
    {% if not loop.last %}union all{% endif %}
    {%- else %}
    select
        {%- for name in ['sync_id', 'member_key', 'identifier_type', 'external_id', 'alias_name', 'alias_label',
                         'braze_id', 'email', 'phone'] %}
        cast(null as {{ string }}) as {{ name }},
        {%- endfor %}
        {%- for name in identifiers %}
        cast(null as {{ string }}) as raw_{{ name }},
        {%- endfor %}
        cast(null as {{ string }}) as event_id,
        cast(null as {{ bigint }}) as event_time_ms,
        cast(null as {{ string }}) as window_status,
        cast(null as {{ string }}) as event_name,
        cast(null as {{ string }}) as product_id,
        cast(null as {{ string }}) as currency,
        cast(null as {{ string }}) as price_text,
        cast(null as {{ string }}) as quantity_text,
        cast(null as {{ string }}) as content_hash,
        cast(null as {{ dbt.type_int() }}) as data_points,
        cast(null as {{ string }}) as reject_reason,
        cast(null as {{ dbt.type_int() }}) as property_number,
        cast(null as {{ string }}) as property_name,
        cast(null as {{ string }}) as value_type,
        cast(null as {{ string }}) as value_text
    where 1 = 0
    {%- endfor %}
),

{#- one event_id, two contents: no row of it can be trusted to be the event #}
duplicated as (
    select
        sync_id,
        event_id
    from all_rows
    where property_number = 0 and event_id is not null
    group by sync_id, event_id
    having min(content_hash) <> max(content_hash)
),

final as (
    select
        all_rows.sync_id,
        all_rows.member_key,
        all_rows.identifier_type,
        all_rows.external_id,
        all_rows.alias_name,
        all_rows.alias_label,
        all_rows.braze_id,
        all_rows.email,
        all_rows.phone,
        {%- for name in identifiers %}
        all_rows.raw_{{ name }},
        {%- endfor %}
        all_rows.event_id,
        all_rows.event_time_ms,
        all_rows.window_status,
        all_rows.event_name,
        all_rows.product_id,
        all_rows.currency,
        all_rows.price_text,
        all_rows.quantity_text,
        all_rows.content_hash,
        all_rows.data_points,
        coalesce(all_rows.reject_reason, case when duplicated.event_id is not null then 'duplicate_event_id' end)
            as reject_reason,
        all_rows.property_number,
        all_rows.property_name,
        all_rows.value_type,
        all_rows.value_text
    from all_rows
    left join duplicated
        on duplicated.sync_id = all_rows.sync_id
        and duplicated.event_id = all_rows.event_id
)

select * from final
