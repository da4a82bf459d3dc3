{#
  Every row of every declared audience, normalised and classified: which
  identifier the row is sent under, its member key, or why it cannot be
  sent. Membership and rejects both read from here.

  Rules (README, "Audience contract"):
  - identifiers are cast to strings and trimmed of surrounding whitespace
    (every Unicode White_Space character: macros/trim_whitespace.sql);
    empty after trimming = absent; emails are lowercased; phone numbers
    lose spaces, hyphens, dots and parentheses and must then be E.164
    (+ and 2 to 15 digits, the first not 0);
  - precedence: external_id, then alias (alias_name and alias_label both
    present), then braze_id, email, phone, device_id, skipping those the
    cohort's delivery cannot address (the partner cohort import takes
    external ids, aliases and device ids; /users/track every one but
    device ids); the other identifiers of the row are not sent;
  - a row with no identifier its delivery can address, a malformed email
    or phone, or a chosen identifier longer than
    var('cohort_sync_max_identifier_length') is rejected with a reason.
#}
{%- set cohorts = cohort_sync.declared_cohorts() -%}
{%- set string = dbt.type_string() -%}
{%- set identifiers = cohort_sync.identifier_columns() -%}

with

raw_rows as (
    {%- for cohort in cohorts %}
    {{ cohort_sync.audience_rows(cohort) }}
    {% if not loop.last %}union all{% endif %}
    {%- else %}
    select
        cast(null as {{ string }}) as cohort_id,
        cast(null as {{ string }}) as delivery,
        cast(null as {{ string }}) as attribute_name,
        {%- for name in identifiers %}
        cast(null as {{ string }}) as raw_{{ name }}{{ "," if not loop.last }}
        {%- endfor %}
    where 1 = 0
    {%- endfor %}
),

{{ cohort_sync.identify_ctes('raw_rows') }}

select * from identified
