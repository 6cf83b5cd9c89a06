"""The YAML configs shipped with rlr, usable by name: `rlr ppo --config ppo_cpu`.

The files sit beside this module (package data), so they work after a plain
`pip install .` from any directory; in a checkout, launch/configs points here.
"""

from __future__ import annotations

import pathlib

DIRECTORY = pathlib.Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped configs (file stems), sorted."""
    return sorted(path.stem for path in DIRECTORY.glob("*.yaml"))


def resolve(name_or_path: str | pathlib.Path) -> pathlib.Path:
    """A config file: `name_or_path` itself when it is a file, else the shipped config of that
    name (with or without .yaml). Anything else is a ValueError that lists the shipped ones."""
    path = pathlib.Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    if "/" not in text and "\\" not in text:
        stem = text[: -len(".yaml")] if text.endswith(".yaml") else text
        shipped = DIRECTORY / f"{stem}.yaml"
        if shipped.is_file():
            return shipped
    raise ValueError(
        f"config {text!r} is neither a file nor a config shipped with rlr; shipped configs: "
        f"{', '.join(available())}"
    )
