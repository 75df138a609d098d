"""The command-line form of a list of visual-token counts, shared by every command that takes one."""

import argparse


def comma_separated_counts(text: str) -> list:
    """"1,9,36" -> [1, 9, 36] ("auto" stays a word, for the count chooser); argparse reports anything else as an
    error naming the option. Whether the model accepts the counts is checked by the command, before it loads it."""
    try:
        return [part.strip() if part.strip() == "auto" else int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (or auto), got {text!r}") from error
