"""Build the output in a temporary folder next to OUT and move it into place only when it is complete.

An interrupted or failed run leaves no OUT (and removes its temporary folder, unless the process is killed outright:
then only a hidden `.OUT.partial-*` folder is left, never a half-written OUT). An existing OUT is refused unless
`force`; with `force` it is replaced only once the new one is complete, so a failed run keeps the old one.
"""

import os
import shutil
import tempfile
from pathlib import Path

from .errors import ConversionError


def check_output_path(output: Path, force: bool, protected: list[Path]) -> None:
    resolved = output.resolve()
    for path in protected:
        path = path.resolve()
        if resolved == path or path.is_relative_to(resolved):
            raise ConversionError(f"The output {output} would overwrite the input {path}: choose another folder.")
    if output.exists():
        if not output.is_dir():
            raise ConversionError(f"The output {output} exists and is not a folder.")
        if not force:
            raise ConversionError(f"The output {output} already exists: pass --force (force=True) to replace it.")


class AtomicOutputFolder:
    def __init__(self, output: Path, force: bool = False, protected: list[Path] = ()):
        self.output = Path(output)
        self.force = force
        check_output_path(self.output, force, list(protected))
        self.path: Path | None = None

    def __enter__(self) -> Path:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.partial-", dir=self.output.parent))
        return self.path

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:  # also KeyboardInterrupt
            shutil.rmtree(self.path, ignore_errors=True)

    def commit(self) -> Path:
        """Move the finished folder to OUT (replacing an old OUT only now, when forced)."""
        check_output_path(self.output, self.force, [])
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.path, 0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
        old = None
        if self.output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.old-", dir=self.output.parent))
            os.replace(self.output, old / "previous")
        os.replace(self.path, self.output)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.output
