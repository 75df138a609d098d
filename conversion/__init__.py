"""Convert LLaVA-1.5 and LLaVA-NeXT (llava-hf or original format) and the released M3 / MQT checkpoints to this
package's models."""

from .convert import ConversionResult, convert_checkpoint
from .errors import ConversionError, VerificationError
from .source_formats import detect_source_format
from .verification import VerificationReport

__all__ = [
    "ConversionError",
    "ConversionResult",
    "VerificationError",
    "VerificationReport",
    "convert_checkpoint",
    "detect_source_format",
]
