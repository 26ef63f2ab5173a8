from tradeflow.cli import app

app()
