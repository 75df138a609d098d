"""How numbers are shown to people (command output, reports, model cards): one rule for each kind of number."""

from collections.abc import Iterable

FLOP_UNITS = ((1e15, "PFLOPs"), (1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "kFLOPs"), (1.0, "FLOPs"))
COUNT_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))
BYTE_UNITS = ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"))


def percent(fraction: float) -> str:
    """A metric stored as a fraction (0.531) as the percent everything prints (53.1)."""
    return f"{100 * fraction:.1f}"


def count_noun(value: float, noun: str, plural: str | None = None) -> str:
    """`1 visual token`, `2 visual tokens`, `12.5 visual tokens` (a mean keeps one decimal)."""
    shown = f"{value:g}" if float(value).is_integer() else f"{value:.1f}"
    return f"{shown} {noun if value == 1 else plural or noun + 's'}"


def _unit_for(values: Iterable[float], units) -> tuple[str, float]:
    largest = max(values, default=0)
    return next(((name, scale) for scale, name in units if largest >= scale), (units[-1][1], units[-1][0]))


def flops_unit(values: Iterable[float]) -> tuple[str, float]:
    """(unit, scale) for a column of FLOPs: the largest value gets a digit before the point (TFLOPs for a 7B
    model, MFLOPs for a tiny one), never a column of 0.000."""
    return _unit_for(values, FLOP_UNITS)


def bytes_unit(values: Iterable[float]) -> tuple[str, float]:
    """(unit, scale) for a column of memory sizes, chosen as `flops_unit` chooses."""
    return _unit_for(values, (*BYTE_UNITS, (1, "bytes")))


def human_count(value: int) -> str:
    """Parameter and token counts: 7.06B, 350M, 1.2M, 85k, 512."""
    for scale, suffix in COUNT_SUFFIXES:
        if value >= scale:
            scaled = value / scale
            return f"{scaled:.3g}{suffix}" if scaled < 100 else f"{scaled:.0f}{suffix}"
    return str(value)


def human_bytes(value: int) -> str:
    """Memory sizes: 13.48 GiB, 5.2 MiB, 512 bytes."""
    for scale, unit in BYTE_UNITS:
        if value >= scale:
            return f"{value / scale:.3g} {unit}" if value / scale < 100 else f"{value / scale:.0f} {unit}"
    return f"{value} bytes"
