-- Rate of change over `lookback` bars: BUY when it rises through +threshold,
-- SELL when it falls through -threshold.
{{ strategy_model('momentum') }}
