"""Serving M3 / MQT models with vLLM, `num_visual_tokens` chosen per request (see `vllm_plugin`)."""
