"""Where the shipped tiny models are, what the demo calls them, and the counts it shows each at.

Kept apart from `run_demo` (which imports torch and transformers) so that the command line can use them at once.
"""

from pathlib import Path

MODELS_DIR = Path(__file__).parent / "models"
MODEL_LABELS = {"m3": "M3", "mqt": "MQT", "llava": "plain LLaVA + avg pooling"}
# The tiny grid is 12x12: M3 at its nested scales; MQT (M = 64) at M3's counts below M, and M, so the two compare at
# equal k (any m in 1..M works: --mqt-counts); "auto" is the row of each model's count chooser.
DEFAULT_COUNTS = {"m3": [1, 9, 36, 144, "auto"], "mqt": [1, 9, 36, 64, "auto"], "llava": [1, 9, 36, 144]}
