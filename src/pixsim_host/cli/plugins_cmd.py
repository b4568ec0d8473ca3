"""``plugins list | show | enable | disable | install | remove``: this host's plugin set."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixsim_host.cli.common import (
    DirOption,
    JsonOption,
    NoWaitOption,
    complete_plugin_ids,
    finish_interrupted_for_status,
    locked_host,
    open_host,
    seconds,
)
from pixsim_host.cli.output import Progress, emit, info, iso_time, table, warn, yes_no

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig
    from pixsim_host.hostdir import HostDir
    from pixsim_host.plugin_change import PluginChangeRun
    from pixsim_host.plugins import Catalog

app = typer.Typer(help="List, enable, disable, install and remove this host's plugins.",
                  no_args_is_help=True, rich_markup_mode="rich")

NoRestart = Annotated[
    bool, typer.Option("--no-restart", help="Only record the choice; it applies at the next `up`.")
]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for the backend after a restart "
                                             "(and again for a rollback).", callback=seconds)]
# A plugin change restarts the backend and its workers, and a failed one restarts them again
# to roll back: PixSim7 takes 13-42 s to start, far more on a loaded machine.
PLUGIN_CHANGE_TIMEOUT = 300.0
PluginIds = Annotated[list[str], typer.Argument(metavar="ID...", help="Plugin ids (`plugins list`).",
                                                autocompletion=complete_plugin_ids)]
PluginId = Annotated[str, typer.Argument(metavar="ID", help="A plugin id (`plugins list`).",
                                         autocompletion=complete_plugin_ids)]


def _open_for_listing(directory: Path | None) -> tuple[HostDir, HostConfig]:
    """The host and its config, after what an interrupted plugin change left was rolled
    back or finished (when no other command holds the host)."""
    host, config = open_host(directory)
    if finish_interrupted_for_status(host):
        from pixsim_host.config import load_config

        config = load_config(host.config_file)
    return host, config


def _catalog(host: HostDir, config: HostConfig) -> Catalog:
    """The live catalog when the backend runs, else the last one saved, saying so."""
    from pixsim_host.errors import HostError
    from pixsim_host.plugins import (
        PluginListUnavailable,
        fetch_catalog,
        load_catalog,
        save_catalog,
        with_installed,
    )

    try:
        catalog = with_installed(fetch_catalog(config.local_url, list(config.plugins.disabled)),
                                 host, config)
    except HostError as exc:
        unlisted = isinstance(exc, PluginListUnavailable)
        saved = load_catalog(host)
        if saved is None:
            raise HostError(
                f"{exc.message}; and no catalog was saved before" if unlisted else
                "this host has never been up, so its plugin catalog is unknown; "
                "run `pixsim-host up` once"
            ) from None
        import time

        age = time.strftime("%Y-%m-%d %H:%M", time.localtime(saved.taken_at))
        if unlisted:
            warn(f"the backend answers but serves no plugin list (its admin_plugins plugin is "
                 f"disabled); using the catalog saved at {age} and the manifests")
            saved.listed = False
        else:
            warn(f"the backend is not answering; showing the catalog saved at {age}")
        return with_installed(saved, host, config)
    save_catalog(host, catalog)
    return catalog


@app.command("list")
def list_(directory: DirOption = None, as_json: JsonOption = False) -> None:
    """Every plugin the backend knows, whether this host enables it and whether it loaded.

    Examples:
      pixsim-host plugins list --dir my-host
      pixsim-host plugins list --host my-host --json
    """
    host, config = _open_for_listing(directory)
    catalog = _catalog(host, config)
    rows = []
    for plugin in sorted(catalog.plugins.values(), key=lambda p: p.id):
        configured = (
            "enabled" if plugin.id in config.plugins.enabled
            else "disabled" if plugin.id in config.plugins.disabled
            else "default"
        )
        rows.append({
            **plugin.as_json(),
            "config": configured,
            "loaded": plugin.enabled if catalog.live else None,
        })
    if emit({"live": catalog.live, "taken_at": iso_time(catalog.taken_at), "plugins": rows}):
        return
    lines = []
    for row in rows:
        loaded = "FAILED" if row["error"] else yes_no(row["loaded"])
        lines.append((row["id"], row["version"], row["kind"] or "-", row["config"], loaded,
                      ", ".join(row["dependencies"]) or "-"))
    table(("ID", "VERSION", "KIND", "CONFIG", "LOADED", "DEPENDS ON"), lines)
    if not catalog.live:
        info("(the backend is down: LOADED is unknown; this is the last catalog seen)")


@app.command("show")
def show(plugin_id: PluginId, directory: DirOption = None, as_json: JsonOption = False) -> None:
    """One plugin's details: version, source, dependencies, and what depends on it.

    Examples:
      pixsim-host plugins show romance --dir my-host
    """
    host, config = _open_for_listing(directory)
    catalog = _catalog(host, config)
    plugin = catalog.get(plugin_id)
    plugin_id = plugin.id
    data = {
        **plugin.as_json(),
        "required_by": sorted(catalog.dependents(plugin_id)),
        "needs": sorted(catalog.requirements(plugin_id)),
        "installed_in_host_dir": plugin.source == "external" and plugin.folder is not None,
        "live": catalog.live,
    }
    if emit(data):
        return
    for key, value in data.items():
        text = ", ".join(value) if isinstance(value, list) else yes_no(value) if isinstance(value, bool) \
            else value
        info(f"{key:22} {text if text not in ('', None) else '-'}")


@app.command("enable")
def enable(
    ids: PluginIds,
    directory: DirOption = None, no_restart: NoRestart = False, timeout: Timeout = PLUGIN_CHANGE_TIMEOUT,
    no_wait: NoWaitOption = False, as_json: JsonOption = False,
) -> None:
    """Enable plugins (and what they depend on), restart the backend and verify them.

    Examples:
      pixsim-host plugins enable romance --dir my-host
      pixsim-host plugins enable romance game_stealth --no-restart --host my-host
    """
    from pixsim_host.plugins import plan_enable

    with locked_host(directory, no_wait=no_wait, command="plugins enable") as (host, config):
        catalog = _catalog(host, config)
        change = plan_enable(config, catalog, ids)
        if change.also:
            info(f"Also enabling {', '.join(change.also)} (required by {', '.join(ids)}).")
        applied = _apply(_run(host, config, f"plugins enable {' '.join(ids)}"), change.enabled,
                         change.disabled, no_restart, timeout)
    if not emit({"enabled": list(ids), "also": change.also, **applied}):
        info(f"Enabled {', '.join(ids)}.")


@app.command("disable")
def disable(
    ids: PluginIds,
    directory: DirOption = None,
    cascade: Annotated[bool, typer.Option("--cascade", help="Also disable what depends on them.")] = False,
    no_restart: NoRestart = False, timeout: Timeout = PLUGIN_CHANGE_TIMEOUT,
    no_wait: NoWaitOption = False, as_json: JsonOption = False,
) -> None:
    """Disable plugins, restart the backend and verify.

    Examples:
      pixsim-host plugins disable game_stealth --dir my-host
    """
    from pixsim_host.plugins import plan_disable

    with locked_host(directory, no_wait=no_wait, command="plugins disable") as (host, config):
        catalog = _catalog(host, config)
        change = plan_disable(config, catalog, ids, cascade)
        if change.also:
            info(f"Also disabling {', '.join(change.also)} (they depend on {', '.join(ids)}).")
        applied = _apply(_run(host, config, f"plugins disable {' '.join(ids)}"), change.enabled,
                         change.disabled, no_restart, timeout)
    if not emit({"disabled": list(ids), "also": change.also, **applied}):
        info(f"Disabled {', '.join(ids)}.")


def _run(host: HostDir, config: HostConfig, command: str) -> PluginChangeRun:
    """A journaled plugin change, begun: from here on an interrupt is undone or finished."""
    from pixsim_host.plugin_change import PluginChangeRun

    run = PluginChangeRun(host, config, command)
    run.begin()
    return run


def _apply(run: PluginChangeRun, enabled: list[str], disabled: list[str],
           no_restart: bool, timeout: float) -> dict[str, Any]:
    """Save the new plugin set and apply it; the document fields saying what happened."""
    from pixsim_host.config import parse_config

    data = run.old.model_dump(mode="json")
    data["plugins"] = {"enabled": enabled, "disabled": disabled}
    try:
        new = parse_config(data, source="the new plugin set")
    except BaseException:
        run.abandon()
        raise
    if no_restart:
        run.apply(new, restart=False, timeout=timeout, progress=lambda _service, _line: None)
        info("Recorded; it applies at the next `pixsim-host up`.")
        return {"applied": False, "restarted": False, "plugins_enabled": None}
    with Progress(f"Applying plugins to {run.old.name}") as progress:
        report = run.apply(new, restart=True, timeout=timeout, progress=progress)
    if report is None:
        info("The host is not running; the change applies at the next `pixsim-host up`.")
        return {"applied": False, "restarted": False, "plugins_enabled": None}
    for note in report.notes:  # e.g. the backend serves no plugin list (admin_plugins disabled)
        warn(note)
    info(f"Backend restarted and verified; enabled plugins: {', '.join(report.plugins) or 'none'}.")
    return {"applied": True, "restarted": True, "plugins_enabled": report.plugins}


@app.command("install")
def install(
    source: Annotated[Path, typer.Argument(help="A plugin folder, .tar.gz or .zip.")],
    directory: DirOption = None, no_restart: NoRestart = False, timeout: Timeout = PLUGIN_CHANGE_TIMEOUT,
    no_wait: NoWaitOption = False, as_json: JsonOption = False,
) -> None:
    """Install an external plugin package into this host and load it.

    The package's code runs only inside the backend, never in pixsim-host.

    Examples:
      pixsim-host plugins install ./hello_external --dir my-host
      pixsim-host plugins install hello.tar.gz --host my-host
    """
    from pixsim_host import stack
    from pixsim_host.errors import HostError
    from pixsim_host.journal import terminate_as_interrupt
    from pixsim_host.plugins import install_package, trap_problems, with_installed

    with locked_host(directory, no_wait=no_wait, command="plugins install") as (host, config):
        stack.require_host_plugins(config)
        try:
            before = _catalog(host, config)
        except HostError:
            before = None  # never up: the collision check has only the packages on disk
        run = _run(host, config, f"plugins install {source}")
        try:
            with terminate_as_interrupt():
                package = install_package(host, source, config=config,
                                          known=before.plugins if before else (),
                                          on_place=run.installing)
                name = package.id
                assert name is not None
                catalog = with_installed(before, host, config) if before else _catalog(host, config)
                needs = catalog.requirements(name)
                missing = sorted(d for d in needs if d not in catalog.plugins)
                if missing:
                    raise HostError(f"{name} needs {', '.join(missing)}, which this host does not "
                                    "have; install those first")
                revived = sorted(needs & set(config.plugins.disabled))
                disabled = sorted(set(config.plugins.disabled) - needs)
                problems = trap_problems(catalog, set(disabled))
                if problems:
                    raise HostError(f"installing {name} would abort the backend's start-up "
                                    f"({'; '.join(problems)}); nothing was installed")
        except KeyboardInterrupt:
            run.abandon()
            raise HostError("interrupted: nothing was installed", exit_code=130) from None
        except BaseException:
            run.abandon()
            raise
        info(f"Installed {name} into {package.folder}.")
        if revived:
            info(f"Also enabling {', '.join(revived)} (required by {name}).")
        enabled = sorted(set(config.plugins.enabled) | set(revived))
        applied = _apply(run, enabled, disabled, no_restart, timeout)
    emit({"installed": name, "folder": str(package.folder), "also": revived, **applied})


@app.command("remove")
def remove(
    plugin_id: PluginId,
    directory: DirOption = None, no_restart: NoRestart = False, timeout: Timeout = PLUGIN_CHANGE_TIMEOUT,
    no_wait: NoWaitOption = False, as_json: JsonOption = False,
) -> None:
    """Disable and delete an installed external plugin (built-in plugins can only be disabled).

    Examples:
      pixsim-host plugins remove hello_external --dir my-host
    """
    from pixsim_host import stack
    from pixsim_host.errors import HostError
    from pixsim_host.plugins import installed_package, load_catalog, with_installed

    with locked_host(directory, no_wait=no_wait, command="plugins remove") as (host, config):
        stack.require_host_plugins(config)
        package = installed_package(host, plugin_id)
        saved = load_catalog(host)
        catalog = with_installed(saved, host, config) if saved else None
        dependents = sorted(catalog.dependents(plugin_id)) if catalog else []
        if dependents:
            # Disabling them would not do: PixSim7 aborts when an installed plugin, even a
            # disabled one, depends on a missing plugin.
            raise HostError(f"cannot remove {plugin_id}: {', '.join(dependents)} depend on it; "
                            f"remove those first (`pixsim-host plugins remove {dependents[0]}`)")
        run = _run(host, config, f"plugins remove {plugin_id}")
        try:
            run.park(package.folder)  # deleted once the change is verified
        except BaseException:
            run.abandon()
            raise
        enabled = [p for p in config.plugins.enabled if p != plugin_id]
        disabled = [p for p in config.plugins.disabled if p != plugin_id]
        applied = _apply(run, enabled, disabled, no_restart, timeout)
    if not emit({"removed": plugin_id, **applied}):
        info(f"Removed {plugin_id}.")
