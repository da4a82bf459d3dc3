{#
  The events of an event sync's model, in portable SQL: which rows a run
  reads (event_window), and each event's fields as sent, with the reason
  it cannot be (event_field_sql). Properties are rendered as attribute
  values are (macros/attribute_values.sql).
#}

{#
  Where a sync's run reads its model, from the newest event time that a
  completed run recorded (run_history.event_watermark; none before the
  first) and how far back the ledger keeps ids (event_horizon):
  - window_start_ms: an event at or after it and not acknowledged is sent:
    the watermark less the lookback (never before start_at, nor behind the
    horizon: after a lookback is raised, the ids behind it are gone);
  - read_from_ms: rows from here to the window's start are late: counted
    and reported, never sent; rows before it are not read at all (the
    ledger keeps acknowledged ids this far back, and no further);
  - prefilter: a condition on the time column itself that the engine can
    push down to the model's storage, a day wider than read_from_ms so
    no time zone reading of the column narrows it (none when the first
    run of a backfill reads everything, or the column is text).
  A run's reads therefore grow with the events since the last run, not
  with the model's history.
#}
{% macro event_window(sync, read) %}
  {%- set history = source('cohort_sync', 'run_history') -%}
  {%- set earliest = -62135596800000 -%}
  {%- set start = sync.start_ms if sync.start_ms is not none else earliest -%}
  {%- set watermark, horizon = none, none -%}
  {%- if execute and adapter.get_relation(history.database, history.schema, history.identifier) is not none -%}
    {%- if 'event_watermark' not in adapter.get_columns_in_relation(history) | map(attribute='name') | map('lower') | list -%}
      {{ exceptions.raise_compiler_error("cohort_sync: event sync '" ~ sync.sync_id ~ "': the state table " ~ history
          ~ " predates event syncs; `dbt run` (its on-run-start hook) or any `cohort-sync` command migrates it") }}
    {%- endif -%}
    {%- set found = run_query("select max(event_watermark), max(event_horizon) from " ~ history ~ " where cohort_id = "
                              ~ cohort_sync.quoted_literal(sync.sync_id)) -%}
    {%- set watermark = found.columns[0].values()[0] if found and found.rows | length > 0 else none -%}
    {%- set horizon = found.columns[1].values()[0] if found and found.rows | length > 0 else none -%}
  {%- endif -%}
  {%- set lookback = sync.lookback_minutes * 60000 -%}
  {#- the ledger forgot the ids behind its horizon: no window reaches there (a lookback raised since) -#}
  {%- set floor = [start, horizon | int] | max if horizon is not none else start -%}
  {%- if watermark is none -%}
    {%- set window_start, read_from = start, start -%}
  {%- else -%}
    {%- set window_start = [floor, watermark | int - lookback] | max -%}
    {%- set read_from = [floor, watermark | int - 2 * lookback] | max -%}
  {%- endif -%}
  {%- set prefilter = none -%}
  {%- if read_from > earliest and read.time is defined and read.time.kind in ['time', 'date'] -%}
    {%- set day = (modules.datetime.datetime(1970, 1, 1) + modules.datetime.timedelta(milliseconds=read_from)
                   - modules.datetime.timedelta(days=1)).strftime('%Y-%m-%d') -%}
    {%- set column = adapter.quote(read.time.column) -%}
    {%- set prefilter = "(" ~ column ~ " >= cast('" ~ day ~ "' as date) or " ~ column ~ " is null)" -%}
  {%- endif -%}
  {{ return({'watermark_ms': watermark, 'window_start_ms': window_start, 'read_from_ms': read_from,
             'prefilter': prefilter}) }}
{% endmacro %}


{#
  The SQL of an event's fields over its model's row: event_id,
  event_time_ms, event_name, product_id, currency, price_text,
  quantity_text, header_reason (the first reason the event's own fields
  cannot be sent), data_points (an event is one; a purchase one plus one
  per property), and properties: [{is_null, text, canonical, reason}]
  (the JSON column, if any, last, named '$properties'). canonical_parts
  adds each property's canonical value to the content hash, over the
  columns p<n>_canonical of the identified rows.
#}
{% macro event_field_sql(sync, read) %}
  {%- set string = dbt.type_string() -%}
  {%- set fields = {'properties': [], 'canonical_parts': []} -%}
  {%- if not execute -%}
    {%- for name in ['event_id', 'event_time_ms', 'event_name', 'product_id', 'currency', 'price_text', 'quantity_text', 'header_reason'] -%}
      {%- do fields.update({name: 'null'}) -%}
    {%- endfor -%}
    {%- do fields.update({'data_points': '1'}) -%}
    {{ return(fields) }}
  {%- endif -%}
  {%- set reasons = [] -%}

  {%- set event_id = cohort_sync.trim_whitespace("cast(" ~ adapter.quote(read.event_id.column) ~ " as " ~ string ~ ")") -%}
  {%- do fields.update({'event_id': "nullif(" ~ event_id ~ ", '')"}) -%}
  {%- do reasons.append("case when nullif(" ~ event_id ~ ", '') is null then 'missing_event_id' end") -%}

  {%- set time = read.time -%}
  {%- set column = adapter.quote(time.column) -%}
  {%- if time.kind == 'string' -%}
    {%- set t = cohort_sync.trim_whitespace(column) -%}
    {%- set suffix = "substring(" ~ t ~ ", 20)" -%}
    {%- set year = "cast(substring(" ~ t ~ ", 1, 4) as " ~ dbt.type_int() ~ ")" -%}
    {#- a case, not an and: no engine may read the year of text that is not digits -#}
    {%- set valid -%}
      (case when translate(substring({{ t }}, 1, 19), '0123456789', '') in ('--T::', '-- ::')
            and substring({{ t }}, 5, 1) = '-' and substring({{ t }}, 8, 1) = '-'
            and substring({{ t }}, 14, 1) = ':' and substring({{ t }}, 17, 1) = ':'
            and substring({{ t }}, 6, 2) between '01' and '12' and substring({{ t }}, 9, 2) >= '01'
            and substring({{ t }}, 12, 2) between '00' and '23' and substring({{ t }}, 15, 2) between '00' and '59'
            and substring({{ t }}, 18, 2) between '00' and '59'
            and ({{ suffix }} in ('', 'Z', '+00:00')
                or (substring({{ t }}, 20, 1) = '.' and translate(substring({{ t }}, 21, 3), '0123456789', '') = ''
                    and {{ dbt.length("substring(" ~ t ~ ", 21, 3)") }} = 3
                    and substring({{ t }}, 24) in ('', 'Z', '+00:00')))
        then substring({{ t }}, 9, 2) <= case
            when substring({{ t }}, 6, 2) = '02' then case
                when mod({{ year }}, 4) = 0 and (mod({{ year }}, 100) <> 0 or mod({{ year }}, 400) = 0) then '29'
                else '28' end
            when substring({{ t }}, 6, 2) in ('04', '06', '09', '11') then '30'
            else '31' end
        else false end)
    {%- endset -%}
    {%- set seconds = cohort_sync.epoch_milliseconds("cast(replace(substring(" ~ t ~ ", 1, 19), 'T', ' ') as " ~ dbt.type_timestamp() ~ ")") -%}
    {%- set millis = "case when " ~ valid ~ " then " ~ seconds ~ " + case when substring(" ~ t ~ ", 20, 1) = '.' then cast(substring("
                     ~ t ~ ", 21, 3) as " ~ dbt.type_int() ~ ") else 0 end end" -%}
  {%- else -%}
    {%- set expr = "cast(" ~ column ~ " as " ~ dbt.type_timestamp() ~ ")" if time.kind == 'date' or time.dtype | lower in ['timestamp_ns', 'timestamp_ms', 'timestamp_s'] else column -%}
    {%- set millis = "case when " ~ cohort_sync.is_finite(column) ~ " then " ~ cohort_sync.epoch_milliseconds(expr) ~ " end" -%}
  {%- endif -%}
  {%- do fields.update({'event_time_ms': "cast(" ~ millis ~ " as " ~ dbt.type_bigint() ~ ")"}) -%}
  {%- do reasons.append("case when " ~ column ~ " is null then 'missing_time' when " ~ millis ~ " is null or " ~ millis
                        ~ " < -62135596800000 or " ~ millis ~ " > 253402300799999 then 'invalid_time' end") -%}

  {%- if sync.kind == 'event' and sync.name is not none -%}
    {%- do fields.update({'event_name': "cast(" ~ cohort_sync.quoted_literal(sync.name) ~ " as " ~ string ~ ")"}) -%}
  {%- elif sync.kind == 'event' -%}
    {%- set name = "cast(" ~ adapter.quote(read.name_column.column) ~ " as " ~ string ~ ")" -%}
    {%- do fields.update({'event_name': name}) -%}
    {%- do reasons.append("case when nullif(" ~ cohort_sync.trim_whitespace(name) ~ ", '') is null then 'missing_event_name' when "
                          ~ dbt.length(name) ~ " > 255 or " ~ name ~ " like '$%' then 'invalid_event_name' end") -%}
  {%- else -%}
    {%- do fields.update({'event_name': "cast(null as " ~ string ~ ")"}) -%}
  {%- endif -%}

  {%- if sync.kind == 'purchase' -%}
    {%- set product = "cast(" ~ adapter.quote(read.product_id.column) ~ " as " ~ string ~ ")" -%}
    {%- do fields.update({'product_id': product}) -%}
    {%- do reasons.append("case when nullif(" ~ cohort_sync.trim_whitespace(product) ~ ", '') is null or " ~ dbt.length(product)
                          ~ " > 255 then 'invalid_product_id' end") -%}
    {%- set currency = "upper(" ~ cohort_sync.trim_whitespace("cast(" ~ adapter.quote(read.currency.column) ~ " as " ~ string ~ ")") ~ ")" -%}
    {%- do fields.update({'currency': currency}) -%}
    {%- do reasons.append("case when " ~ currency ~ " is null or " ~ currency ~ " not in "
                          ~ cohort_sync.literal_list(cohort_sync.iso_4217_codes()) ~ " then 'invalid_currency' end") -%}
    {%- set price = cohort_sync.attribute_value_sql(adapter.quote(read.price.column), 'number', '', 25, read.price.dtype) -%}
    {%- do fields.update({'price_text': price.text}) -%}
    {%- do reasons.append("case when " ~ adapter.quote(read.price.column) ~ " is null or " ~ price.reason
                          ~ " is not null then 'invalid_price' end") -%}
    {%- if read.quantity is defined -%}
      {%- set q = adapter.quote(read.quantity.column) -%}
      {%- set double = "cast(" ~ q ~ " as " ~ cohort_sync.type_double() ~ ")" -%}
      {%- set whole = "(" ~ double ~ " = floor(" ~ double ~ ") and " ~ double ~ " >= 1 and " ~ double ~ " <= 100)" -%}
      {%- do fields.update({'quantity_text': "case when " ~ whole ~ " then cast(cast(" ~ q ~ " as " ~ dbt.type_bigint()
                                              ~ ") as " ~ string ~ ") end"}) -%}
      {%- do reasons.append("case when " ~ q ~ " is not null and not (" ~ double ~ " = floor(" ~ double ~ ") and " ~ double
                            ~ " >= 1 and " ~ double ~ " <= 100) then 'invalid_quantity' end") -%}
    {%- else -%}
      {%- do fields.update({'quantity_text': "cast(null as " ~ string ~ ")"}) -%}
    {%- endif -%}
  {%- else -%}
    {%- for name in ['product_id', 'currency', 'price_text', 'quantity_text'] -%}
      {%- do fields.update({name: "cast(null as " ~ string ~ ")"}) -%}
    {%- endfor -%}
  {%- endif -%}

  {%- set points = ['1'] -%}
  {%- for property in read.properties -%}
    {%- set column = adapter.quote(property.column) -%}
    {%- set value = cohort_sync.attribute_value_sql(column, property.kind, '', 25, property.dtype) -%}
    {%- if property.kind == 'json' -%}
      {%- set value = {'text': value.text, 'canonical': value.canonical,
                       'reason': "case when " ~ value.reason ~ " is not null then 'invalid_properties' end"} -%}
    {%- endif -%}
    {%- if property.name.startswith('$') or property.name | length > 255 or property.name in ['time', 'event_name'] -%}
      {%- do reasons.append("'invalid_property_name'") -%}
    {%- endif -%}
    {%- do fields.properties.append({'name': property.name, 'kind': property.kind, 'is_null': column ~ " is null",
                                     'text': value.text, 'canonical': value.canonical, 'reason': value.reason}) -%}
    {%- do points.append("case when " ~ column ~ " is null then 0 else 1 end") -%}
  {%- endfor -%}
  {%- if read.properties_json -%}
    {%- set column = adapter.quote(read.properties_json.column) -%}
    {%- do fields.properties.append({'name': '$properties', 'kind': 'json', 'is_null': column ~ " is null",
        'text': "cast(" ~ column ~ " as " ~ string ~ ")", 'canonical': cohort_sync.json_canonical(column),
        'reason': cohort_sync.event_properties_reject_reason(column)}) -%}
    {%- do points.append("coalesce(" ~ cohort_sync.json_key_count(column) ~ ", 0)") -%}
  {%- endif -%}
  {%- for property in fields.properties -%}
    {%- do fields.canonical_parts.extend(["'|'", "coalesce(p" ~ loop.index ~ "_canonical, '~')"]) -%}
  {%- endfor -%}
  {%- do fields.update({'header_reason': "coalesce(" ~ reasons | join(', ') ~ ")" if reasons | length > 1 else reasons[0],
                        'data_points': points | join(' + ') if sync.kind == 'purchase' else '1'}) -%}
  {{ return(fields) }}
{% endmacro %}


{#
  Why a JSON column cannot be an event's properties: Braze takes an object
  whose keys are at most 255 characters, do not start with '$' and are not
  time or event_name (spaces and dots are fine in event properties), whose
  strings are at most 255 characters, of at most 100 KB.
#}
{% macro event_properties_reject_reason(expr) %}
  {{ return(adapter.dispatch('event_properties_reject_reason', 'cohort_sync')(expr)) }}
{% endmacro %}

{% macro default__event_properties_reject_reason(expr) -%}
  case
            when json_type({{ expr }}) <> 'OBJECT' then 'invalid_properties'
            when length(cast({{ expr }} as {{ dbt.type_string() }})) > 102400 then 'invalid_properties'
            when exists (
                select 1 from json_tree({{ expr }}) as node
                where (node.parent = 0 and node.key is not null
                        and (length(node.key) > 255 or node.key like '$%' or node.key in ('time', 'event_name')))
                    or (node.type = 'VARCHAR' and length(json_extract_string(node.value, '$')) > 255)
            ) then 'invalid_properties'
        end
{%- endmacro %}

{% macro postgres__event_properties_reject_reason(expr) -%}
  case
            when jsonb_typeof(cast({{ expr }} as jsonb)) <> 'object' then 'invalid_properties'
            when length(cast({{ expr }} as text)) > 102400 then 'invalid_properties'
            when exists (
                select 1 from jsonb_object_keys(cast({{ expr }} as jsonb)) as k(name)
                where length(k.name) > 255 or k.name like '$%' or k.name in ('time', 'event_name')
            ) then 'invalid_properties'
            when jsonb_path_exists(cast({{ expr }} as jsonb), 'strict $.** ? (@.type() == "string" && @ like_regex "^.{128}.{128}")')
                then 'invalid_properties'
        end
{%- endmacro %}


{# How many keys a JSON object has (Braze bills each purchase property). #}
{% macro json_key_count(expr) %}
  {{ return(adapter.dispatch('json_key_count', 'cohort_sync')(expr)) }}
{% endmacro %}

{% macro default__json_key_count(expr) %}json_array_length(json_keys({{ expr }})){% endmacro %}

{% macro postgres__json_key_count(expr) -%}
  case when jsonb_typeof(cast({{ expr }} as jsonb)) = 'object'
            then (select count(*) from jsonb_object_keys(cast({{ expr }} as jsonb))) end
{%- endmacro %}


{# ISO 4217 currency codes (Braze's purchase `currency`). #}
{% macro iso_4217_codes() %}
  {{ return(('AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN '
             ~ 'BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD '
             ~ 'FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR '
             ~ 'KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV '
             ~ 'MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG '
             ~ 'SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN '
             ~ 'UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XTS '
             ~ 'XUA XXX YER ZAR ZMW ZWG ZWL').split()) }}
{% endmacro %}
