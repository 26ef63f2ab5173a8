-- BUY on the N-th consecutive green candle (close > open), SELL on the N-th
-- consecutive red one. Fires once per run, not on every bar after.
{{ strategy_model('green_candles') }}
