{# Registered customers who bought at least twice but not in the last 90 days (external_id). #}
with

orders as (
    select customer_id, ordered_on
    from {{ ref('orders') }}
    where ordered_on <= {{ demo_as_of() }}
),

per_customer as (
    select
        customer_id,
        count(*) as orders,
        max(ordered_on) as last_ordered_on
    from orders
    group by customer_id
),

final as (
    select
        customers.external_id,
        per_customer.orders,
        per_customer.last_ordered_on
    from per_customer
    inner join {{ ref('customers') }} as customers
        on customers.customer_id = per_customer.customer_id
    where per_customer.orders >= 2
      and per_customer.last_ordered_on < {{ dbt.dateadd('day', -90, demo_as_of()) }}
)

select * from final
