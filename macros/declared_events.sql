{#
  The event sync registry: the var `cohort_sync_event_syncs`, a list of
  declarations such as

    - model: app_events                  # the model (required): one row per event
      sync_id: app_events                # stable id (default: model); unique among syncs and cohorts
      package: my_project                # package of the model (default: the root project)
      kind: event                        # event (a custom event) or purchase (required)
      identifiers: [external_id]         # as for attribute syncs (default: every contract column)
      event_id: event_id                 # column, unique per event (required): what the ledger keys on
      name: ecommerce.order_placed       # an event's name, a constant; or name_column: a column
      time: occurred_at                  # column: when it happened (timestamp, date, or ISO 8601 text)
      properties: [order_total, coupon]  # columns (or a mapping of property name: column);
                                         # or properties_json: a JSON column (DuckDB, PostgreSQL)
      start_at: '2026-11-01'             # events from then on (UTC); or backfill: true for every
                                         # event in the model (one of the two is required)
      lookback: 3d                       # how far behind the newest acknowledged event a late one
                                         # is still sent (m, h, d; default 3d)
      max_events: 100000                 # a run sending more is blocked (the replay guard)
      create_users: false                # true: an event for a user Braze lacks creates the user
      guarantee: at_least_once           # or at_most_once: see README "Events and purchases"
      schedule: hourly                   # as for cohorts
      notify: [{email: crm@example.com}] # as for cohorts

  A purchase has no name; its columns are product_id, currency, price and
  optionally quantity (each a setting naming the column; the defaults are
  those names, quantity none: Braze counts 1).

  Returns the validated declarations as dicts: sync_id, model, package,
  kind, identifiers, event_id, name, name_column, time, properties (none,
  or [{name, column}]), properties_json, product_id, currency, price,
  quantity, start_ms (none for a backfill), lookback_minutes, max_events,
  create_users, guarantee, schedule and notify. A malformed declaration
  fails compilation naming the sync and the field.
#}
{% macro declared_event_syncs() %}
  {{ return(adapter.dispatch('declared_event_syncs', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__declared_event_syncs() %}
  {%- set allowed_fields = ['model', 'sync_id', 'package', 'kind', 'identifiers', 'event_id', 'name', 'name_column',
                            'time', 'properties', 'properties_json', 'product_id', 'currency', 'price', 'quantity',
                            'start_at', 'backfill', 'lookback', 'max_events', 'create_users', 'guarantee',
                            'schedule', 'notify', 'description'] -%}
  {%- set registry = cohort_sync.sync_registry('cohort_sync_event_syncs', 'event sync declarations') -%}
  {%- set taken = {} -%}
  {%- for cohort in cohort_sync.declared_cohorts() -%}
    {%- do taken.update({cohort.cohort_id: 'a cohort_id in cohort_sync_cohorts'}) -%}
  {%- endfor -%}
  {%- for sync in cohort_sync.declared_attribute_syncs() -%}
    {%- do taken.update({sync.sync_id: 'an attribute sync in cohort_sync_attribute_syncs'}) -%}
  {%- endfor -%}
  {%- set syncs = [] -%}
  {%- for entry in registry -%}
    {%- set position = "cohort_sync_event_syncs[" ~ loop.index0 ~ "]" -%}
    {%- set named = cohort_sync.sync_entry(entry, position, 'event sync', "'model', 'kind', 'event_id' and 'time'", allowed_fields) -%}
    {%- set model, sync_id, label, fail = named.model, named.sync_id, named.label, named.fail -%}
    {%- if sync_id in taken -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'sync_id' is also " ~ taken[sync_id] ~ "; cohorts and syncs share one namespace (history, schedules, notifications): choose another id") }}
    {%- endif -%}
    {%- do taken.update({sync_id: 'declared at ' ~ position}) -%}

    {%- set kind = entry.get('kind') -%}
    {%- if kind not in ['event', 'purchase'] -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'kind' is required: event (a custom event, such as ecommerce.order_placed) or purchase, got: " ~ kind) }}
    {%- endif -%}
    {%- for field in ['event_id', 'time'] -%}
      {%- if entry.get(field) is not string or entry.get(field) | trim == '' -%}
        {{ exceptions.raise_compiler_error(fail ~ "field '" ~ field ~ "' is required: the column that holds " ~ ("an id unique per event (Braze does not deduplicate events: the sync keys on it)" if field == 'event_id' else "when the event happened")) }}
      {%- endif -%}
    {%- endfor -%}
    {%- set name, name_column = entry.get('name'), entry.get('name_column') -%}
    {%- if kind == 'event' and (name is none) == (name_column is none) -%}
      {{ exceptions.raise_compiler_error(fail ~ "an event needs exactly one of 'name' (a constant, such as ecommerce.order_placed) and 'name_column' (the column holding each event's name)") }}
    {%- endif -%}
    {%- if kind == 'event' and name is not none and (name is not string or name | trim == '' or name | length > 255 or name.startswith('$')) -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'name' must be an event name of 1 to 255 characters, not starting with '$', got: " ~ name) }}
    {%- endif -%}
    {%- if kind == 'purchase' and (name is not none or name_column is not none) -%}
      {{ exceptions.raise_compiler_error(fail ~ "a purchase has no name (Braze names it by its product_id): leave out 'name' and 'name_column', or declare kind: event") }}
    {%- endif -%}
    {%- if kind == 'event' -%}
      {%- for field in ['product_id', 'currency', 'price', 'quantity'] if entry.get(field) is not none -%}
        {{ exceptions.raise_compiler_error(fail ~ "field '" ~ field ~ "' belongs to purchases; for an event, send it as a property") }}
      {%- endfor -%}
    {%- endif -%}
    {%- if entry.get('properties') is not none and entry.get('properties_json') is not none -%}
      {{ exceptions.raise_compiler_error(fail ~ "set 'properties' (columns) or 'properties_json' (one JSON column), not both") }}
    {%- endif -%}

    {%- set start_at, backfill = entry.get('start_at'), entry.get('backfill', false) -%}
    {%- if backfill is not boolean -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'backfill' must be true or false, got: " ~ backfill) }}
    {%- endif -%}
    {%- if start_at is none and not backfill -%}
      {{ exceptions.raise_compiler_error(fail ~ "says neither where to start nor to backfill: the first sync would send every event the model holds, perhaps years of them, and Braze would count each one and may trigger Canvases on them. Set start_at: '<YYYY-MM-DD or YYYY-MM-DD HH:MM:SS, UTC>' to send events from then on, or backfill: true to send the whole history") }}
    {%- endif -%}
    {%- if start_at is not none and backfill -%}
      {{ exceptions.raise_compiler_error(fail ~ "set start_at or backfill: true, not both") }}
    {%- endif -%}
    {%- set create_users = entry.get('create_users', false) -%}
    {%- if create_users is not boolean -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'create_users' must be true (an event for a user Braze does not have creates the user) or false (Braze ignores it), got: " ~ create_users) }}
    {%- endif -%}
    {%- set guarantee = entry.get('guarantee', 'at_least_once') -%}
    {%- if guarantee not in ['at_least_once', 'at_most_once'] -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'guarantee' must be at_least_once (a request whose acknowledgement was lost is sent again: its events may arrive twice) or at_most_once (it is not: its events may be lost), got: " ~ guarantee) }}
    {%- endif -%}
    {%- set max_events = entry.get('max_events', 100000) -%}
    {%- if max_events is boolean or max_events is not number or max_events != max_events | int or max_events < 1 -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'max_events' must be a whole number of at least 1, got: " ~ max_events) }}
    {%- endif -%}
    {%- set properties = none -%}
    {%- if entry.get('properties') is not none -%}
      {%- set properties = cohort_sync.event_properties(entry.get('properties'), fail) -%}
    {%- endif -%}

    {%- do syncs.append({
        'sync_id': sync_id,
        'model': model | trim,
        'package': (entry.get('package') or project_name) | string | trim,
        'kind': kind,
        'identifiers': cohort_sync.sync_identifiers(entry.get('identifiers'), fail),
        'event_id': entry.get('event_id') | trim,
        'name': name,
        'name_column': name_column,
        'time': entry.get('time') | trim,
        'properties': properties,
        'properties_json': entry.get('properties_json'),
        'product_id': entry.get('product_id', 'product_id') if kind == 'purchase' else none,
        'currency': entry.get('currency', 'currency') if kind == 'purchase' else none,
        'price': entry.get('price', 'price') if kind == 'purchase' else none,
        'quantity': entry.get('quantity') if kind == 'purchase' else none,
        'start_ms': none if backfill else cohort_sync.start_milliseconds(start_at, fail),
        'lookback_minutes': cohort_sync.period_minutes(entry.get('lookback', '3d'), fail ~ "field 'lookback' "),
        'max_events': max_events | int,
        'create_users': create_users,
        'guarantee': guarantee,
        'schedule': cohort_sync.cohort_schedule(entry.get('schedule'), label),
        'notify': cohort_sync.cohort_notify(entry.get('notify'), label)
    }) -%}
  {%- endfor -%}
  {{ return(syncs) }}
{% endmacro %}


{# Declared properties: a list of columns or a mapping of property name: column; [{name, column}]. #}
{% macro event_properties(value, fail) %}
  {%- set pairs = [] -%}
  {%- if value is mapping -%}
    {%- for name, column in value.items() -%}
      {%- do pairs.append({'name': name, 'column': column}) -%}
    {%- endfor -%}
  {%- elif value is string or value is not iterable -%}
    {{ exceptions.raise_compiler_error(fail ~ "field 'properties' must be a list of columns or a mapping of property name: column, got: " ~ value) }}
  {%- else -%}
    {%- for column in value -%}
      {%- do pairs.append({'name': column, 'column': column}) -%}
    {%- endfor -%}
  {%- endif -%}
  {%- set seen = {} -%}
  {%- for pair in pairs -%}
    {%- if pair.name is not string or pair.column is not string or pair.name == '' or pair.column | trim == '' -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'properties': each property needs a name and a column, got: " ~ pair.name ~ ": " ~ pair.column) }}
    {%- endif -%}
    {%- if pair.name in seen -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'properties' names the property '" ~ pair.name ~ "' twice") }}
    {%- endif -%}
    {%- do seen.update({pair.name: true}) -%}
  {%- endfor -%}
  {{ return(pairs) }}
{% endmacro %}


{# start_at ('YYYY-MM-DD', or with ' HH:MM' or ' HH:MM:SS', UTC) in milliseconds since the epoch. #}
{% macro start_milliseconds(value, fail) %}
  {%- set text = value | string | trim | replace('T', ' ') | replace('Z', '') -%}
  {%- if modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', text) -%}
    {%- set text = text ~ ' 00:00:00' -%}
  {%- elif modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}$', text) -%}
    {%- set text = text ~ ':00' -%}
  {%- endif -%}
  {%- set parts = modules.re.match('^([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})$', text) -%}
  {%- set valid = parts is not none -%}
  {%- if valid -%}
    {#- a date that does not exist (2026-13-01, 2026-02-30) is refused here, not by strptime's bare error -#}
    {%- set year, month, day = parts.group(1) | int, parts.group(2) | int, parts.group(3) | int -%}
    {%- set valid = year >= 1 and month >= 1 and month <= 12 and day >= 1 and day <= 31 and parts.group(4) | int < 24
                    and parts.group(5) | int < 60 and parts.group(6) | int < 60 -%}
    {%- set valid = valid and (modules.datetime.date(year, month, 1) + modules.datetime.timedelta(days=day - 1)).month == month -%}
  {%- endif -%}
  {%- if not valid -%}
    {{ exceptions.raise_compiler_error(fail ~ "field 'start_at' must be a UTC date or time such as '2026-11-01' or '2026-11-01 06:00:00', got: " ~ value) }}
  {%- endif -%}
  {%- set parsed = modules.datetime.datetime.strptime(text, '%Y-%m-%d %H:%M:%S') -%}
  {%- set epoch = modules.datetime.datetime(1970, 1, 1) -%}
  {{ return(((parsed - epoch).total_seconds() * 1000) | int) }}
{% endmacro %}


{#
  The declared event syncs as a select of literals with the columns of
  declared_cohorts_sql (cohort_id holds the sync id, delivery is 'event';
  sync_mode upsert when it creates users, else update), then max_events,
  lookback_minutes, guarantee and kind.
#}
{% macro declared_event_syncs_sql() %}
  {%- set bigint = dbt.type_bigint() -%}
  {%- set string = dbt.type_string() -%}
  {%- set rows = [] -%}
  {%- for sync in cohort_sync.declared_event_syncs() -%}
    {%- set row = {
        'cohort_id': sync.sync_id, 'cohort_name': sync.sync_id, 'model_name': sync.model, 'delivery': 'event',
        'attribute_name': none, 'notify': tojson(sync.notify), 'sync_mode': 'upsert' if sync.create_users else 'update',
        'max_events': sync.max_events, 'lookback_minutes': sync.lookback_minutes, 'event_guarantee': sync.guarantee,
        'event_kind': sync.kind} -%}
    {%- do row.update(cohort_sync.schedule_values(sync.schedule)) -%}
    {%- do rows.append(row) -%}
  {%- endfor -%}
  {{ return(cohort_sync.literal_rows_sql(cohort_sync.declaration_columns() + [
      ('sync_mode', string), ('max_events', bigint), ('lookback_minutes', bigint), ('event_guarantee', string),
      ('event_kind', string)], rows)) }}
{% endmacro %}


{#
  What an event sync reads of its model, once built: {identifiers,
  event_id, name_column, time: {column, kind, dtype}, properties: [{name,
  column, kind, dtype}], properties_json, product_id, currency, price:
  {column, kind, dtype}, quantity}. Declared columns the model lacks, and
  columns of a type that cannot be sent, fail naming the sync and the
  column. At parse time (before any model exists) it is empty.
#}
{% macro event_sync_columns(sync) %}
  {%- set fail = "cohort_sync: event sync '" ~ sync.sync_id ~ "': " -%}
  {%- if not execute -%}
    {{ return({'identifiers': {}, 'properties': []}) }}
  {%- endif -%}
  {%- set columns = {} -%}
  {%- for column in adapter.get_columns_in_relation(ref(sync.package, sync.model)) -%}
    {%- do columns.update({column.name | lower: column}) -%}
  {%- endfor -%}
  {%- set identifiers = cohort_sync.model_identifiers(sync, columns, fail) -%}
  {%- set read = {'identifiers': identifiers, 'properties': [], 'properties_json': none} -%}
  {%- for field in ['event_id', 'name_column', 'time', 'product_id', 'currency', 'price', 'quantity', 'properties_json'] if sync[field] is not none -%}
    {%- set column = columns.get(sync[field] | lower) -%}
    {%- if column is none -%}
      {{ exceptions.raise_compiler_error(fail ~ "field '" ~ field ~ "': model '" ~ sync.model ~ "' has no column '" ~ sync[field] ~ "'") }}
    {%- endif -%}
    {%- set kind = cohort_sync.attribute_kind(column) -%}
    {%- set wanted = {'time': ['time', 'date', 'string'], 'price': ['number'], 'quantity': ['number'],
                      'properties_json': ['json']}.get(field, ['string', 'number']) -%}
    {%- if kind not in wanted -%}
      {{ exceptions.raise_compiler_error(fail ~ "field '" ~ field ~ "': column '" ~ column.name ~ "' is of type " ~ column.dtype ~ "; it must be " ~ wanted | join(' or ') ~ ": cast it in the model") }}
    {%- endif -%}
    {%- do read.update({field: {'column': column.name, 'kind': kind, 'dtype': column.data_type}}) -%}
  {%- endfor -%}
  {%- for property in (sync.properties or []) -%}
    {%- set column = columns.get(property.column | lower) -%}
    {%- if column is none -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'properties': model '" ~ sync.model ~ "' has no column '" ~ property.column ~ "'") }}
    {%- endif -%}
    {%- set kind = cohort_sync.attribute_kind(column) -%}
    {%- if kind is none or kind == 'array' or (kind == 'json' and target.type == 'spark') -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'properties': column '" ~ column.name ~ "' is of type " ~ column.dtype ~ ", which cohort_sync does not send as an event property (string, number, boolean, date, timestamp, JSON): cast it in the model") }}
    {%- endif -%}
    {%- do read.properties.append({'name': property.name, 'column': column.name, 'kind': kind, 'dtype': column.data_type}) -%}
  {%- endfor -%}
  {{ return(read) }}
{% endmacro %}
