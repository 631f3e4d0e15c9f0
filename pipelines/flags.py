"""Command-line flags of a pipeline: help, strict parsing, value checks. Beam-free checks.

Beam's own PipelineOptions parsing warns about a flag it does not know and goes on, so a
typo (`--layuot`) runs with the default. Here every flag is checked before any work: ours
(the pipeline's option classes) and Beam's (every PipelineOptions subclass Beam registers),
anything else is refused with the closest known flag.
"""

from __future__ import annotations

import argparse
import difflib
import sys

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
BEAM_HELP = "--help_beam"


class UsageError(SystemExit):
    """A flag or value the user must change: exit status 2, one line on stderr."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def require_at_least(bounds) -> None:
    """UsageError for the first (flag, value, least) whose value is below its least."""
    for flag, value, least in bounds:
        if value < least:
            raise UsageError(f"--{flag} must be at least {least}, got {value}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage and exit; we want one line
        raise UsageError(message)


def _beam_parser() -> argparse.ArgumentParser:
    """Every flag of Beam's registered PipelineOptions subclasses (not a hand-made list)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    class Parser(_BeamArgumentParser):
        def error(self, message):
            raise UsageError(message)

    parser = Parser(prog="beam", add_help=False, allow_abbrev=False, conflict_handler="resolve")
    # An options class is registered when its module is imported, and Beam does not import
    # its Dask runner's (--dask_client_address, ...) until that runner runs.
    try:
        import apache_beam.runners.dask.dask_runner  # noqa: F401
    except ImportError:  # dask not installed: its flags are refused as unknown
        pass
    seen = {}
    for cls in PipelineOptions.__subclasses__():
        if cls.__module__.startswith("apache_beam"):
            seen.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)
    return parser


def _with_defaults(parser: argparse.ArgumentParser) -> None:
    """Help lines that end with the default, for every flag that has one."""
    for action in parser._actions:
        default = action.default
        # `is`, not `in`: 0 == False, and a default of 0 (--seed) is worth showing.
        if any(default is v for v in (None, False, argparse.SUPPRESS)) or default == "":
            continue
        if not action.option_strings:
            continue
        action.help = f"{action.help or ''} (default: {default})".strip()


def _is_help(argv: list[str], flags: tuple[str, ...]) -> bool:
    head = argv[: argv.index("--")] if "--" in argv else argv
    return any(a in flags for a in head)


def _unknown_message(arg: str, ours: list[str], beam: list[str], foreign: dict) -> str:
    name = arg.split("=", 1)[0]
    if not name.startswith("-"):
        return f"unexpected argument {arg!r} (every value follows its --flag)"
    if name in foreign:
        return f"{name} is a flag of {foreign[name]}, not of this pipeline"
    close = difflib.get_close_matches(name, ours, n=1) or difflib.get_close_matches(name, beam, n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; see --help (and {BEAM_HELP})"
    return f"unrecognized flag {name}{hint}"


def parse(
    pipeline: str,
    argv: list[str],
    add_flags,
    beam: bool = True,
    foreign: dict[str, str] | None = None,
    description: str = "",
    signed: frozenset[str] = frozenset(),
) -> argparse.Namespace:
    """Check argv against the pipeline's flags (and Beam's); the namespace of ours.

    `add_flags(parser)` adds the pipeline's own flags. --help prints ours, --help_beam Beam's;
    both exit 0. Unknown flags, bad values and negative numbers raise UsageError.
    `foreign` maps flags of the other pipelines to their names, for a clearer refusal;
    `signed` names the numeric flags that may be negative (their stage checks the range).
    """
    prog = f"biomedica {pipeline}"
    ours = _Parser(
        prog=prog,
        description=description,
        add_help=False,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Beam pipeline flags (--runner, --project, --region, --temp_location,\n"
            "--direct_running_mode, --direct_num_workers, --s3_endpoint_url, ...) are accepted\n"
            f"too; list them with {BEAM_HELP}."
            if beam
            else None
        ),
    )
    add_flags(ours)
    ours.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    if beam:
        ours.add_argument(BEAM_HELP, action="store_true", help="list Beam's own flags and exit")
    _with_defaults(ours)
    if _is_help(argv, ("-h", "--help")):
        sys.stdout.write(ours.format_help())
        raise SystemExit(0)
    beam_parser = _beam_parser() if beam else None
    if beam and _is_help(argv, (BEAM_HELP,)):
        beam_parser.prog = f"{prog} [flags]"
        beam_parser.usage = f"{prog} [flags] [Beam flags]"
        sys.stdout.write(beam_parser.format_help())
        raise SystemExit(0)
    known, rest = ours.parse_known_args(argv)
    if beam_parser is not None:
        _, rest = beam_parser.parse_known_args(rest)
    if rest:
        flags_of = [o for a in ours._actions for o in a.option_strings]
        beam_flags = [o for a in beam_parser._actions for o in a.option_strings] if beam else []
        bad = next((r for r in rest if r.startswith("-")), rest[0])
        raise UsageError(_unknown_message(bad, flags_of, beam_flags, foreign or {}))
    for action in ours._actions:
        value = getattr(known, action.dest, None)
        if action.type in (int, float) and value is not None and value < 0:
            if signed & set(action.option_strings):
                continue
            raise UsageError(f"{action.option_strings[-1]} must not be negative, not {value}")
    return known


def log_level(argv: list[str]) -> str:
    """--log_level from argv before the full parse (the value is checked there)."""
    for i, arg in enumerate(argv):
        if arg == "--log_level" and i + 1 < len(argv):
            return argv[i + 1].upper()
        if arg.startswith("--log_level="):
            return arg.split("=", 1)[1].upper()
    return "WARNING"


def add_log_level(parser) -> None:
    parser.add_argument(
        "--log_level",
        default="WARNING",
        type=str.upper,
        choices=LOG_LEVELS,
        help="DEBUG shows tracebacks, ERROR hides progress and warnings",
    )
