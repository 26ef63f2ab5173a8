{#
  The scale marts present numbers at, whatever pnl_method: one NUMERIC type per
  column and a fixed number of decimals (docs/positions.md, "Exactness, scale and idempotence"). Arithmetic
  inside the models stays exact; only a mart's output columns are rounded, half
  away from zero. Plain NUMERIC: RisingWave rejects NUMERIC(p,s).
    money    cash, P&L, fees, notionals, exposure: 6 decimals
    quantity quantities and positions: 8 decimals (fractional crypto units)
    price    prices and marks: 8 decimals
  The account book compares itself with the views at these scales (book_sync.MONEY_HALF_UNIT).
#}
{% macro money(expr) -%}round(cast({{ expr }} as numeric), 6){%- endmacro %}
{% macro quantity(expr) -%}round(cast({{ expr }} as numeric), 8){%- endmacro %}
{% macro price(expr) -%}round(cast({{ expr }} as numeric), 8){%- endmacro %}
