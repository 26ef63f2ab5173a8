"""`tradeflow engine ...`, `deploy` and `dbt`: the engine and the models on it."""
from __future__ import annotations

import shlex

import typer

from tradeflow import engine as engine_mod
from tradeflow.cli._common import _settings, console, group

engine_app = group("The embedded PostgreSQL engine.")


@engine_app.command("start")
def engine_start() -> None:
    """Start the embedded server (harmless if it is running)."""
    settings = _settings()
    info = engine_mod.embedded(settings).start()
    console.print(f"running pid={info.pid} url={info.url(schema=settings.schema)}")


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


def _embedded_only(command: str) -> None:
    settings = _settings()
    if settings.target != "embedded":
        typer.echo(f"error: `engine {command}` is for the embedded engine; TRADEFLOW_TARGET={settings.target}"
                   f" (connect as docs/deploy.md shows)", err=True)
        raise typer.Exit(2)


@engine_app.command("url")
def engine_url() -> None:
    """Print the connection URL for psql and BI tools, with the deployed schema on its
    search_path (starts the engine if it is down)."""
    _embedded_only("url")
    settings = _settings()
    print(engine_mod.embedded(settings).start().url(schema=settings.schema))


@engine_app.command("env")
def engine_env() -> None:
    """Print `export` lines so plain `dbt` and `psql` reach the embedded engine."""
    _embedded_only("env")
    settings = _settings()
    for key, value in engine_mod.dbt_env(settings).items():
        print(f"export {key}={value}")
    info = engine_mod.embedded(settings).start()
    options = shlex.quote(f"-c search_path={settings.schema},public")
    print(f"export PGHOST=127.0.0.1 PGPORT={info.port} PGUSER=postgres PGDATABASE={info.database}"
          f" PGOPTIONS={options}")


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
            engine_mod.publish_search_path(conn, settings)
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
    settings = _settings()
    run_dbt(settings, args, vars={"temporal_filter": False} if replay else None)
    with engine_mod.connect(settings) as conn:
        engine_mod.publish_search_path(conn, settings)
    console.print(f"deployed to {settings.target} (schema {settings.schema}, the database's default search_path)")


def dbt(ctx: typer.Context) -> None:
    """Run any dbt command against the configured target, e.g. `tradeflow dbt test`."""
    from tradeflow.dbt import DbtError, run_dbt

    try:
        run_dbt(_settings(), list(ctx.args), quiet=False)
    except DbtError as err:
        console.print(str(err))
        raise typer.Exit(1)

