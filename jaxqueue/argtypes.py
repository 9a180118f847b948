"""Argument types for the command line: values checked as they are parsed, with errors that
name the option and its allowed range."""

from __future__ import annotations

import argparse
import math

__all__ = ["number", "positive_int"]


def positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} = {text!r}: must be an integer >= 1") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} = {value}: must be an integer >= 1")
        return value
    return parse


def number(name: str, low: float = 0.0, strict: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} = {text!r}: must be a number") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(
                f"{name} = {text}: must be finite and {'>' if strict else '>='} {low:g}")
        return value
    return parse
