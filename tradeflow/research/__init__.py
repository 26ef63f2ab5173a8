"""Backtests, performance metrics and reports over the same gate, broker and views as the live loop."""
