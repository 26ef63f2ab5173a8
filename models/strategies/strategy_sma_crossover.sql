-- BUY when the fast SMA crosses above the slow one, SELL when it crosses below.
{{ strategy_model('sma_crossover') }}
