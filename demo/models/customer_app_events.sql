{#
  App events of known customers, as Braze custom events
  (cohort_sync_event_syncs in dbt_project.yml): a sign-up, and each order
  as Braze's recommended e-commerce event ecommerce.order_placed.
#}
with

signups as (
    select
        {{ dbt.concat(["'signup-'", "external_id"]) }} as event_id,
        external_id,
        'signed_up' as event_name,
        cast(signed_up_on as {{ dbt.type_timestamp() }}) as occurred_at,
        cast(null as {{ dbt.type_int() }}) as order_id,
        cast(null as {{ dbt.type_float() }}) as total
    from {{ ref('customers') }}
    where external_id is not null
        and signed_up_on <= {{ demo_as_of() }}
),

orders_placed as (
    select
        {{ dbt.concat(["'placed-'", "cast(orders.order_id as " ~ dbt.type_string() ~ ")"]) }} as event_id,
        customers.external_id,
        'ecommerce.order_placed' as event_name,
        cast(orders.ordered_on as {{ dbt.type_timestamp() }}) as occurred_at,
        orders.order_id,
        orders.amount as total
    from {{ ref('orders') }} as orders
    inner join {{ ref('customers') }} as customers
        on customers.customer_id = orders.customer_id
    where customers.external_id is not null
        and orders.ordered_on <= {{ demo_as_of() }}
),

final as (
    select * from signups
    union all
    select * from orders_placed
)

select * from final
