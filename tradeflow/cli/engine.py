"""`tradeflow engine ...`, `deploy` and `dbt`: the engine and the models on it."""
from __future__ import annotations

import typer

from tradeflow import engine as engine_mod
from tradeflow.cli._common import _settings, console

engine_app = typer.Typer(no_args_is_help=True, help="The embedded PostgreSQL engine.")


@engine_app.command("start")
def engine_start() -> None:
    """Start the embedded server (harmless if it is running)."""
    info = engine_mod.embedded(_settings()).start()
    console.print(f"running pid={info.pid} url={info.url()}")


@engine_app.command("stop")
def engine_stop() -> None:
    stopped = engine_mod.embedded(_settings()).stop()
    console.print("stopped" if stopped else "not running")


@engine_app.command("status")
def engine_status() -> None:
    info = engine_mod.embedded(_settings()).status()
    if info is None:
        console.print("not running")
        raise typer.Exit(3)
    console.print(f"running pid={info.pid} port={info.port} socket={info.socket_dir}")


@engine_app.command("url")
def engine_url() -> None:
    """Print the connection URL for psql and BI tools (starts the engine if needed)."""
    print(engine_mod.embedded(_settings()).start().url())


@engine_app.command("env")
def engine_env() -> None:
    """Print `export` lines so plain `dbt` and `psql` reach the embedded engine."""
    settings = _settings()
    for key, value in engine_mod.dbt_env(settings).items():
        print(f"export {key}={value}")
    info = engine_mod.embedded(settings).start()
    print(f"export PGHOST=127.0.0.1 PGPORT={info.port} PGUSER=postgres PGDATABASE={info.database}")


@engine_app.command("roles")
def engine_roles() -> None:
    """Create or converge the least-privilege roles (ingester, gate, adapter, operator, reader).
    Re-run after every deploy: dbt replaces the views and their grants with them."""
    from tradeflow.ops import roles

    settings = _settings()
    if settings.target != "embedded":
        console.print(f"run deploy/roles/{settings.target}.sql with psql against {settings.target} (docs/security.md)")
        raise typer.Exit(2)
    with engine_mod.connect(settings) as conn:
        try:
            results = roles.create_roles(conn, settings.schema)
        except (roles.RolesError, roles.CredentialsError) as err:
            console.print(f"[red]{err}[/]")
            raise typer.Exit(2)
    for role, outcome in results.items():
        console.print(f"{role}: {outcome}")


def deploy(
    full_refresh: bool = typer.Option(False, help="Rebuild materialized views (streaming targets)."),
    replay: bool = typer.Option(False, help="Historical data: no wall-clock temporal filters on the views."),
) -> None:
    """Create raw tables and UDFs, then build every dbt model on the target."""
    from tradeflow.dbt import run_dbt

    args = ["run"] + (["--full-refresh"] if full_refresh else [])
    run_dbt(_settings(), args, vars={"temporal_filter": False} if replay else None)
    console.print(f"deployed to {_settings().target}")


def dbt(ctx: typer.Context) -> None:
    """Run any dbt command against the configured target, e.g. `tradeflow dbt test`."""
    from tradeflow.dbt import DbtError, run_dbt

    try:
        run_dbt(_settings(), list(ctx.args), quiet=False)
    except DbtError as err:
        console.print(str(err))
        raise typer.Exit(1)

