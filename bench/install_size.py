"""What `pip install keras-hourglass` and its `[serve]` extra put on disk, read from the installed packages.

    python -m bench.install_size

Walks the requirements in `setup.cfg` (`install_requires`, then the `serve`
extra) through the installed distributions' metadata of this environment
(`make venv` installs both) and adds up each distribution's files. Prints
the package count and size of the base install and what the extra adds.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import pathlib

from packaging.requirements import Requirement

ROOT = pathlib.Path(__file__).resolve().parents[1]


def closure(names, found: dict) -> dict:
    """`{normalised name: distribution}` of `names` and everything they require (no extras), as installed here."""
    for name in names:
        key = name.lower().replace("_", "-")
        if key in found:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found[key] = distribution
        requirements = [Requirement(r) for r in distribution.requires or []]
        closure([r.name for r in requirements if not r.marker or r.marker.evaluate({"extra": ""})], found)
    return found


def megabytes(distributions) -> float:
    total = 0
    for distribution in distributions:
        for file in distribution.files or []:
            try:
                total += os.path.getsize(distribution.locate_file(file))
            except OSError:
                pass
    return total / 1e6


def requirement_names(text: str) -> list[str]:
    return [Requirement(line.strip()).name for line in text.splitlines() if line.strip()]


def main() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    base = closure(requirement_names(config["options"]["install_requires"]), {})
    serve = closure(requirement_names(config["options.extras_require"]["serve"]), dict(base))
    added = [serve[key] for key in sorted(set(serve) - set(base))]
    print(f"pip install keras-hourglass: {len(base)} packages, {megabytes(base.values()):.0f} MB")
    print(f"  [serve] adds {len(added)} packages, {megabytes(added):.0f} MB: "
          + ", ".join(d.metadata["Name"] for d in added))


if __name__ == "__main__":
    main()
