"""Argument checks of the maths API (rlr.rewards, rlr.advantages, rlr.losses,
rlr.readouts, rlr.process_designs): they turn rank, shape and dtype mismatches into
ValueErrors that name the function, the argument, the expected letters and what it got."""

from __future__ import annotations

from typing import Any

import chex
import jax.numpy as jnp


def check_shapes(fn_name: str, **named: tuple[Any, str]) -> dict[str, int]:
    """Checks each array against a string of dimension letters, binding letters across arrays.

    `check_shapes("f", mask=(mask, "BT"), success=(success, "B"))` checks ranks with chex and
    that every letter has one size; returns the letter -> size table. Raises ValueError naming
    the function, the argument, the expected letters and the shape it got.
    """
    sizes: dict[str, int] = {}
    first_seen: dict[str, str] = {}
    for name, (array, letters) in named.items():
        if array is None:
            continue
        try:
            chex.assert_rank(array, len(letters))
        except AssertionError:
            raise ValueError(
                f"{fn_name}: {name} must have shape [{', '.join(letters)}] (rank {len(letters)}),"
                f" got shape {tuple(jnp.shape(array))}"
            ) from None
        for axis, letter in enumerate(letters):
            size = jnp.shape(array)[axis]
            if letter not in sizes:
                sizes[letter] = size
                first_seen[letter] = name
            elif sizes[letter] != size:
                raise ValueError(
                    f"{fn_name}: {name} has {letter}={size} (shape {tuple(jnp.shape(array))}) but"
                    f" {first_seen[letter]} has {letter}={sizes[letter]}; they must agree"
                )
    return sizes


def check_floating(fn_name: str, **named: Any) -> None:
    """Raises ValueError unless every given (non-None) array has a floating dtype."""
    for name, array in named.items():
        if array is not None and not jnp.issubdtype(jnp.result_type(array), jnp.floating):
            raise ValueError(
                f"{fn_name}: {name} must be a floating array, got dtype {jnp.result_type(array)}"
            )


def check_integer(fn_name: str, what: str = "integer ids", **named: Any) -> None:
    """Raises ValueError unless every given array has an integer dtype ("`name` must be
    `what`, got dtype ...")."""
    for name, array in named.items():
        if not jnp.issubdtype(jnp.result_type(array), jnp.integer):
            raise ValueError(
                f"{fn_name}: {name} must be {what}, got dtype {jnp.result_type(array)}"
            )
