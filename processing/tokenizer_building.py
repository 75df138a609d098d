"""Small byte-level BPE tokenizers built in code, for tests and the tiny demo models (no Hub download).

They follow the Llama/Vicuna conventions the processor and chat template expect: `<s>` prepended, `</s>` as
end of sequence, `<pad>` for padding, `<image>` as an added special token.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def build_byte_level_tokenizer(
    corpus: Iterable[str], vocab_size: int = 400, extra_special_tokens: tuple[str, ...] = ("<image>",)
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `corpus` (deterministic for a given corpus) and wrap it for transformers."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
    )
    wrapped.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    return wrapped
