"""The vicuna_v1 conversation format of LLaVA-1.5 and both Matryoshka releases, as a chat template.

`{system} USER: <image>\n{question} ASSISTANT: {answer}</s>USER: ... ASSISTANT:` -- turns separated by " ", each
assistant turn closed by the end-of-sequence token. Assistant text is wrapped in `{% generation %}` so that
`apply_chat_template(..., return_assistant_tokens_mask=True)` marks exactly the supervised tokens.
Part of the remote-code bundle: standard library only.
"""

VICUNA_V1_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

# Images (and videos) are written where they appear in the content list, each followed by a newline, as LLaVA
# writes `<image>\n` before the question.
VICUNA_V1_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif item['type'] == 'video' -%}{{- '<video>\\n' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{- render(messages[0]['content']) + ' ' -}}{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{{- '" + VICUNA_V1_SYSTEM_PROMPT.replace("'", "\\'") + " ' -}}{%- set turns = messages -%}"
    "{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'user' -%}{{- 'USER: ' + render(message['content']) + ' ' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- 'ASSISTANT: ' -}}"
    "{%- generation -%}{{- render(message['content']) + eos_token -}}{%- endgeneration -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)
