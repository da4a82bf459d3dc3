{#
  Warehouse facts about each customer who ever ordered, synced to their Braze
  profile as attributes (cohort_sync_attribute_syncs in dbt_project.yml):
  only the values that changed since Braze acknowledged them are sent.
#}
with

orders_so_far as (
    select *
    from {{ ref('orders') }}
    where ordered_on <= {{ demo_as_of() }}
),

per_customer as (
    select
        customer_id,
        count(*) as order_count,
        sum(amount) as lifetime_value,
        max(ordered_on) as last_order_on
    from orders_so_far
    group by customer_id
),

final as (
    select
        customers.external_id,
        per_customer.order_count,
        round(per_customer.lifetime_value, 2) as lifetime_value,
        per_customer.last_order_on,
        case
            when per_customer.lifetime_value >= 500 then 'gold'
            when per_customer.lifetime_value >= 200 then 'silver'
            else 'bronze'
        end as tier
    from per_customer
    inner join {{ ref('customers') }} as customers
        on customers.customer_id = per_customer.customer_id
    where customers.external_id is not null
)

select * from final
