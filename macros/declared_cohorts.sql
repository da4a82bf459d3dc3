{#
  The cohort registry: the var `cohort_sync_cohorts`, a list of
  declarations such as

    - model: churn_risk_customers        # the audience model (required)
      name: "Churn-risk customers"       # what marketers see in Braze (required)
      cohort_id: churn_risk              # stable id Braze stores (default: model)
      package: my_project                # package of the model (default: the root project)
      description: "..."                 # optional, for people
      delivery: attribute                # cohort_import (the partner cohort API) or attribute (a
                                         # boolean profile attribute through /users/track);
                                         # default: var cohort_sync_delivery, else cohort_import
      attribute: in_churn_risk           # the attribute's name (attribute delivery only;
                                         # default: cohort_<cohort_id>)
      schedule: daily                    # when it publishes (default every_run), or a mapping:
      # schedule: {every: weekly, at: "06:30", weekday: monday, timezone: Europe/Paris}
      #   every: every_run | hourly | daily | weekly | monthly | once
      #   at: "HH:MM" (hourly: ":MM"), weekday (weekly), day 1-31 (monthly),
      #   timezone (IANA name, default UTC)
      notify:                            # who hears when an import completes or fails (optional)
        - email: growth-team@example.com
        - webhook: $SLACK_GROWTH_WEBHOOK # the name of an environment variable holding the URL
          when: [failed, blocked]        # default: success, failed, blocked; 'changed' is a
                                         # success that added or removed members
          repeat_every: 6h               # while it keeps failing, at most one failure
                                         # notification per period (m, h, d; default 1d)
      full_resync_every: 7d              # re-send every current member this often (m, h, d;
                                         # default never): repairs what Braze lost or ignored

  Returns the validated declarations as dicts with keys cohort_id, name,
  model, package, description, delivery, attribute_name (none for
  cohort_import), schedule (every, at, weekday, day, timezone), notify (a list of {email or webhook, when, and
  repeat_every_minutes when set}) and full_resync_minutes (none when not set). A malformed declaration fails compilation with a
  message naming the cohort and the field.
#}
{% macro declared_cohorts() %}
  {{ return(adapter.dispatch('declared_cohorts', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__declared_cohorts() %}
  {%- set allowed_fields = ['model', 'name', 'cohort_id', 'package', 'description', 'delivery', 'attribute',
                            'schedule', 'notify', 'full_resync_every'] -%}
  {%- set default_delivery = cohort_sync.default_delivery() -%}
  {%- set registry = var('cohort_sync_cohorts', []) -%}
  {%- if registry is none -%}
    {%- set registry = [] -%}
  {%- endif -%}
  {%- if registry is string or registry is mapping -%}
    {{ exceptions.raise_compiler_error("cohort_sync: var 'cohort_sync_cohorts' must be a list of cohort declarations, got: " ~ registry) }}
  {%- endif -%}

  {%- set cohorts = [] -%}
  {%- set seen = {} -%}
  {%- set attributes = {} -%}
  {%- for entry in registry -%}
    {%- set position = "cohort_sync_cohorts[" ~ loop.index0 ~ "]" -%}
    {%- if entry is not mapping -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ position ~ " must be a mapping with at least 'model' and 'name', got: " ~ entry) }}
    {%- endif -%}

    {%- set model = entry.get('model') -%}
    {%- if model is not string or model | trim == '' -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ position ~ ": field 'model' is required (the audience model's name)") }}
    {%- endif -%}
    {%- set cohort_id = (entry.get('cohort_id') if entry.get('cohort_id') is not none else model) | string | trim -%}
    {%- set label = "cohort '" ~ cohort_id ~ "' (" ~ position ~ ")" -%}

    {%- for field in entry if field not in allowed_fields -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ label ~ ": unknown setting '" ~ field ~ "'; allowed settings are " ~ allowed_fields | join(', ')) }}
    {%- endfor -%}
    {%- if cohort_id == '' -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ label ~ ": field 'cohort_id' must not be empty") }}
    {%- endif -%}
    {%- set name = entry.get('name') -%}
    {%- if name is none or name | string | trim == '' -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ label ~ ": field 'name' is required and must not be empty") }}
    {%- endif -%}
    {%- if cohort_id in seen -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ label ~ ": field 'cohort_id' duplicates " ~ seen[cohort_id] ~ "; each cohort_id must be declared once") }}
    {%- endif -%}
    {%- do seen.update({cohort_id: position}) -%}
    {%- set delivery = cohort_sync.cohort_delivery(entry, default_delivery, label) -%}
    {%- set attribute_name = cohort_sync.cohort_attribute(entry, delivery, cohort_id, label) -%}
    {%- if attribute_name is not none and attribute_name | lower in attributes -%}
      {{ exceptions.raise_compiler_error("cohort_sync: " ~ label ~ ": field 'attribute' '" ~ attribute_name ~ "' is already the attribute of " ~ attributes[attribute_name | lower] ~ "; each attribute cohort needs its own attribute") }}
    {%- endif -%}
    {%- if attribute_name is not none -%}
      {%- do attributes.update({attribute_name | lower: label}) -%}
    {%- endif -%}

    {%- do cohorts.append({
        'cohort_id': cohort_id,
        'name': name | string | trim,
        'model': model | trim,
        'package': (entry.get('package') or project_name) | string | trim,
        'description': entry.get('description') or '',
        'delivery': delivery,
        'attribute_name': attribute_name,
        'schedule': cohort_sync.cohort_schedule(entry.get('schedule'), label),
        'notify': cohort_sync.cohort_notify(entry.get('notify'), label),
        'full_resync_minutes': cohort_sync.period_minutes(entry.get('full_resync_every'), "cohort_sync: " ~ label ~ ": field 'full_resync_every' ")
    }) -%}
  {%- endfor -%}
  {{ return(cohorts) }}
{% endmacro %}


{#
  The project-wide delivery: var cohort_sync_delivery (default
  cohort_import, the partner cohort import API; attribute is a boolean
  profile attribute through /users/track, which a REST API key reaches).
#}
{% macro default_delivery() %}
  {%- set delivery = var('cohort_sync_delivery', 'cohort_import') -%}
  {%- if delivery not in cohort_sync.deliveries() -%}
    {{ exceptions.raise_compiler_error("cohort_sync: var 'cohort_sync_delivery' must be one of " ~ cohort_sync.deliveries() | join(', ') ~ ", got: " ~ delivery) }}
  {%- endif -%}
  {{ return(delivery) }}
{% endmacro %}

{% macro deliveries() %}
  {{ return(['cohort_import', 'attribute']) }}
{% endmacro %}

{# One cohort's delivery, validated. #}
{% macro cohort_delivery(entry, default, label) %}
  {%- set delivery = entry.get('delivery') -%}
  {%- if delivery is none -%}
    {{ return(default) }}
  {%- endif -%}
  {%- if delivery not in cohort_sync.deliveries() -%}
    {{ exceptions.raise_compiler_error("cohort_sync: " ~ label ~ ": field 'delivery' must be one of " ~ cohort_sync.deliveries() | join(', ') ~ ", got: " ~ delivery) }}
  {%- endif -%}
  {{ return(delivery) }}
{% endmacro %}

{#
  The custom attribute an attribute cohort sets on each member's profile
  (true while a member, null once not): the declared `attribute`, or
  cohort_<cohort_id> with every character other than a letter, digit or
  underscore written as an underscore. Braze's rules: at most 255
  characters, no leading $; the package also refuses Braze's identifier
  and standard profile fields, which are not cohort flags. None for
  cohort_import.
#}
{% macro cohort_attribute(entry, delivery, cohort_id, label) %}
  {%- set fail = "cohort_sync: " ~ label ~ ": field 'attribute' " -%}
  {%- set value = entry.get('attribute') -%}
  {%- if delivery != 'attribute' -%}
    {%- if value is not none -%}
      {{ exceptions.raise_compiler_error(fail ~ "applies to delivery: attribute only (this cohort's delivery is " ~ delivery ~ ")") }}
    {%- endif -%}
    {{ return(none) }}
  {%- endif -%}
  {%- if value is none -%}
    {%- set value = 'cohort_' ~ modules.re.sub('[^A-Za-z0-9_]', '_', cohort_id) -%}
  {%- endif -%}
  {%- if value is not string or value | trim == '' or value != value | trim -%}
    {{ exceptions.raise_compiler_error(fail ~ "must be a name without surrounding spaces, got: '" ~ value ~ "'") }}
  {%- endif -%}
  {%- if value | length > 255 or value.startswith('$') -%}
    {{ exceptions.raise_compiler_error(fail ~ "must be at most 255 characters and must not start with $ (Braze's rules for attribute names), got: " ~ value) }}
  {%- endif -%}
  {%- if value | lower in cohort_sync.braze_reserved_attributes() -%}
    {{ exceptions.raise_compiler_error(fail ~ "'" ~ value ~ "' is an identifier or standard profile field in Braze, not a cohort flag: choose another name") }}
  {%- endif -%}
  {{ return(value) }}
{% endmacro %}

{% macro braze_reserved_attributes() %}
  {{ return(['external_id', 'user_alias', 'braze_id', 'email', 'phone', 'first_name', 'last_name', 'country',
             'language', 'gender', 'dob', 'home_city', 'time_zone', 'email_subscribe', 'push_subscribe',
             'push_tokens', 'current_location', 'date_of_first_session', 'date_of_last_session',
             'facebook', 'twitter', 'image_url', 'marked_email_as_spam_at', 'email_open_tracking_disabled',
             'email_click_tracking_disabled', 'subscription_groups', 'app_id', 'update_existing_only',
             '_update_existing_only', '_merge_objects']) }}
{% endmacro %}


{#
  One cohort's schedule, validated: a name (`daily`) or one mapping. A list
  is refused: a cohort has one live schedule.
#}
{% macro cohort_schedule(value, label) %}
  {%- set kinds = ['every_run', 'hourly', 'daily', 'weekly', 'monthly', 'once'] -%}
  {%- set weekdays = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday'] -%}
  {%- set fail = "cohort_sync: " ~ label ~ ": field 'schedule' " -%}
  {%- if value is none -%}
    {%- set value = 'every_run' -%}
  {%- endif -%}
  {%- if value is string -%}
    {%- set value = {'every': value} -%}
  {%- endif -%}
  {%- if value is not mapping -%}
    {{ exceptions.raise_compiler_error(fail ~ "must be one schedule (a name such as daily, or a mapping with 'every'): a cohort has one live schedule, got: " ~ value) }}
  {%- endif -%}
  {%- for key in value if key not in ['every', 'at', 'weekday', 'day', 'timezone'] -%}
    {{ exceptions.raise_compiler_error(fail ~ "has an unknown setting '" ~ key ~ "'; allowed are every, at, weekday, day, timezone") }}
  {%- endfor -%}
  {%- set every = value.get('every') | string | trim | lower -%}
  {%- if every not in kinds -%}
    {{ exceptions.raise_compiler_error(fail ~ "must be one of " ~ kinds | join(', ') ~ ", got: " ~ value.get('every')) }}
  {%- endif -%}
  {%- set fixed = every in ['every_run', 'once'] -%}
  {%- for key in ['at', 'weekday', 'day', 'timezone'] if value.get(key) is not none and fixed -%}
    {{ exceptions.raise_compiler_error(fail ~ "'" ~ every ~ "' takes no '" ~ key ~ "'") }}
  {%- endfor -%}
  {%- if value.get('weekday') is not none and every != 'weekly' -%}
    {{ exceptions.raise_compiler_error(fail ~ "'weekday' applies to weekly schedules only") }}
  {%- endif -%}
  {%- if value.get('day') is not none and every != 'monthly' -%}
    {{ exceptions.raise_compiler_error(fail ~ "'day' applies to monthly schedules only") }}
  {%- endif -%}

  {%- set at = value.get('at') -%}
  {%- if at is number -%}
    {{ exceptions.raise_compiler_error(fail ~ "'at' must be quoted text such as \"06:30\" (YAML reads 06:30 unquoted as the number " ~ at ~ ")") }}
  {%- endif -%}
  {%- if every == 'hourly' -%}
    {%- set at = at if at is not none else ':00' -%}
    {%- if not modules.re.match('^:[0-5][0-9]$', at | string) -%}
      {{ exceptions.raise_compiler_error(fail ~ "'at' of an hourly schedule is the minute, as \":15\", got: " ~ at) }}
    {%- endif -%}
    {%- set at = '00' ~ at -%}
  {%- elif not fixed -%}
    {%- set at = at if at is not none else '00:00' -%}
    {%- if not modules.re.match('^([01][0-9]|2[0-3]):[0-5][0-9]$', at | string) -%}
      {{ exceptions.raise_compiler_error(fail ~ "'at' must be a time of day as \"HH:MM\" (24-hour), got: " ~ at) }}
    {%- endif -%}
  {%- endif -%}

  {%- set weekday = none -%}
  {%- if every == 'weekly' -%}
    {%- set weekday = (value.get('weekday') or 'monday') | string | trim | lower -%}
    {%- if weekday not in weekdays -%}
      {{ exceptions.raise_compiler_error(fail ~ "'weekday' must be one of " ~ weekdays | join(', ') ~ ", got: " ~ value.get('weekday')) }}
    {%- endif -%}
  {%- endif -%}
  {%- set day = none -%}
  {%- if every == 'monthly' -%}
    {%- set day = value.get('day', 1) -%}
    {%- if day is not number or day != day | int or day < 1 or day > 31 -%}
      {{ exceptions.raise_compiler_error(fail ~ "'day' must be a day of the month from 1 to 31 (the last day in shorter months), got: " ~ day) }}
    {%- endif -%}
  {%- endif -%}
  {%- set tz = value.get('timezone') or 'UTC' -%}
  {%- if tz not in modules.pytz.all_timezones -%}
    {{ exceptions.raise_compiler_error(fail ~ "'timezone' must be an IANA time zone such as Europe/Paris, got: " ~ tz) }}
  {%- endif -%}
  {{ return({'every': every, 'at': (none if fixed else at), 'weekday': weekday, 'day': day, 'timezone': (none if fixed else tz)}) }}
{% endmacro %}


{#
  One cohort's notification recipients, validated: a list of mappings, each
  with one `email` (an address) or one `webhook` (the name of an environment
  variable holding the URL, written $NAME: webhook URLs are secrets, and
  declarations land in target/), and optionally `when`, the outcomes that
  notify: success, changed (a success that added or removed members),
  failed, blocked. Returns [{'email' or 'webhook': ..., 'when': [...]}].
  A value that looks like a URL is never echoed in an error.
#}
{% macro cohort_notify(value, label) %}
  {%- set outcomes = ['success', 'changed', 'failed', 'blocked'] -%}
  {%- set fail = "cohort_sync: " ~ label ~ ": field 'notify' " -%}
  {%- if value is none -%}
    {{ return([]) }}
  {%- endif -%}
  {%- if value is mapping -%}
    {%- set value = [value] -%}
  {%- endif -%}
  {%- if value is string or value is not iterable -%}
    {{ exceptions.raise_compiler_error(fail ~ "must be a list of recipients such as {email: team@example.com} or {webhook: $SLACK_WEBHOOK}" ~ cohort_sync.shown_unless_url(value)) }}
  {%- endif -%}
  {%- set recipients = [] -%}
  {%- for entry in value -%}
    {%- set where = fail ~ "item " ~ loop.index0 ~ " " -%}
    {%- if entry is not mapping -%}
      {{ exceptions.raise_compiler_error(where ~ "must be a mapping with 'email' or 'webhook'" ~ cohort_sync.shown_unless_url(entry)) }}
    {%- endif -%}
    {%- if true in entry -%}
      {{ exceptions.raise_compiler_error(where ~ "has the setting 'true': YAML reads an unquoted 'on' as true; write 'when' instead") }}
    {%- endif -%}
    {%- for key in entry if key not in ['email', 'webhook', 'when', 'repeat_every'] -%}
      {{ exceptions.raise_compiler_error(where ~ "has an unknown setting '" ~ key ~ "'; allowed are email, webhook, when, repeat_every") }}
    {%- endfor -%}
    {%- set channels = ['email', 'webhook'] | select('in', entry) | list -%}
    {%- if channels | length != 1 -%}
      {{ exceptions.raise_compiler_error(where ~ "must have exactly one of 'email' or 'webhook'") }}
    {%- endif -%}
    {%- set channel = channels[0] -%}
    {%- set address = entry[channel] | string | trim -%}
    {%- if channel == 'email' and not modules.re.match('^[^@\\s,;:<>()\\[\\]"\\\\]+@[^@\\s,;:<>()\\[\\]"\\\\]+$', address) -%}
      {{ exceptions.raise_compiler_error(where ~ "'email' must be one address such as team@example.com (one item per address)" ~ cohort_sync.shown_unless_url(address)) }}
    {%- endif -%}
    {%- if channel == 'webhook' -%}
      {%- set reference = modules.re.match('^[$](?:([A-Za-z_][A-Za-z0-9_]*)|[{]([A-Za-z_][A-Za-z0-9_]*)[}])$', address) -%}
      {%- if not reference -%}
        {{ exceptions.raise_compiler_error(where ~ "'webhook' must name the environment variable holding the URL, as $SLACK_GROWTH_WEBHOOK: webhook URLs are secrets and declarations are written to target/" ~ cohort_sync.shown_unless_url(address)) }}
      {%- endif -%}
      {%- set address = reference.group(1) or reference.group(2) -%}
    {%- endif -%}
    {%- set when = entry.get('when', ['success', 'failed', 'blocked']) -%}
    {%- set when = [when] if when is string else when -%}
    {%- if when is mapping or when is not iterable or when | length == 0 -%}
      {{ exceptions.raise_compiler_error(where ~ "'when' must list outcomes among " ~ outcomes | join(', ') ~ ", got: " ~ entry.get('when')) }}
    {%- endif -%}
    {%- for outcome in when if outcome not in outcomes -%}
      {{ exceptions.raise_compiler_error(where ~ "'when' must list outcomes among " ~ outcomes | join(', ') ~ ", got: " ~ outcome) }}
    {%- endfor -%}
    {%- set recipient = {channel: address, 'when': when | list} -%}
    {#- repeat_every: while the cohort keeps failing, at most one notification per period (default 1d) -#}
    {%- if entry.get('repeat_every') is not none -%}
      {%- set period = modules.re.match('^([1-9][0-9]*)([mhd])$', entry.get('repeat_every') | string | trim | lower) -%}
      {%- if entry.get('repeat_every') is number or not period -%}
        {{ exceptions.raise_compiler_error(where ~ "'repeat_every' must be a period such as 30m, 6h or 1d (minutes, hours or days), got: " ~ entry.get('repeat_every')) }}
      {%- endif -%}
      {%- do recipient.update({'repeat_every_minutes': period.group(1) | int * {'m': 1, 'h': 60, 'd': 1440}[period.group(2)]}) -%}
    {%- endif -%}
    {%- do recipients.append(recipient) -%}
  {%- endfor -%}
  {{ return(recipients) }}
{% endmacro %}


{# ", got: <value>" for an error message, unless the value may hold a URL (a secret). #}
{% macro shown_unless_url(value) %}
  {{ return(" (the value is not shown: it looks like a URL)" if '/' in value | string else ", got: " ~ value) }}
{% endmacro %}


{#
  The declared cohorts as a select of literals (cohort_id, cohort_name,
  model_name, delivery, attribute_name, the schedule_* columns, notify, the recipients as JSON
  text, and full_resync_minutes), for use as a CTE body.
#}
{% macro declared_cohorts_sql() %}
  {{ return(adapter.dispatch('declared_cohorts_sql', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__declared_cohorts_sql() %}
  {%- set rows = [] -%}
  {%- for cohort in cohort_sync.declared_cohorts() -%}
    {%- set row = {
        'cohort_id': cohort.cohort_id, 'cohort_name': cohort.name, 'model_name': cohort.model,
        'delivery': cohort.delivery, 'attribute_name': cohort.attribute_name,
        'notify': tojson(cohort.notify), 'full_resync_minutes': cohort.full_resync_minutes} -%}
    {%- do row.update(cohort_sync.schedule_values(cohort.schedule)) -%}
    {%- do rows.append(row) -%}
  {%- endfor -%}
  {{ return(cohort_sync.literal_rows_sql(cohort_sync.declaration_columns() + [('full_resync_minutes', dbt.type_bigint())], rows)) }}
{% endmacro %}


{# The columns every declaration (a cohort's, a sync's) has as a plan row, with their types. #}
{% macro declaration_columns() %}
  {%- set string = dbt.type_string() -%}
  {{ return([('cohort_id', string), ('cohort_name', string), ('model_name', string), ('delivery', string),
             ('attribute_name', string), ('schedule_every', string), ('schedule_at', string),
             ('schedule_weekday', string), ('schedule_day', dbt.type_int()), ('schedule_timezone', string),
             ('notify', string)]) }}
{% endmacro %}

{# A validated schedule as the schedule_* columns' values. #}
{% macro schedule_values(schedule) %}
  {{ return({'schedule_every': schedule.every, 'schedule_at': schedule.at, 'schedule_weekday': schedule.weekday,
             'schedule_day': schedule.day, 'schedule_timezone': schedule.timezone}) }}
{% endmacro %}


{#
  Rows of literals as a select (a CTE body): `columns` are (name, type),
  each row a dict of their values (a string, a number, or none for null).
  No rows: one select of nulls that returns nothing, with the same types.
#}
{% macro literal_rows_sql(columns, rows) %}
  {%- for row in (rows or [none]) %}
    select
      {%- for name, data_type in columns %}
        {%- set value = row[name] if row is not none else none %}
        cast({{ 'null' if value is none else (value if value is number else cohort_sync.quoted_literal(value)) }} as {{ data_type }}) as {{ name }}{{ "," if not loop.last }}
      {%- endfor %}
    {% if row is none %}where 1 = 0{% elif not loop.last %}union all{% endif %}
  {%- endfor %}
{% endmacro %}


{#
  A var holding a list of cohort ids (cohort_sync_clear_cohorts,
  cohort_sync_allow_removals), validated.
#}
{% macro cohort_id_list(var_name) %}
  {{ return(adapter.dispatch('cohort_id_list', 'cohort_sync')(var_name)) }}
{% endmacro %}

{% macro default__cohort_id_list(var_name) %}
  {%- set value = var(var_name, []) -%}
  {%- if value is none -%}
    {{ return([]) }}
  {%- endif -%}
  {%- if value is string -%}
    {%- set value = [value] -%}
  {%- endif -%}
  {%- if value is mapping or value is not iterable -%}
    {{ exceptions.raise_compiler_error("cohort_sync: var '" ~ var_name ~ "' must be a list of cohort ids, got: " ~ value) }}
  {%- endif -%}
  {%- set ids = [] -%}
  {%- for item in value -%}
    {%- if item is not string or item | trim == '' -%}
      {{ exceptions.raise_compiler_error("cohort_sync: var '" ~ var_name ~ "' must be a list of cohort ids, got the item: " ~ item) }}
    {%- endif -%}
    {%- do ids.append(item | trim) -%}
  {%- endfor -%}
  {{ return(ids) }}
{% endmacro %}


{#
  Cohorts no longer declared whose Braze members are to be removed
  (var cohort_sync_clear_cohorts). Clearing is guarded like any mass removal.
#}
{% macro cleared_cohorts() %}
  {{ return(adapter.dispatch('cleared_cohorts', 'cohort_sync')()) }}
{% endmacro %}

{% macro default__cleared_cohorts() %}
  {%- set cleared = cohort_sync.cohort_id_list('cohort_sync_clear_cohorts') -%}
  {%- for cohort in cohort_sync.declared_cohorts() if cohort.cohort_id in cleared -%}
    {{ exceptions.raise_compiler_error("cohort_sync: cohort '" ~ cohort.cohort_id ~ "' is both declared in cohort_sync_cohorts and listed in cohort_sync_clear_cohorts; remove one of them") }}
  {%- endfor -%}
  {{ return(cleared) }}
{% endmacro %}


{# A list of strings as a SQL list of literals: ('a', 'b'). #}
{% macro literal_list(values) %}
  {{ return(adapter.dispatch('literal_list', 'cohort_sync')(values)) }}
{% endmacro %}

{% macro default__literal_list(values) -%}
  ({%- for value in values -%}{{ cohort_sync.quoted_literal(value) }}{{ ", " if not loop.last }}{%- endfor -%})
{%- endmacro %}
