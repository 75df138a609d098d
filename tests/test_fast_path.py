"""The fast path: MQT's image-independent keys computed once, no host-device sync when merging images, the static
cache and a compiled forward equal to eager at every count."""

import pytest
import torch
from torch import nn

from modeling_matryoshka_llava.token_reducers import MatryoshkaQueryTransformer, resize_pos_embed


def reference_query_transformer(module: MatryoshkaQueryTransformer, features: torch.Tensor, count: int):
    """The released MQT computation, spelled out with `nn.MultiheadAttention` itself."""
    side = int(features.shape[1] ** 0.5)
    positions = resize_pos_embed(module.pos_embed, side).to(features.dtype)
    queries = module.query[:count] + module.pos_embed[:count]
    keys = features + positions if module.image_dependent_keys else positions.expand(features.shape[0], -1, -1)
    out, _ = module.attn(
        module.ln_q(queries).expand(features.shape[0], -1, -1),
        module.ln_k(keys),
        module.ln_v(features),
        need_weights=False,
    )
    return out @ module.proj


@pytest.fixture
def query_transformer():
    torch.manual_seed(0)
    module = MatryoshkaQueryTransformer(num_queries=16, hidden_size=32, output_size=24, num_heads=4)
    with torch.no_grad():  # away from the initialisation's zeros, so every weight matters
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return module


@pytest.mark.parametrize("image_dependent_keys", [False, True])
@pytest.mark.parametrize("count", [1, 4, 16])
def test_query_transformer_equals_multihead_attention(query_transformer, count, image_dependent_keys):
    query_transformer.image_dependent_keys = image_dependent_keys
    features = torch.randn(3, 36, 32)
    with torch.no_grad():
        expected = reference_query_transformer(query_transformer, features, count)
        torch.testing.assert_close(query_transformer(features, count), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(query_transformer.eval()(features, count), expected, rtol=1e-5, atol=1e-6)


def test_position_keys_are_computed_once_at_inference_and_again_after_a_weight_change(query_transformer, monkeypatch):
    module = query_transformer.eval()
    calls = []
    original = nn.LayerNorm.forward
    monkeypatch.setattr(nn.LayerNorm, "forward", lambda self, x: calls.append(self) or original(self, x))
    features = torch.randn(2, 36, 32)
    with torch.no_grad():
        first = module(features, 4)
        module(torch.randn(5, 36, 32), 16)
        assert calls.count(module.ln_k) == 1  # every image and every count after the first reuse the keys
        module(torch.randn(1, 64, 32), 4)  # another grid size: its own keys
        assert calls.count(module.ln_k) == 2
        module.attn.in_proj_weight.mul_(1.5)  # an in-place edit of the weights the keys come from
        changed = module(features, 4)
        assert calls.count(module.ln_k) == 3
        torch.testing.assert_close(changed, reference_query_transformer(module, features, 4), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(changed, first)
        calls.clear()
        module.load_state_dict({name: value.clone() for name, value in module.state_dict().items()})
        module(features, 4)
        module(features, 4)
        assert calls.count(module.ln_k) == 1  # loaded weights: computed again, once


def test_training_recomputes_the_keys_and_trains_their_weights(query_transformer):
    module = query_transformer.train()
    module(torch.randn(2, 36, 32), 4).square().sum().backward()
    assert module.ln_k.weight.grad is not None and module.ln_k.weight.grad.abs().sum() > 0
    key_rows = module.attn.in_proj_weight.grad[32:64]
    assert key_rows.abs().sum() > 0


def expanded_inputs(model, inputs, count):
    """The inputs of one prefill at `count` with the placeholders laid out (the host-side step, done once)."""
    prepared = model.model.prepare_images(inputs["pixel_values"], inputs["input_ids"], None, count, inputs["attention_mask"])
    return {"input_ids": prepared.input_ids, "attention_mask": prepared.attention_mask,
            "pixel_values": inputs["pixel_values"], "prepared_images": prepared}


def extreme_counts(model) -> list[int]:
    counts = model.config.valid_num_visual_tokens
    return [min(counts), max(counts)]


def test_vision_to_language_model_forward_has_no_graph_break_at_a_fixed_count(model, single_inputs):
    """Vision tower, reduction, merge (no device-to-host count) and language model trace as one graph."""
    import torch._dynamo

    for count in extreme_counts(model):
        inputs = expanded_inputs(model, single_inputs, count)
        with torch.no_grad():
            model.model(**inputs)  # transformers installs its output-capturing hooks on a module's first call, eagerly
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(model.model.forward)(**inputs)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1


def test_merge_still_refuses_features_that_do_not_fill_the_placeholders(m3_model, single_inputs):
    prepared = expanded_inputs(m3_model, single_inputs, 9)
    features = [torch.zeros(8, m3_model.config.text_config.hidden_size)]
    with pytest.raises(ValueError, match="9 image placeholder positions but 8 visual tokens"):
        m3_model.model(input_ids=prepared["input_ids"], attention_mask=prepared["attention_mask"], image_features=features)


def test_static_cache_generation_equals_the_dynamic_cache_at_every_count(model, batch_inputs):
    for count in extreme_counts(model):
        dynamic = model.generate(**batch_inputs, num_visual_tokens=count, max_new_tokens=5, do_sample=False)
        static = model.generate(**batch_inputs, num_visual_tokens=count, max_new_tokens=5, do_sample=False,
                                cache_implementation="static")
        assert torch.equal(dynamic, static), count


def test_fast_path_compiled_outputs_equal_eager(processor, single_inputs):
    """`enable_fast_path()` (compiled tower and language model, static cache) gives eager's logits and tokens."""
    from tiny_models import tiny_m3

    eager, fast = tiny_m3(), tiny_m3()
    fast.enable_fast_path()
    assert fast.generation_config.cache_implementation == "static"
    for count in extreme_counts(eager):
        with torch.no_grad():
            want = eager(**single_inputs, num_visual_tokens=count).logits
            got = fast(**single_inputs, num_visual_tokens=count).logits
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        tokens = fast.generate(**single_inputs, num_visual_tokens=count, max_new_tokens=4, do_sample=False)
        assert torch.equal(tokens, eager.generate(**single_inputs, num_visual_tokens=count, max_new_tokens=4,
                                                  do_sample=False))
