"""The `edgegw` command. `edgegw run` with its usual options goes straight to the agent
(gateway.agent_main) without loading the full command line (typer and every other command's
modules, ~2 MB of RSS kept all day by the service); everything else, and any `run` line this
does not recognise (``--help``, a typo), goes to gateway.cli, which answers as always."""

from __future__ import annotations

import sys
from pathlib import Path


def _run_options(args: list[str]) -> tuple[Path, int, bool] | None:
    """``run``'s options when they are exactly ones it knows (config, verbosity, sample
    logging); None for anything else."""
    if not args or args[0] != "run":
        return None
    config: str | None = None
    verbose, log_samples = 0, False
    rest = iter(args[1:])
    for arg in rest:
        if arg in ("--config", "-c"):
            config = next(rest, None)
            if config is None:
                return None
        elif arg.startswith("--config="):
            config = arg.removeprefix("--config=")
        elif arg == "--verbose" or (arg.startswith("-v") and set(arg[1:]) == {"v"}):
            verbose += 1 if arg == "--verbose" else len(arg) - 1
        elif arg in ("--log-samples", "--no-log-samples"):
            log_samples = arg == "--log-samples"
        else:
            return None
    if not config or config.startswith("-"):
        return None
    return Path(config), verbose, log_samples


def main() -> None:
    options = _run_options(sys.argv[1:])
    if options is None:
        from gateway.cli import main as cli_main

        cli_main()
        return
    from gateway.agent_main import run_agent

    config, verbose, log_samples = options
    sys.exit(run_agent(config, verbose=verbose, log_samples=log_samples))


if __name__ == "__main__":
    main()
