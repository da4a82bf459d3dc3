{#
  The attribute sync registry: the var `cohort_sync_attribute_syncs`, a
  list of declarations such as

    - model: customer_facts              # the model (required): one row per user
      sync_id: customer_facts            # stable id (default: model); unique among syncs and cohorts
      package: my_project                # package of the model (default: the root project)
      mode: update                       # update: existing users only (_update_existing_only);
                                         # upsert: create the user when Braze has none (required)
      identifiers: [external_id]         # the identifier columns (default: every column of the
                                         # model named as in the audience contract)
      attributes:                        # what goes out (default: every other column, under its
        plan: plan_name                  # own name); a list of columns, or a mapping of
        lifetime_value: ltv              # Braze attribute name: column
      nulls: unset                       # a SQL null unsets the attribute (unset), or leaves
                                         # Braze's value as it is (keep); default unset
      on_leave: keep                     # a user who leaves the model keeps the attributes this
                                         # sync wrote (keep), or has them unset (unset); default keep
      max_data_points: 500000            # a run writing more is blocked, like a mass removal
      full_resync_every: 7d              # re-send every current value this often (m, h, d):
                                         # repairs users created in Braze since (update mode)
      schedule: daily                    # as for cohorts
      notify: [{email: crm@example.com}] # as for cohorts

  Returns the validated declarations as dicts with keys sync_id, model,
  package, mode, identifiers (contract names; 'alias' stands for
  alias_name and alias_label), attributes (a list of {name, column,
  standard}), nulls, on_leave, max_data_points (none when unset),
  full_resync_minutes, schedule and notify. A malformed declaration fails
  compilation with a message naming the sync and the field.

  Whether a column exists, and its type, is known only once the model is
  built: cohort_sync_attribute_rows checks those (macros/attribute_values.sql).
#}
{% macro declared_attribute_syncs() %}
  {{ return(adapter.dispatch('declared_attribute_syncs', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__declared_attribute_syncs() %}
  {%- set allowed_fields = ['model', 'sync_id', 'package', 'mode', 'identifiers', 'attributes', 'nulls', 'on_leave',
                            'max_data_points', 'full_resync_every', 'schedule', 'notify', 'description'] -%}
  {%- set registry = cohort_sync.sync_registry('cohort_sync_attribute_syncs', 'sync declarations') -%}
  {%- set cohort_ids = cohort_sync.declared_cohorts() | map(attribute='cohort_id') | list -%}
  {%- set syncs = [] -%}
  {%- set seen = {} -%}
  {%- for entry in registry -%}
    {%- set position = "cohort_sync_attribute_syncs[" ~ loop.index0 ~ "]" -%}
    {%- set named = cohort_sync.sync_entry(entry, position, 'attribute sync', "'model' and 'mode'", allowed_fields) -%}
    {%- set model, sync_id, label, fail = named.model, named.sync_id, named.label, named.fail -%}
    {%- if sync_id in seen -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'sync_id' duplicates " ~ seen[sync_id] ~ "; each sync_id must be declared once") }}
    {%- endif -%}
    {%- if sync_id in cohort_ids -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'sync_id' is also a cohort_id in cohort_sync_cohorts; syncs and cohorts share one namespace (history, schedules, notifications): choose another id") }}
    {%- endif -%}
    {%- do seen.update({sync_id: position}) -%}

    {%- set mode = entry.get('mode') -%}
    {%- if mode not in ['update', 'upsert'] -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'mode' is required: update (existing Braze users only) or upsert (create users Braze does not have), got: " ~ mode) }}
    {%- endif -%}
    {%- set nulls = entry.get('nulls', 'unset') -%}
    {%- if nulls not in ['unset', 'keep'] -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'nulls' must be unset (a SQL null removes the attribute in Braze) or keep (it leaves Braze's value), got: " ~ nulls) }}
    {%- endif -%}
    {%- set on_leave = entry.get('on_leave', 'keep') -%}
    {%- if on_leave not in ['keep', 'unset'] -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'on_leave' must be keep (a user who leaves the model keeps the attributes) or unset (they are removed), got: " ~ on_leave) }}
    {%- endif -%}
    {%- set max_points = entry.get('max_data_points') -%}
    {%- if max_points is not none and (max_points is boolean or max_points is not number or max_points != max_points | int or max_points < 1) -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'max_data_points' must be a whole number of at least 1, got: " ~ max_points) }}
    {%- endif -%}
    {%- set identifiers = cohort_sync.sync_identifiers(entry.get('identifiers'), fail) -%}

    {%- do syncs.append({
        'sync_id': sync_id,
        'model': model | trim,
        'package': (entry.get('package') or project_name) | string | trim,
        'mode': mode,
        'identifiers': identifiers,
        'attributes': cohort_sync.sync_attributes(entry.get('attributes'), identifiers, fail),
        'nulls': nulls,
        'on_leave': on_leave,
        'max_data_points': (max_points | int) if max_points is not none else none,
        'full_resync_minutes': cohort_sync.period_minutes(entry.get('full_resync_every'), fail ~ "field 'full_resync_every' "),
        'schedule': cohort_sync.cohort_schedule(entry.get('schedule'), label),
        'notify': cohort_sync.cohort_notify(entry.get('notify'), label)
    }) -%}
  {%- endfor -%}
  {{ return(syncs) }}
{% endmacro %}


{# A sync registry var: its list of declarations (none is an empty list); anything else fails. #}
{% macro sync_registry(var_name, what) %}
  {%- set registry = var(var_name, []) -%}
  {%- if registry is none -%}
    {%- set registry = [] -%}
  {%- endif -%}
  {%- if registry is string or registry is mapping -%}
    {{ exceptions.raise_compiler_error("cohort_sync: var '" ~ var_name ~ "' must be a list of " ~ what ~ ", got: " ~ registry) }}
  {%- endif -%}
  {{ return(registry) }}
{% endmacro %}


{#
  One declaration of a sync registry, checked for what every sync has: a
  mapping with a model, a sync_id (default: the model) and only `allowed`
  settings. Returns {model, sync_id, label, fail}: `fail` starts every
  message about it ("cohort_sync: <noun> '<id>' (<position>): ").
#}
{% macro sync_entry(entry, position, noun, required, allowed) %}
  {%- if entry is not mapping -%}
    {{ exceptions.raise_compiler_error("cohort_sync: " ~ position ~ " must be a mapping with at least " ~ required ~ ", got: " ~ entry) }}
  {%- endif -%}
  {%- set model = entry.get('model') -%}
  {%- if model is not string or model | trim == '' -%}
    {{ exceptions.raise_compiler_error("cohort_sync: " ~ position ~ ": field 'model' is required (the model's name)") }}
  {%- endif -%}
  {%- set sync_id = (entry.get('sync_id') if entry.get('sync_id') is not none else model) | string | trim -%}
  {%- set label = noun ~ " '" ~ sync_id ~ "' (" ~ position ~ ")" -%}
  {%- set fail = "cohort_sync: " ~ label ~ ": " -%}
  {%- for field in entry if field not in allowed -%}
    {{ exceptions.raise_compiler_error(fail ~ "unknown setting '" ~ field ~ "'; allowed settings are " ~ allowed | join(', ')) }}
  {%- endfor -%}
  {%- if sync_id == '' -%}
    {{ exceptions.raise_compiler_error(fail ~ "field 'sync_id' must not be empty") }}
  {%- endif -%}
  {{ return({'model': model, 'sync_id': sync_id, 'label': label, 'fail': fail}) }}
{% endmacro %}


{#
  A sync's identifier columns: none given means every contract column the
  model has (attribute_rows finds them); else a list of contract names
  (external_id, alias, braze_id, email, phone). Returns the list, or none.
#}
{% macro sync_identifiers(value, fail) %}
  {%- set names = ['external_id', 'alias', 'braze_id', 'email', 'phone'] -%}
  {%- if value is none -%}
    {{ return(none) }}
  {%- endif -%}
  {%- set value = [value] if value is string else value -%}
  {%- if value is mapping or value is not iterable or value | length == 0 -%}
    {{ exceptions.raise_compiler_error(fail ~ "field 'identifiers' must list identifier columns among " ~ names | join(', ') ~ ", got: " ~ value) }}
  {%- endif -%}
  {%- for name in value if name not in names -%}
    {{ exceptions.raise_compiler_error(fail ~ "field 'identifiers' must list identifier columns among " ~ names | join(', ') ~ " (device ids cannot be addressed through /users/track), got: " ~ name) }}
  {%- endfor -%}
  {{ return(value | list) }}
{% endmacro %}


{#
  What a sync sends: none (every non-identifier column, under its own
  name), a list of columns (each under its own name), or a mapping of
  Braze attribute name: column. Names are checked here when declared
  (duplicates, Braze identifiers); names Braze refuses ($..., over 255
  characters) are rejects in cohort_sync_rejects, as for any bad input.
  Returns none or [{name, column, standard}].
#}
{% macro sync_attributes(value, identifiers, fail) %}
  {%- if value is none -%}
    {{ return(none) }}
  {%- endif -%}
  {%- set pairs = [] -%}
  {%- if value is mapping -%}
    {%- for name, column in value.items() -%}
      {%- do pairs.append((name, column)) -%}
    {%- endfor -%}
  {%- elif value is string or value is not iterable -%}
    {{ exceptions.raise_compiler_error(fail ~ "field 'attributes' must be a list of columns or a mapping of Braze attribute name: column, got: " ~ value) }}
  {%- else -%}
    {%- for column in value -%}
      {%- do pairs.append((column, column)) -%}
    {%- endfor -%}
  {%- endif -%}
  {%- if pairs | length == 0 -%}
    {{ exceptions.raise_compiler_error(fail ~ "field 'attributes' must name at least one column") }}
  {%- endif -%}
  {%- set attributes = [] -%}
  {%- set names = {} -%}
  {%- for name, column in pairs -%}
    {%- if name is not string or column is not string or name == '' or column | trim == '' -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'attributes': each attribute needs a name and a column, got: " ~ name ~ ": " ~ column) }}
    {%- endif -%}
    {%- do attributes.append(cohort_sync.sync_attribute(name, column | trim, fail)) -%}
    {%- if name | lower in names -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'attributes' names the attribute '" ~ name ~ "' twice") }}
    {%- endif -%}
    {%- do names.update({name | lower: true}) -%}
  {%- endfor -%}
  {{ return(attributes) }}
{% endmacro %}

{# One attribute, {name, column, standard}; a Braze identifier is not an attribute. #}
{% macro sync_attribute(name, column, fail) %}
  {%- if name | lower in ['external_id', 'user_alias', 'braze_id', 'app_id', 'push_tokens', 'update_existing_only',
                          '_update_existing_only', '_merge_objects'] -%}
    {{ exceptions.raise_compiler_error(fail ~ "field 'attributes': '" ~ name ~ "' is an identifier or a control field in Braze, not an attribute a sync can write") }}
  {%- endif -%}
  {{ return({'name': name, 'column': column, 'standard': name in cohort_sync.braze_standard_fields()}) }}
{% endmacro %}


{# Braze's standard profile fields a sync may write; each is validated (macros/attribute_values.sql). #}
{% macro braze_standard_fields() %}
  {{ return(['first_name', 'last_name', 'email', 'phone', 'country', 'language', 'gender', 'dob', 'home_city',
             'time_zone', 'email_subscribe', 'push_subscribe']) }}
{% endmacro %}


{# A period such as 30m, 6h or 7d, in minutes (none when not set). #}
{% macro period_minutes(value, fail) %}
  {%- if value is none -%}
    {{ return(none) }}
  {%- endif -%}
  {%- set period = modules.re.match('^([1-9][0-9]*)([mhd])$', value | string | trim | lower) -%}
  {%- if value is number or not period -%}
    {{ exceptions.raise_compiler_error(fail ~ "must be a period such as 12h or 7d (minutes, hours or days), got: " ~ value) }}
  {%- endif -%}
  {{ return(period.group(1) | int * {'m': 1, 'h': 60, 'd': 1440}[period.group(2)]) }}
{% endmacro %}


{#
  The declared syncs as a select of literals with the columns of
  declared_cohorts_sql (cohort_id holds the sync id, delivery is
  'profile'), then mode, nulls, on_leave, max_data_points and
  full_resync_minutes.
#}
{% macro declared_syncs_sql() %}
  {%- set bigint = dbt.type_bigint() -%}
  {%- set rows = [] -%}
  {%- for sync in cohort_sync.declared_attribute_syncs() -%}
    {%- set row = {
        'cohort_id': sync.sync_id, 'cohort_name': sync.sync_id, 'model_name': sync.model, 'delivery': 'profile',
        'attribute_name': none, 'notify': tojson(sync.notify), 'sync_mode': sync.mode,
        'max_data_points': sync.max_data_points, 'full_resync_minutes': sync.full_resync_minutes} -%}
    {%- do row.update(cohort_sync.schedule_values(sync.schedule)) -%}
    {%- do rows.append(row) -%}
  {%- endfor -%}
  {{ return(cohort_sync.literal_rows_sql(cohort_sync.declaration_columns() + [
      ('sync_mode', dbt.type_string()), ('max_data_points', bigint), ('full_resync_minutes', bigint)], rows)) }}
{% endmacro %}


{#
  What a sync reads of its model, once built: {identifiers: {contract
  name: column}, attributes: [{name, column, kind, standard}]}. Declared
  columns the model lacks, and columns of a type no kind fits, fail with a
  message naming the sync, the column and its type. At parse time (before
  any model exists) both are empty.
#}
{% macro sync_columns(sync) %}
  {%- set fail = "cohort_sync: attribute sync '" ~ sync.sync_id ~ "': " -%}
  {%- if not execute -%}
    {{ return({'identifiers': {}, 'attributes': []}) }}
  {%- endif -%}
  {%- set contract = cohort_sync.identifier_columns() -%}
  {%- set wanted = cohort_sync.wanted_identifiers(sync) -%}
  {%- set columns = {} -%}
  {%- for column in adapter.get_columns_in_relation(ref(sync.package, sync.model)) -%}
    {%- do columns.update({column.name | lower: column}) -%}
  {%- endfor -%}
  {%- set identifiers = cohort_sync.model_identifiers(sync, columns, fail) -%}
  {%- set declared = sync.attributes -%}
  {%- if declared is none -%}
    {%- set declared = [] -%}
    {%- for name, column in columns.items() if name not in contract or name not in wanted -%}
      {%- do declared.append(cohort_sync.sync_attribute(column.name, column.name, fail)) -%}
    {%- endfor -%}
  {%- endif -%}
  {%- set attributes = [] -%}
  {%- for attribute in declared -%}
    {%- set column = columns.get(attribute.column | lower) -%}
    {%- if column is none -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'attributes': model '" ~ sync.model ~ "' has no column '" ~ attribute.column ~ "'") }}
    {%- endif -%}
    {%- if column.name | lower in identifiers -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'attributes': column '" ~ column.name ~ "' is one of the sync's identifiers; to send it as an attribute too, list the identifiers in 'identifiers'") }}
    {%- endif -%}
    {%- if attribute.name in ['email', 'phone'] and attribute.name in identifiers -%}
      {{ exceptions.raise_compiler_error(fail ~ "field 'attributes': the attribute '" ~ attribute.name ~ "' is also one of the sync's identifiers; an object cannot carry it twice: leave it out, or list the identifiers without it in 'identifiers'") }}
    {%- endif -%}
    {%- set kind = cohort_sync.attribute_kind(column) -%}
    {%- if kind is none or (kind == 'json' and target.type == 'spark') -%}
      {{ exceptions.raise_compiler_error(fail ~ "column '" ~ column.name ~ "' is of type " ~ column.dtype ~ ", which cohort_sync does not send (string, number, boolean, date, timestamp, array of strings, JSON): cast it in the model") }}
    {%- endif -%}
    {%- do attributes.append({'name': attribute.name, 'column': column.name, 'kind': kind, 'dtype': column.data_type,
                              'standard': attribute.standard}) -%}
  {%- endfor -%}
  {%- if attributes | length == 0 -%}
    {{ exceptions.raise_compiler_error(fail ~ "model '" ~ sync.model ~ "' has no column to send besides its identifiers") }}
  {%- endif -%}
  {{ return({'identifiers': identifiers, 'attributes': attributes}) }}
{% endmacro %}


{# The identifier columns a sync (attribute or event) reads: those declared, else every contract column. #}
{% macro wanted_identifiers(sync) %}
  {%- set wanted = [] -%}
  {%- for name in (sync.identifiers if sync.identifiers is not none else cohort_sync.identifier_columns()) -%}
    {%- do wanted.extend(['alias_name', 'alias_label'] if name == 'alias' else [name]) -%}
  {%- endfor -%}
  {{ return(wanted) }}
{% endmacro %}

{# The sync's identifier columns the model has ({contract name: column}), given its columns by lower-case name. #}
{% macro model_identifiers(sync, columns, fail) %}
  {%- set wanted = cohort_sync.wanted_identifiers(sync) -%}
  {%- set identifiers = {} -%}
  {%- for name in wanted if name in columns -%}
    {%- do identifiers.update({name: columns[name].name}) -%}
  {%- endfor -%}
  {%- if identifiers | length == 0 -%}
    {{ exceptions.raise_compiler_error(fail ~ "model '" ~ sync.model ~ "' has none of the identifier columns " ~ wanted | join(', ')) }}
  {%- endif -%}
  {{ return(identifiers) }}
{% endmacro %}


{# Data points Braze bills for writing the attribute: subscription states are free. #}
{% macro attribute_data_points(name) %}
  {{ return(0 if name | lower in ['email_subscribe', 'push_subscribe', 'subscription_groups'] else 1) }}
{% endmacro %}


{# The array cap (var cohort_sync_max_array_length: Braze's default 25, at most 100). #}
{% macro max_array_length() %}
  {%- set size = var('cohort_sync_max_array_length', 25) -%}
  {%- if size is not number or size < 1 or size > 100 or size != size | int -%}
    {{ exceptions.raise_compiler_error("cohort_sync: var 'cohort_sync_max_array_length' must be a whole number from 1 to 100 (the array cap set in Braze: 25 unless raised), got: " ~ size) }}
  {%- endif -%}
  {{ return(size | int) }}
{% endmacro %}


{#
  The columns of cohort_sync_attribute_rows before the value's: who the row
  is for (its member key, which the identifier is read from), the row's own
  reject, and the raw identifiers (for cohort_sync_rejects; the table keeps
  them on rejected rows only: a row per attribute repeats them, and writing
  them was a third of building the table).
#}
{% macro sync_row_columns() %}
  {%- set columns = ['sync_id', 'member_key', 'reject_reason'] -%}
  {%- for name in cohort_sync.identifier_columns() -%}
    {%- do columns.append('raw_' ~ name) -%}
  {%- endfor -%}
  {{ return(columns) }}
{% endmacro %}

{# The wide row's value columns of a sync (sync_columns' result), carried through identification. #}
{% macro sync_value_columns(read) %}
  {%- set columns = [] -%}
  {%- for attribute in read.attributes -%}
    {%- set index = loop.index -%}
    {%- for part in ['is_null', 'text', 'canonical', 'reason'] -%}
      {%- do columns.append('a' ~ index ~ '_' ~ part) -%}
    {%- endfor -%}
  {%- endfor -%}
  {{ return(columns) }}
{% endmacro %}
