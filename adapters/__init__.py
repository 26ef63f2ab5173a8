"""Ports to the outside world: execution adapter, brokers and change feeds."""
