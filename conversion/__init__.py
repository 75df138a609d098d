"""Convert LLaVA-1.5 and LLaVA-NeXT (llava-hf or original format) and the released M3 / MQT checkpoints to this
package's models."""

from matryoshka_llava.lazy_exports import lazy_exports

__getattr__ = lazy_exports(__name__, {
    "ConversionResult": ".convert",
    "convert_checkpoint": ".convert",
    "ConversionError": ".errors",
    "VerificationError": ".errors",
    "detect_source_format": ".source_formats",
    "VerificationReport": ".verification",
})
__all__ = [
    "ConversionError",
    "ConversionResult",
    "VerificationError",
    "VerificationReport",
    "convert_checkpoint",
    "detect_source_format",
]
