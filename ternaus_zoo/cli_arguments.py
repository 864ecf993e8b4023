"""The argument parsing every plain command shares (``bag``, ``export``, ``predict``, ``plan``, ``select`` ...):
defaults in ``--help``, no abbreviations, and mistakes as one line. Imports nothing heavy, so a command that
fails on its options fails before torch and Lightning load."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

from ternaus_zoo.errors import BadValueError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, descriptions kept as written."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the plain commands: defaults in ``--help``, no abbreviated options (an option given is an
    option named, which the checks of options that do not apply rely on), and a mistake raised as a
    :class:`~ternaus_zoo.errors.BadValueError`, which the command line reports on one line (argparse would print
    its usage first)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(formatter_class=HelpFormatter, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise BadValueError(message)


def number(text: str, kind: Callable[[str], Any]) -> Any:
    """``kind(text)``, or argparse's type error naming the kind."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None


def at_least(minimum: float, kind: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` (int or float) of at least ``minimum``."""

    def parse(text: str) -> Any:
        value = number(text, kind)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def boolean(text: str) -> bool:
    """An argparse type: true/false, 1/0, yes/no."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def positive_float(text: str) -> float:
    """An argparse type: a number above 0 (a factor, a rate)."""
    value = number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value
