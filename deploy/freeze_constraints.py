"""Print deploy/constraints.txt: the installed versions of everything edgegw needs at run time
(its dependencies, the `demo` and `web` extras', and theirs), from the environment it runs in."""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement

HEADER = """\
# The versions edgegw was tested with (make test on Debian 12, Python 3.11): install.sh and
# upgrade.sh install with `pip install -c` this file, so two cabinets installed a month apart run
# the same code. Regenerate when a dependency is upgraded on purpose, after `make test` passed:
#   .venv/bin/python deploy/freeze_constraints.py > deploy/constraints.txt"""
SKIP = {"edgegw", "setuptools", "pip", "wheel"}     # build tools: pip chooses them


def closure(name: str, extras: tuple[str, ...], seen: dict[str, str]) -> None:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return
    key = dist.metadata["Name"].lower().replace("_", "-")
    if key in seen:
        return
    seen[key] = dist.version
    for raw in dist.requires or []:
        req = Requirement(raw)
        if req.marker is not None and not any(
                req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            continue
        closure(req.name, tuple(req.extras), seen)


def main() -> int:
    seen: dict[str, str] = {}
    closure("edgegw", ("demo", "web"), seen)
    print(HEADER)
    for key, version in sorted(seen.items()):
        if key not in SKIP:
            print(f"{key}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
