{#
  Customers who ordered in the 30 days up to the demo date: delivered as the
  profile attribute `recent_buyer` through /users/track. A guest checkout
  (no external_id) is addressed by its email.
#}
with

recent_orders as (
    select distinct customer_id
    from {{ ref('orders') }}
    where ordered_on <= {{ demo_as_of() }}
      and ordered_on > {{ dbt.dateadd('day', -30, demo_as_of()) }}
),

final as (
    select
        customers.external_id,
        customers.email
    from recent_orders
    inner join {{ ref('customers') }} as customers
        on customers.customer_id = recent_orders.customer_id
)

select * from final
