{# CRM leads (known to Braze by a user alias) with a high score and activity in the last 30 days. #}
with

final as (
    select
        lead_id as alias_name,
        alias_label,
        lead_score,
        last_activity_on
    from {{ ref('crm_leads') }}
    where lead_score >= 70
      and last_activity_on <= {{ demo_as_of() }}
      and last_activity_on > {{ dbt.dateadd('day', -30, demo_as_of()) }}
)

select * from final
