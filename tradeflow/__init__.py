"""tradeflow core: configuration, engine connection, the embedded server and the CLI."""
