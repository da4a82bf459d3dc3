{# Anonymous app devices that added to cart in the last 7 days without a purchase (device_id). #}
with

recent_events as (
    select device_id, event_name
    from {{ ref('app_events') }}
    where occurred_at >= {{ dbt.dateadd('day', -6, demo_as_of()) }}
      and occurred_at < {{ dbt.dateadd('day', 1, demo_as_of()) }}
),

final as (
    select device_id
    from recent_events
    group by device_id
    having sum(case when event_name = 'add_to_cart' then 1 else 0 end) > 0
       and sum(case when event_name = 'purchase' then 1 else 0 end) = 0
)

select * from final
