"""The command-line form of a list of visual-token counts, shared by every command that takes one."""

import argparse


def comma_separated_counts(text: str) -> list[int]:
    """"1,9,36" -> [1, 9, 36]; argparse reports anything else as an error naming the option."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error
