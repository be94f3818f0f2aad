"""What every command shares: the one error style, user-error handling and config building.

One error style: user mistakes (``GwnmoError``) and usage errors (a bad option value, a missing
argument, an unknown option) print one ``error: ...`` line on stderr and exit with code 2.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from gwnmo_meta import registry
from gwnmo_meta.config import RunConfig

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Config = TypeVar("Config", bound="DataclassInstance")


class OneLineErrors(TyperGroup):
    """Typer's group, with usage errors printed as one ``error:`` line (exit 2) instead of a panel."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except Exception as exc:  # click's exceptions, vendored by typer: duck-typed
            if not hasattr(exc, "format_message") or not hasattr(exc, "exit_code"):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `gwnmo-meta`: the help, as click
                typer.echo(exc.format_message(), err=True)
                sys.exit(exc.exit_code)
            message = exc.format_message().replace(": Value error, ", ": ")  # typer's choice check
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


class Command(TyperCommand):
    """Typer's command, with ``--help`` in the last help panel when every option has a panel."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        options = [p for p in self.params if p.param_type_name == "option"]
        panels = [getattr(p, "rich_help_panel", None) for p in options]
        if option is not None and panels and all(panels):
            option.rich_help_panel = panels[-1]
        return option


def fail(message: str, code: int = 2) -> None:
    """Print one error line to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _rank_prefix() -> str | None:
    """Under torchrun: ``None`` on ranks > 0 before they joined the process group (the error came
    from the command line, every rank has it and rank 0 prints it), else ``"rank N: "``."""
    rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
    if rank == "0":
        return ""
    dist = sys.modules.get("gwnmo_meta.training.distributed")
    return f"rank {rank}: " if dist is not None and dist.world().active else None


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn gwnmo-meta's user errors into one line + exit 2 (no traceback); a lost rank: exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from gwnmo_meta.errors import GwnmoError
        from gwnmo_meta.io.interrupts import Interrupts, exit_code

        try:
            with Interrupts():  # SIGTERM, like SIGINT, unwinds: exit 143 (130 for SIGINT)
                return fn(*args, **kwargs)
        except GwnmoError as exc:
            code = getattr(exc, "exit_code", 2)
            prefix = _rank_prefix()
            if prefix is None:
                raise typer.Exit(code) from None
            fail(prefix + str(exc), code)
        except KeyboardInterrupt as exc:
            fail("interrupted", exit_code(exc))
        except Exception as exc:
            dist = sys.modules.get("gwnmo_meta.training.distributed")
            if dist is None or not isinstance(exc, dist.RankFailure):
                raise
            fail(str(exc), 1)  # another rank died or stopped answering

    return wrapper


def progress_bars(quiet: bool) -> bool:
    """Whether to draw progress bars: not with ``--quiet``, and only onto a terminal."""
    return not quiet and sys.stderr.isatty()


def value(choice: Enum | None) -> Any:
    """The string behind a choice (``None`` stays ``None``)."""
    return None if choice is None else choice.value


def plain(item: Any) -> Any:
    """An option's value as a config field holds it: a choice's string, a path's text."""
    if isinstance(item, Enum):
        return item.value
    return str(item) if isinstance(item, Path) else item


def field_defaults(cls: type[DataclassInstance]) -> SimpleNamespace:
    """The declared default of every field of the dataclass ``cls``, as attributes.

    The commands' option defaults read these, so each default is declared once, in the config.
    """
    return SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(cls)})


RUN = field_defaults(RunConfig)  # meta-train's, evaluate --method's and splits' defaults


def config_from(
    cls: type[Config],
    params: Mapping[str, Any],
    names: Iterable[str] | None = None,
    **overrides: Any,
) -> Config:
    """A config built from a command's parameters: every field of ``cls`` the command has.

    Args:
        cls: the config dataclass (``RunConfig``, ``ClassicConfig``).
        params: the command's parameters (``ctx.params``), keyed by field name.
        names: only these fields (default: every field in ``params``).
        **overrides: fields set here instead.

    Returns:
        The config; an option left unset (``None``) takes the field's declared default.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    chosen = fields & set(params if names is None else names)
    given_ = {k: plain(params[k]) for k in chosen if params[k] is not None}
    return cls(**{**given_, **overrides})


def out_folder(text: str | Path) -> Path:
    """``--out``'s parser: an empty name (it would mean the current folder) is a usage error."""
    if str(text) == "":
        raise typer.BadParameter("is empty; name a folder (. for the current one)")
    return Path(text)


def check_device(name: str) -> str:
    """``--device``'s callback: a registered device (a usage error otherwise)."""
    from gwnmo_meta.errors import ConfigError

    try:
        return registry.check_device(name)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def csv_list(text: str | None, cast: Callable[[str], Any] = str) -> tuple | None:
    """A comma list option (``mnist,fmnist``) as a tuple; ``None`` stays ``None``."""
    from gwnmo_meta.errors import ConfigError

    if text is None:
        return None
    try:
        items = tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"cannot parse list {text!r}") from None
    if not items:
        raise ConfigError(f"empty list {text!r}")
    return items


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the user gave option ``name`` (on the command line or through the environment)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def relaunch(ctx: typer.Context, path: Path, flags: RunConfig) -> RunConfig:
    """The run configuration saved in ``path``, with the options the user gave overriding it.

    Args:
        ctx: the command's context (which options were given explicitly).
        path: a RUN_DIR/config.json written by meta-train.
        flags: the configuration built from the command's options (defaults included).

    Returns:
        The saved configuration, updated with every explicitly given option.
    """
    from gwnmo_meta.errors import ConfigError

    saved = RunConfig.load(path)
    explicit = {k: v for k, v in flags.to_dict().items() if given(ctx, k)}
    cfg = saved.replace(**explicit)
    if "schedule" in explicit and not registry.METHODS.check(cfg.method).learned_optimizer:
        raise ConfigError(f"--schedule does not apply to the run's method {cfg.method}")
    return cfg
