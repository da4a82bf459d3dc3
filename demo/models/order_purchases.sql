{#
  Every order as a Braze purchase (cohort_sync_event_syncs in
  dbt_project.yml). Each is sent once, by its event_id; an order entered
  late within the lookback window is still sent, once.
#}
with

orders_so_far as (
    select *
    from {{ ref('orders') }}
    where ordered_on <= {{ demo_as_of() }}
),

final as (
    select
        {{ dbt.concat(["'order-'", "cast(orders_so_far.order_id as " ~ dbt.type_string() ~ ")"]) }} as event_id,
        customers.external_id,
        cast(orders_so_far.ordered_on as {{ dbt.type_timestamp() }}) as ordered_at,
        case when orders_so_far.amount >= 150 then 'bundle' else 'single' end as product_id,
        'USD' as currency,
        orders_so_far.amount as price,
        orders_so_far.order_id
    from orders_so_far
    inner join {{ ref('customers') }} as customers
        on customers.customer_id = orders_so_far.customer_id
    where customers.external_id is not null
)

select * from final
