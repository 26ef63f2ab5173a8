"""The gate and its state and rules: routing, sizing, pre-trade risk, accounts, policy, orders."""
