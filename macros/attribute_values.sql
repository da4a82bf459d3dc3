{#
  Attribute values of a sync's model, typed, in portable SQL.

  Each column a sync sends has a kind, from its type in the warehouse:
  string, number (integers, floats, decimals), boolean, date, time
  (timestamps, with or without a zone), array (of strings, a set) or json
  (DuckDB's JSON, PostgreSQL's json and jsonb; Spark has no JSON type).
  For each value the warehouse renders:

  - value_text: what the publisher sends, as text it turns into JSON
    (scripts/cohort_sync/braze/payload.py, `attribute_value`): a string as
    is; a number in its shortest form (an integral value without a
    fraction); true/false; a date as YYYY-MM-DD; a time as milliseconds
    since the epoch (sent as ISO 8601 in UTC); an array as a JSON array of
    its distinct elements, sorted; json as its text;
  - canonical: what is compared, so equal values of other representations
    (1 and 1.0, the same instant in another zone, JSON with its keys in
    another order, an array in another order) are equal;
  - the reason the value cannot be sent, or null.
#}

{#
  The kind of a column, from its data type; none when no kind fits (an
  array's elements must be strings: Braze's arrays are of strings; on
  PostgreSQL, whose columns say only ARRAY, elements are cast to text).
#}
{% macro attribute_kind(column) %}
  {%- set dtype = column.dtype | lower | trim -%}
  {%- set strings = ['string', 'text', 'uuid', 'varchar', 'character varying', 'char', 'character', 'bpchar'] -%}
  {%- if dtype in ['boolean', 'bool'] -%}
    {{ return('boolean') }}
  {%- elif dtype == 'date' -%}
    {{ return('date') }}
  {%- elif dtype.startswith('timestamp') or dtype == 'datetime' -%}
    {{ return('time') }}
  {%- elif dtype.endswith('[]') or dtype.startswith('array<') -%}
    {%- set element = dtype[:-2] if dtype.endswith('[]') else dtype[6:-1] -%}
    {{ return('array' if modules.re.sub('\\(.*\\)$', '', element) | trim in strings else none) }}
  {%- elif dtype == 'array' -%}
    {{ return('array') }}
  {%- elif dtype in ['json', 'jsonb'] -%}
    {{ return('json') }}
  {%- elif cohort_sync.is_integer_type(dtype) or modules.re.match('^(real|float|float4|float8|double|double precision|decimal|numeric)\\b', dtype) -%}
    {{ return('number') }}
  {%- elif column.is_string() or dtype in strings -%}
    {{ return('string') }}
  {%- endif -%}
  {{ return(none) }}
{% endmacro %}


{# Whether a column type is an integer type (its values are sent as they are, never through a float). #}
{% macro is_integer_type(dtype) %}
  {%- set dtype = dtype | lower | trim -%}
  {{ return(modules.re.match('^(tinyint|smallint|int|integer|bigint|hugeint|uhugeint|ubigint|uinteger|usmallint|utinyint|int1|int2|int4|int8|long|short|byte)\\b', dtype) is not none
            or modules.re.match('^(decimal|numeric)\\(\\s*[0-9]+\\s*,\\s*0\\s*\\)$', dtype) is not none) }}
{% endmacro %}


{#
  The SQL of one attribute of one row: {text, canonical, reason}, each an
  expression (reason: a string literal or null), for a column `expr` of
  `kind` and type `dtype`, sent as attribute `name`. `max_array` is the
  array cap.
#}
{% macro attribute_value_sql(expr, kind, name, max_array, dtype='') %}
  {%- set string = dbt.type_string() -%}
  {%- set standard = name in cohort_sync.braze_standard_fields() -%}
  {%- if kind == 'number' and cohort_sync.is_integer_type(dtype) -%}
    {#- as is: a bigint beyond 2^53 keeps every digit (an integral float
        below 1e15 renders the same, so 1 and 1.0 still match) -#}
    {%- set text = "cast(" ~ expr ~ " as " ~ string ~ ")" -%}
    {%- set reason = "cast(null as " ~ string ~ ")" -%}
  {%- elif kind == 'string' -%}
    {%- set text = "cast(" ~ expr ~ " as " ~ string ~ ")" -%}
    {%- set reason = "case when " ~ dbt.length(text) ~ " > 255 then 'string_too_long' end" -%}
  {%- elif kind == 'number' -%}
    {%- set double = "cast(" ~ expr ~ " as " ~ cohort_sync.type_double() ~ ")" -%}
    {%- set special = "lower(cast(" ~ double ~ " as " ~ string ~ ")) in ('nan', '-nan', 'inf', '-inf', '+inf', 'infinity', '-infinity', '+infinity')" -%}
    {%- set text -%}
      case
            when {{ special }} then null
            when {{ double }} = floor({{ double }}) and abs({{ double }}) < 1e15
                then cast(cast({{ double }} as {{ dbt.type_bigint() }}) as {{ string }})
            else cast({{ double }} as {{ string }})
        end
    {%- endset -%}
    {%- set reason = "case when " ~ special ~ " then 'not_a_finite_number' end" -%}
  {%- elif kind == 'boolean' -%}
    {%- set text = "case when " ~ expr ~ " then 'true' else 'false' end" -%}
    {%- set reason = "cast(null as " ~ string ~ ")" -%}
  {%- elif kind == 'date' -%}
    {%- set text = "case when " ~ cohort_sync.is_finite(expr) ~ " then cast(" ~ expr ~ " as " ~ string ~ ") end" -%}
    {%- set reason = "case when not " ~ cohort_sync.is_finite(expr) ~ " then 'invalid_date' end" -%}
  {%- elif kind == 'time' -%}
    {#- infinity (a common "valid until"), and years outside 0001-9999, have no ISO 8601 form -#}
    {#- DuckDB's timestamps of other precisions (naive, like `timestamp`) are read as microseconds -#}
    {%- set expr = "cast(" ~ expr ~ " as timestamp)" if dtype | lower in ['timestamp_ns', 'timestamp_ms', 'timestamp_s'] else expr -%}
    {%- set millis = "case when " ~ cohort_sync.is_finite(expr) ~ " then " ~ cohort_sync.epoch_milliseconds(expr) ~ " end" -%}
    {%- set text = "cast(" ~ millis ~ " as " ~ string ~ ")" -%}
    {%- set reason = "case when " ~ millis ~ " is null or " ~ millis ~ " < -62135596800000 or " ~ millis
                     ~ " > 253402300799999 then 'invalid_time' end" -%}
  {%- elif kind == 'array' -%}
    {%- set text = cohort_sync.string_set_json(expr) -%}
    {%- set reason -%}
      case
            when {{ cohort_sync.array_has_null(expr) }} then 'array_has_null'
            when {{ cohort_sync.array_distinct_size(expr) }} > {{ max_array }} then 'array_too_long'
            when {{ cohort_sync.array_has_long_string(expr, 255) }} then 'string_too_long'
        end
    {%- endset -%}
  {%- elif kind == 'json' -%}
    {%- set text = "cast(" ~ expr ~ " as " ~ string ~ ")" -%}
    {%- set reason = cohort_sync.json_reject_reason(expr) -%}
  {%- endif -%}
  {%- set canonical = cohort_sync.json_canonical(expr) if kind == 'json' else text -%}
  {%- if standard -%}
    {%- set checked = cohort_sync.standard_field_sql(name, expr, kind, text) -%}
    {%- set text, reason = checked.text, "coalesce(" ~ checked.reason ~ ", " ~ reason ~ ")" -%}
    {%- set canonical = text -%}
  {%- endif -%}
  {{ return({'text': text, 'canonical': canonical, 'reason': reason}) }}
{% endmacro %}


{#
  Braze's standard profile fields, validated: {text, reason}. country
  (ISO 3166-1 alpha-2, sent upper case), language (ISO 639-1, lower case),
  gender (M, F, O, U, N or P), dob (a date, or text YYYY-MM-DD), time_zone
  (an IANA name), email_subscribe and push_subscribe (opted_in,
  unsubscribed, subscribed), email (lower case, one @), phone (E.164 once
  spaces, hyphens, dots and parentheses are removed). The other standard
  fields (names, home city) are strings.
#}
{% macro standard_field_sql(name, expr, kind, text) %}
  {%- set string = dbt.type_string() -%}
  {%- set invalid = "'invalid_" ~ name ~ "'" -%}
  {%- set wrong_kind = kind not in (['string', 'date'] if name == 'dob' else ['string']) -%}
  {%- if wrong_kind -%}
    {{ return({'text': text, 'reason': invalid}) }}
  {%- endif -%}
  {%- set trimmed = cohort_sync.trim_whitespace(text) -%}
  {%- if name == 'country' -%}
    {%- set text = "upper(" ~ trimmed ~ ")" -%}
    {%- set valid = text ~ " in " ~ cohort_sync.literal_list(modules.pytz.country_names.keys() | sort) -%}
  {%- elif name == 'language' -%}
    {%- set text = "lower(" ~ trimmed ~ ")" -%}
    {%- set valid = text ~ " in " ~ cohort_sync.literal_list(cohort_sync.iso_639_1_codes()) -%}
  {%- elif name == 'gender' -%}
    {%- set text = "upper(" ~ trimmed ~ ")" -%}
    {%- set valid = text ~ " in ('M', 'F', 'O', 'U', 'N', 'P')" -%}
  {%- elif name == 'dob' and kind == 'date' -%}
    {%- set valid = "1 = 1" -%}
  {%- elif name == 'dob' -%}
    {%- set text = trimmed -%}
    {%- set valid -%}
      ({{ dbt.length(text) }} = 10
            and translate({{ text }}, '0123456789', '') = '--'
            and substring({{ text }}, 5, 1) = '-' and substring({{ text }}, 8, 1) = '-'
            and substring({{ text }}, 6, 2) between '01' and '12'
            and substring({{ text }}, 9, 2) between '01' and '31')
    {%- endset -%}
  {%- elif name == 'time_zone' -%}
    {%- set text = trimmed -%}
    {%- set valid = text ~ " in " ~ cohort_sync.literal_list(modules.pytz.all_timezones | list) -%}
  {%- elif name in ['email_subscribe', 'push_subscribe'] -%}
    {%- set text = "lower(" ~ trimmed ~ ")" -%}
    {%- set valid = text ~ " in ('opted_in', 'unsubscribed', 'subscribed')" -%}
  {%- elif name == 'email' -%}
    {%- set text = "lower(" ~ trimmed ~ ")" -%}
    {%- set valid = "(" ~ text ~ " like '%_@_%' and " ~ text ~ " not like '%@%@%' and " ~ dbt.length(text) ~ " <= 255)" -%}
  {%- elif name == 'phone' -%}
    {%- set text = "replace(replace(replace(replace(replace(" ~ trimmed ~ ", ' ', ''), '-', ''), '.', ''), '(', ''), ')', '')" -%}
    {%- set valid -%}
      (substring({{ text }}, 1, 1) = '+' and {{ dbt.length(text) }} between 3 and 16
            and substring({{ text }}, 2, 1) <> '0' and translate(substring({{ text }}, 2), '0123456789', '') = '')
    {%- endset -%}
  {%- else -%}
    {{ return({'text': text, 'reason': "cast(null as " ~ string ~ ")"}) }}
  {%- endif -%}
  {{ return({'text': text, 'reason': "case when not " ~ valid ~ " then " ~ invalid ~ " end"}) }}
{% endmacro %}


{# ISO 639-1 language codes (Braze's `language`). #}
{% macro iso_639_1_codes() %}
  {{ return(('aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy '
             ~ 'da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu '
             ~ 'hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb '
             ~ 'lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om '
             ~ 'or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw '
             ~ 'ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu').split()) }}
{% endmacro %}


{# The floating-point type (DuckDB's and Spark's `float` is four bytes). #}
{% macro type_double() %}
  {{ return(adapter.dispatch('type_double', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__type_double() %}double{% endmacro %}

{% macro postgres__type_double() %}double precision{% endmacro %}


{# Milliseconds since the epoch of a timestamp (one without a zone is read as UTC). #}
{% macro epoch_milliseconds(expr) %}
  {{ return(adapter.dispatch('epoch_milliseconds', 'cohort_sync')(expr)) }}
{% endmacro %}

{% macro default__epoch_milliseconds(expr) %}epoch_ms({{ expr }}){% endmacro %}

{% macro postgres__epoch_milliseconds(expr) %}cast(floor(extract(epoch from {{ expr }}) * 1000) as {{ dbt.type_bigint() }}){% endmacro %}

{# Spark: a timestamp_ntz is a wall clock, which a cast to timestamp would read in the session's zone. #}
{% macro spark__epoch_milliseconds(expr) -%}
  unix_millis(case when typeof({{ expr }}) = 'timestamp_ntz'
            then cast(concat(cast({{ expr }} as string), '+00:00') as timestamp)
            else cast({{ expr }} as timestamp) end)
{%- endmacro %}


{# An array's distinct elements as strings, sorted, as a JSON array (text). #}
{% macro string_set_json(expr) %}
  {{ return(adapter.dispatch('string_set_json', 'cohort_sync')(expr)) }}
{% endmacro %}

{% macro default__string_set_json(expr) -%}
  cast(to_json(list_sort(list_distinct(list_transform({{ expr }}, lambda e: cast(e as {{ dbt.type_string() }}))))) as {{ dbt.type_string() }})
{%- endmacro %}

{% macro postgres__string_set_json(expr) -%}
  case when {{ expr }} is not null then cast(to_json(array(
            select v from (select distinct cast(e as text) as v from unnest({{ expr }}) as u(e)) as d
            order by v collate "C")) as text) end
{%- endmacro %}

{% macro spark__string_set_json(expr) -%}
  to_json(array_sort(array_distinct(transform({{ expr }}, e -> cast(e as string)))))
{%- endmacro %}


{# Whether an array holds a null. #}
{% macro array_has_null(expr) %}
  {{ return(adapter.dispatch('array_has_null', 'cohort_sync')(expr)) }}
{% endmacro %}

{% macro default__array_has_null(expr) %}len({{ expr }}) > list_count({{ expr }}){% endmacro %}

{% macro postgres__array_has_null(expr) %}array_position({{ expr }}, null) is not null{% endmacro %}

{% macro spark__array_has_null(expr) %}exists({{ expr }}, e -> e is null){% endmacro %}


{# How many distinct elements an array holds. #}
{% macro array_distinct_size(expr) %}
  {{ return(adapter.dispatch('array_distinct_size', 'cohort_sync')(expr)) }}
{% endmacro %}

{% macro default__array_distinct_size(expr) %}len(list_distinct({{ expr }})){% endmacro %}

{% macro postgres__array_distinct_size(expr) %}(select count(distinct e) from unnest({{ expr }}) as u(e)){% endmacro %}

{% macro spark__array_distinct_size(expr) %}size(array_distinct({{ expr }})){% endmacro %}


{# Whether an array holds a string longer than `limit` characters. #}
{% macro array_has_long_string(expr, limit) %}
  {{ return(adapter.dispatch('array_has_long_string', 'cohort_sync')(expr, limit)) }}
{% endmacro %}

{% macro default__array_has_long_string(expr, limit) -%}
  coalesce(list_bool_or(list_transform({{ expr }}, lambda e: length(cast(e as {{ dbt.type_string() }})) > {{ limit }})), false)
{%- endmacro %}

{% macro postgres__array_has_long_string(expr, limit) -%}
  exists (select 1 from unnest({{ expr }}) as u(e) where length(cast(e as text)) > {{ limit }})
{%- endmacro %}

{% macro spark__array_has_long_string(expr, limit) -%}
  exists({{ expr }}, e -> length(cast(e as string)) > {{ limit }})
{%- endmacro %}


{# JSON in a form that does not depend on the order of its keys. #}
{% macro json_canonical(expr) %}
  {{ return(adapter.dispatch('json_canonical', 'cohort_sync')(expr)) }}
{% endmacro %}

{# DuckDB: every node of the document, by path. #}
{% macro default__json_canonical(expr) -%}
  (select string_agg(fullkey || '=' || coalesce(cast(atom as {{ dbt.type_string() }}), type), ',' order by fullkey)
            from json_tree({{ expr }}))
{%- endmacro %}

{# PostgreSQL's jsonb stores keys in one order. #}
{% macro postgres__json_canonical(expr) -%}
  cast(cast({{ expr }} as jsonb) as text)
{%- endmacro %}


{# Whether a date or timestamp is finite (DuckDB and PostgreSQL have infinity; Spark has none). #}
{% macro is_finite(expr) %}
  {{ return(adapter.dispatch('is_finite', 'cohort_sync')(expr)) }}
{% endmacro %}

{% macro default__is_finite(expr) %}isfinite({{ expr }}){% endmacro %}

{% macro spark__is_finite(expr) %}({{ expr }} is not null){% endmacro %}


{#
  Why a JSON value cannot be a nested attribute, or null: Braze takes an
  object of at most 100 KB whose keys have no '.', space or leading '$'
  ('$time' excepted) and whose strings are at most 255 characters; one
  invalid nested value drops every nested attribute of the request.
#}
{% macro json_reject_reason(expr) %}
  {{ return(adapter.dispatch('json_reject_reason', 'cohort_sync')(expr)) }}
{% endmacro %}

{% macro default__json_reject_reason(expr) -%}
  case
            when json_type({{ expr }}) <> 'OBJECT' then 'invalid_json'
            when length(cast({{ expr }} as {{ dbt.type_string() }})) > 102400 then 'invalid_json'
            when exists (
                select 1 from json_tree({{ expr }}) as node
                where (node.fullkey not like '%]' and node.key is not null and node.key <> '$time'
                        and (node.key like '%.%' or node.key like '% %' or node.key like '$%'))
                    or (node.type = 'VARCHAR' and length(json_extract_string(node.value, '$')) > 255)
            ) then 'invalid_json'
        end
{%- endmacro %}

{% macro postgres__json_reject_reason(expr) -%}
  case
            when jsonb_typeof(cast({{ expr }} as jsonb)) <> 'object' then 'invalid_json'
            when length(cast({{ expr }} as text)) > 102400 then 'invalid_json'
            when jsonb_path_exists(cast({{ expr }} as jsonb),
                'strict $.** ? (@.type() == "object").keyvalue() ? (@.key like_regex "[. ]" || (@.key starts with "$" && @.key != "$time"))')
                then 'invalid_json'
            when jsonb_path_exists(cast({{ expr }} as jsonb), 'strict $.** ? (@.type() == "string" && @ like_regex "^.{128}.{128}")')
                then 'invalid_json'
        end
{%- endmacro %}


{#
  Who a /users/track object is for, as the members that open it (JSON text,
  a comma after): `"external_id":"u1",`, `"braze_id":...`, `"email":...`,
  `"phone":...`, or `"user_alias":{"alias_name":...,"alias_label":...},`,
  read from the member key as cohort_sync_audience_rows builds it
  (`<type>:<value>`; an alias `alias:<length of the name>:<name>:<label>`).
#}
{% macro member_identifier_json(member_key) %}
  {%- set kind = dbt.split_part(member_key, "':'", 1) -%}
  {%- set rest = "substring(" ~ member_key ~ ", " ~ dbt.length(kind) ~ " + 2)" -%}
  {%- set digits = dbt.split_part(rest, "':'", 1) -%}
  {%- set name_length = "cast(" ~ digits ~ " as " ~ dbt.type_int() ~ ")" -%}
  {%- set alias_name = "substring(" ~ rest ~ ", " ~ dbt.length(digits) ~ " + 2, " ~ name_length ~ ")" -%}
  {%- set alias_label = "substring(" ~ rest ~ ", " ~ dbt.length(digits) ~ " + 3 + " ~ name_length ~ ")" -%}
  {%- set identifier -%}
    case
            when {{ kind }} = 'alias' then concat('"user_alias":{"alias_name":', {{ cohort_sync.json_string(alias_name) }},
                ',"alias_label":', {{ cohort_sync.json_string(alias_label) }}, '},')
            else concat({{ cohort_sync.json_string(kind) }}, ':', {{ cohort_sync.json_string(rest) }}, ',')
        end
  {%- endset -%}
  {{ return(identifier) }}
{% endmacro %}


{#
  A planned value as a member of its user's /users/track object, JSON text
  (`"name":value`), as the publisher joins it into the request
  (Ledger.pending_profile_requests); what payload.attribute_value makes
  of value_text, rendered here once for the whole plan: null unsets; a
  number, boolean, array or JSON is its text; a time (milliseconds since
  the epoch) is ISO 8601 in UTC; a string or date is a JSON string.
#}
{% macro attribute_json(name, kind, text, unset) %}
  {%- set value -%}
    case
            when {{ unset }} or {{ text }} is null then 'null'
            when {{ kind }} in ('number', 'boolean', 'array', 'json') then {{ text }}
            when {{ kind }} = 'time' then concat('"', {{ cohort_sync.iso_time(text) }}, '"')
            else {{ cohort_sync.json_string(text) }}
        end
  {%- endset -%}
  {{ return("concat(" ~ cohort_sync.json_string(name) ~ ", ':', " ~ value ~ ")") }}
{% endmacro %}


{# The JSON string (quoted and escaped, as text) of a string expression. #}
{% macro json_string(expr) %}
  {{ return(adapter.dispatch('json_string', 'cohort_sync')(expr)) }}
{% endmacro %}

{% macro default__json_string(expr) -%}
  cast(to_json(cast({{ expr }} as {{ dbt.type_string() }})) as {{ dbt.type_string() }})
{%- endmacro %}

{# Spark's to_json renders no bare string: render a one-element array and take its element. #}
{% macro spark__json_string(expr) -%}
  {%- set array = "to_json(array(cast(" ~ expr ~ " as string)))" -%}
  substring({{ array }}, 2, length({{ array }}) - 2)
{%- endmacro %}


{#
  ISO 8601 in UTC to the millisecond, with a four-digit year
  (1970-01-01T00:00:00.000Z), of text of milliseconds since the epoch,
  whatever the session's time zone.
#}
{% macro iso_time(millis) %}
  {{ return(adapter.dispatch('iso_time', 'cohort_sync')(millis)) }}
{% endmacro %}

{% macro default__iso_time(millis) -%}
  strftime(epoch_ms(cast({{ millis }} as {{ dbt.type_bigint() }})), '%Y-%m-%dT%H:%M:%S.%gZ')
{%- endmacro %}

{#- days and the milliseconds left, each exact: PostgreSQL multiplies an interval in
    doubles, which past about 2^56 microseconds (the year 4253) lose the last one -#}
{% macro postgres__iso_time(millis) -%}
  {%- set at = "cast(" ~ millis ~ " as " ~ dbt.type_bigint() ~ ")" -%}
  to_char(timestamp '1970-01-01 00:00:00' + ({{ at }} / 86400000) * interval '1 day'
              + mod({{ at }}, 86400000) * interval '1 millisecond',
          'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
{%- endmacro %}

{# Spark: by arithmetic on the day and the time of day (date_format would read the session's zone). #}
{% macro spark__iso_time(millis) -%}
  {%- set at = "cast(" ~ millis ~ " as bigint)" -%}
  {%- set parts = [] -%}
  {%- for unit, of, width in [(3600000, 24, 2), (60000, 60, 2), (1000, 60, 2), (1, 1000, 3)] -%}
    {#- (at div unit) mod of, zero-padded: floor on exact doubles, which is exact below 2^53 -#}
    {%- do parts.append("lpad(cast(floor(" ~ at ~ " / " ~ unit ~ ") - " ~ of ~ " * floor(" ~ at ~ " / " ~ (unit * of)
                        ~ ") as string), " ~ width ~ ", '0')") -%}
  {%- endfor -%}
  concat(cast(date_from_unix_date(cast(floor({{ at }} / 86400000) as int)) as string), 'T',
         {{ parts[0] }}, ':', {{ parts[1] }}, ':', {{ parts[2] }}, '.', {{ parts[3] }}, 'Z')
{%- endmacro %}
