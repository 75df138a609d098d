"""matryoshka-llava: Matryoshka vision-language models (M3-LLaVA, MQT-LLaVA) as transformers models.

The installed distribution has exactly two top-level names: `modeling_matryoshka_llava`, the remote-code bundle
that also travels with every checkpoint (configs, models, processors), and this namespace, which holds the tools
that never travel: `matryoshka_llava.processing`, `.conversion`, `.training`, `.evaluation`, `.model_cards`,
`.demo`, and the `matryoshka-llava` command line (`.cli`).
"""
