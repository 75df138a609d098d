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


def build_word_level_tokenizer(words: Iterable[str], extra_special_tokens: tuple[str, ...] = ("<image>",)):
    """A word-level tokenizer over a closed vocabulary (words and punctuation split apart, joined by spaces when
    decoded): the smallest tokenizer a tiny model trained on a synthetic benchmark needs."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        padding_side="left",
    )
    wrapped.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    return wrapped
