"""The one place a question and its images become a prompt for the package's tools (eval, the lmms-eval plugin,
the demo, the tests): the checkpoint's own chat template with the images first, as LLaVA is trained."""


def chat_prompt(processor, question: str, num_images: int = 1) -> str:
    """The chat-template prompt of one user turn: `num_images` images, then the question, then the assistant cue.

    An image token written in the question itself is dropped: the template places the images.
    """
    question = question.replace(processor.image_token, "").strip()
    content = [{"type": "image"}] * num_images + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


__all__ = ["chat_prompt"]
