-- BUY when RSI 14 climbs back above the lower threshold (leaving oversold),
-- SELL when it falls back below the upper one (leaving overbought).
{{ strategy_model('rsi_threshold') }}
