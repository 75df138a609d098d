"""The behaviours a transformers user relies on, tested for every model family the way transformers tests its own
models: one tester per family (`model_testers.py`), the same tests for each, on every supported release."""

import copy

import pytest
import torch
from model_testers import TESTERS
from safetensors.torch import load_file, save_file
from transformers import AutoModel, LlavaConfig, LlavaForConditionalGeneration, StaticCache
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from modeling_matryoshka_llava import M3LlavaConfig, M3LlavaNextConfig, MQTLlavaConfig
from modeling_matryoshka_llava.transformers_imports import CACHE_NAME, Cache


@pytest.fixture(scope="module", params=TESTERS, ids=lambda tester: tester.name)
def tester(request):
    return request.param


@pytest.fixture(scope="module")
def family_model(tester):
    return tester.build_model()


@pytest.fixture(scope="module")
def family_processor(tester):
    return tester.build_processor()


def image_inputs(tester, inputs: dict) -> dict:
    return {name: inputs[name] for name in ("pixel_values", *tester.image_input_names)}


def saved(model, processor, folder):
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# -- outputs -----------------------------------------------------------------------------------------------------


def test_outputs_are_the_bundles_own_classes(tester, family_model, family_processor):
    inputs = tester.inputs(family_processor)
    with torch.no_grad():
        output = family_model(**inputs, num_visual_tokens=tester.counts[1])
        base_output = family_model.model(**inputs, num_visual_tokens=tester.counts[1])
    for result in (output, base_output):
        assert all(not cls.__module__.startswith("transformers.models.") for cls in type(result).__mro__)
        assert type(result).__module__.endswith("modeling_matryoshka_outputs")
        assert isinstance(result[CACHE_NAME], Cache) and isinstance(getattr(result, CACHE_NAME), Cache)
    hidden = family_model.config.text_config.hidden_size
    expected_tokens = int((inputs["input_ids"] == family_model.config.image_token_id).sum())  # compact: one per image
    assert expected_tokens == 1
    assert output.image_hidden_states.shape[1] == hidden
    assert output.image_hidden_states.shape[0] == output.logits.shape[1] - inputs["input_ids"].shape[1] + 1


def test_return_dict_false_gives_the_same_values_as_a_tuple(tester, family_model, family_processor):
    inputs = tester.inputs(family_processor)
    labels = inputs["input_ids"].clone()
    with torch.no_grad():
        as_dict = family_model(**inputs, labels=labels)
        as_tuple = family_model(**inputs, labels=labels, return_dict=False)
        base_tuple = family_model.model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and isinstance(base_tuple, tuple)
    assert len(as_tuple) == len(as_dict.to_tuple())
    torch.testing.assert_close(as_tuple[0], as_dict.loss)
    torch.testing.assert_close(as_tuple[1], as_dict.logits)
    assert isinstance(as_tuple[2], Cache)
    torch.testing.assert_close(base_tuple[0], family_model.model(**inputs).last_hidden_state)
    model = copy.deepcopy(family_model)
    model.config.return_dict = False  # the config default, as for transformers' models
    with torch.no_grad():
        assert isinstance(model(**inputs), tuple)


def test_output_flags_reach_the_language_model(tester, family_model, family_processor):
    inputs = tester.inputs(family_processor)
    model = copy.deepcopy(family_model)
    model.set_attn_implementation("eager")  # sdpa returns no attention weights
    with torch.no_grad():
        output = model(**inputs, output_hidden_states=True, output_attentions=True)
    layers = model.config.text_config.num_hidden_layers
    assert len(output.hidden_states) == layers + 1 and len(output.attentions) == layers
    assert output.attentions[0].shape[-1] == output.logits.shape[1]


# -- inputs_embeds -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which_count", [0, 2])
def test_inputs_embeds_with_expanded_placeholders_equal_input_ids(tester, family_model, family_processor, which_count):
    count = tester.counts[which_count]
    inputs = tester.inputs(family_processor, num_images=2, num_visual_tokens=count)  # placeholders expanded
    embeds = family_model.get_input_embeddings()(inputs["input_ids"])
    with torch.no_grad():
        from_ids = family_model(**inputs, num_visual_tokens=count).logits  # a run of 1 id would mean "compact"
        from_embeds = family_model(
            inputs_embeds=embeds, attention_mask=inputs["attention_mask"], **image_inputs(tester, inputs)
        ).logits
        named = family_model(
            inputs_embeds=embeds, attention_mask=inputs["attention_mask"], num_visual_tokens=count,
            **image_inputs(tester, inputs),
        ).logits
    torch.testing.assert_close(from_embeds, from_ids, rtol=0, atol=1e-6)
    torch.testing.assert_close(named, from_ids, rtol=0, atol=1e-6)
    if tester.reference_class is not None and which_count == 0:  # the full grid: exactly transformers' LLaVA
        reference = tester.reference_model(family_model)
        reference_inputs = {k: v for k, v in image_inputs(tester, inputs).items() if k != "image_grid_shapes"}
        with torch.no_grad():
            expected = reference(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], **reference_inputs)
        torch.testing.assert_close(from_embeds, expected.logits, rtol=0, atol=1e-5)


def test_inputs_embeds_of_the_wrong_length_name_the_count(tester, family_model, family_processor):
    inputs = tester.inputs(family_processor, num_visual_tokens=tester.counts[1])
    embeds = family_model.get_input_embeddings()(inputs["input_ids"])
    with pytest.raises(ValueError, match="already be expanded"):
        family_model(inputs_embeds=embeds, num_visual_tokens=tester.counts[2], **image_inputs(tester, inputs))


def test_generate_from_inputs_embeds(tester, family_model, family_processor):
    tokenizer = family_processor.tokenizer
    text = tokenizer(["USER: How many shapes are there? ASSISTANT:"], return_tensors="pt")
    expected = family_model.generate(**text, max_new_tokens=5, do_sample=False)
    embeds = family_model.get_input_embeddings()(text["input_ids"])
    generated = family_model.generate(
        inputs_embeds=embeds, attention_mask=text["attention_mask"], max_new_tokens=5, do_sample=False
    )
    assert generated.tolist() == expected[:, text["input_ids"].shape[1] :].tolist()  # only new tokens, as transformers

    inputs = tester.inputs(family_processor, num_visual_tokens=tester.counts[1])
    expected = family_model.generate(**inputs, max_new_tokens=5, do_sample=False)
    generated = family_model.generate(
        inputs_embeds=family_model.get_input_embeddings()(inputs["input_ids"]), attention_mask=inputs["attention_mask"],
        max_new_tokens=5, do_sample=False, **image_inputs(tester, inputs),
    )
    assert generated.tolist() == expected[:, inputs["input_ids"].shape[1] :].tolist()


# -- image features ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [{}, {"output_hidden_states": True}, {"output_attentions": True}, {"return_dict": False}])
def test_get_image_features_returns_what_llava_returns(tester, family_model, family_processor, flags):
    inputs = tester.inputs(family_processor, num_images=2)
    model = copy.deepcopy(family_model)
    model.set_attn_implementation("eager")
    extra = {name: inputs[name] for name in tester.image_input_names}
    with torch.no_grad():
        ours = model.get_image_features(inputs["pixel_values"], tester.counts[0], **extra, **flags)
    # transformers' LLaVA with the same weights (MQT: a LLaVA-1.5 with the same vision tower)
    if tester.reference_class is not None:
        reference = tester.reference_model(model)
    else:
        reference = LlavaForConditionalGeneration(LlavaConfig(**_llava_kwargs(model))).eval()
        reference.model.vision_tower.load_state_dict(model.model.vision_tower.state_dict())
    reference.set_attn_implementation("eager")
    reference_extra = {"image_sizes": inputs["image_sizes"]} if "image_sizes" in extra else {}
    with torch.no_grad():
        theirs = reference.get_image_features(inputs["pixel_values"], **reference_extra, **flags)
    if flags.get("return_dict") is False:
        assert isinstance(ours, tuple) and isinstance(theirs, tuple) and len(ours) == len(theirs)
        torch.testing.assert_close(ours[0], theirs[0])
        return
    assert set(ours.keys()) == set(theirs.keys())
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state)
    if flags.get("output_attentions"):
        assert len(ours.attentions) == model.config.vision_config.num_hidden_layers
        for mine, expected in zip(ours.attentions, theirs.attentions):
            torch.testing.assert_close(mine, expected)
    if flags.get("output_hidden_states"):
        for mine, expected in zip(ours.hidden_states, theirs.hidden_states):
            if expected is not None:
                torch.testing.assert_close(mine, expected)
    assert len(ours.pooler_output) == 2
    if tester.name == "m3":  # at the full grid, M3's visual tokens are exactly LLaVA's
        for mine, expected in zip(ours.pooler_output, theirs.pooler_output):
            torch.testing.assert_close(mine, expected)


def _llava_kwargs(model) -> dict:
    config = model.config
    return dict(
        vision_config=config.vision_config.to_dict(), text_config=config.text_config.to_dict(),
        image_token_index=config.image_token_id,
    )


# -- generation ----------------------------------------------------------------------------------------------------


def test_static_cache_and_assisted_decoding_equal_greedy(tester, family_model, family_processor):
    inputs = tester.inputs(family_processor)
    count = tester.counts[1]
    expected = family_model.generate(**inputs, num_visual_tokens=count, max_new_tokens=6, do_sample=False)
    static = family_model.generate(
        **inputs, num_visual_tokens=count, max_new_tokens=6, do_sample=False, cache_implementation="static"
    )
    assisted = family_model.generate(
        **inputs, num_visual_tokens=count, max_new_tokens=6, do_sample=False,
        assistant_model=tester.build_model(seed=1),
    )
    assert static.tolist() == expected.tolist()
    assert assisted.tolist() == expected.tolist()


def test_generation_continues_from_a_returned_cache(tester, family_model, family_processor):
    inputs = tester.inputs(family_processor)
    count = tester.counts[1]
    expected = family_model.generate(**inputs, num_visual_tokens=count, max_new_tokens=6, do_sample=False)
    first = family_model.generate(
        **inputs, num_visual_tokens=count, max_new_tokens=3, do_sample=False, return_dict_in_generate=True
    )
    cache = getattr(first, CACHE_NAME)
    assert isinstance(cache, Cache)
    # The same images again (already in the cache, so not encoded twice) with the sequence generated so far.
    continued = family_model.generate(
        input_ids=first.sequences,
        attention_mask=torch.ones_like(first.sequences),
        num_visual_tokens=count,
        max_new_tokens=3,
        do_sample=False,
        **image_inputs(tester, inputs),
        **{CACHE_NAME: cache},
    )
    assert continued.tolist() == expected.tolist()


def test_compiled_decoding_step_is_one_graph(tester, family_model, family_processor):
    """A decoding step over a static cache compiles with `fullgraph=True` (no graph breaks) and matches eager."""
    inputs = tester.inputs(family_processor)
    model = family_model
    with torch.no_grad():
        prompt = model.model.prepare_images(
            inputs["pixel_values"], inputs["input_ids"], None, tester.counts[1], inputs["attention_mask"],
            **{name: inputs[name] for name in tester.image_input_names},
        )
        length = prompt.input_ids.shape[1]
        cache = StaticCache(config=model.config, max_cache_len=length + 4)
        prefill = model(
            input_ids=prompt.input_ids, pixel_values=inputs["pixel_values"], num_visual_tokens=tester.counts[1],
            **{name: inputs[name] for name in tester.image_input_names}, use_cache=True, **{CACHE_NAME: cache},
        )
        next_token = prefill.logits[:, -1:].argmax(-1)
        step_inputs = dict(input_ids=next_token, position_ids=torch.tensor([[length]]), use_cache=True)
        eager_cache = copy.deepcopy(cache)
        eager = model(**step_inputs, **{CACHE_NAME: eager_cache}).logits
        torch._dynamo.reset()
        compiled_forward = torch.compile(model.forward, fullgraph=True, backend="eager")
        compiled = compiled_forward(**step_inputs, **{CACHE_NAME: cache}).logits
    torch.testing.assert_close(compiled, eager)


def test_saved_processor_pads_on_the_left_so_batches_generate_correctly(tester, family_model, family_processor, tmp_path):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(saved(family_model, family_processor, tmp_path))
    assert processor.tokenizer.padding_side == "left"
    batch = tester.inputs(processor, num_images=2)
    assert (batch["attention_mask"][:, 0] == 0).any()  # the prompts differ in length
    together = family_model.generate(**batch, num_visual_tokens=tester.counts[1], max_new_tokens=4, do_sample=False)
    for row in range(2):
        single = tester.inputs(processor, num_images=2, rows=[row])
        alone = family_model.generate(**single, num_visual_tokens=tester.counts[1], max_new_tokens=4, do_sample=False)
        assert together[row, -4:].tolist() == alone[0, -4:].tolist()


# -- attention, training, embeddings ---------------------------------------------------------------------------------


def test_eager_and_sdpa_give_the_same_logits(tester, family_model, family_processor, tmp_path):
    folder = saved(family_model, family_processor, tmp_path)
    inputs = tester.inputs(family_processor, num_images=2)
    logits = {}
    for implementation in ("eager", "sdpa"):
        model = type(family_model).from_pretrained(folder, attn_implementation=implementation).eval()
        assert model.config.text_config._attn_implementation == implementation
        assert model.config.vision_config._attn_implementation == implementation
        with torch.no_grad():
            logits[implementation] = model(**inputs, num_visual_tokens=tester.counts[0]).logits
    expanded_mask = family_model.model.prepare_images(
        inputs["pixel_values"], inputs["input_ids"], None, tester.counts[0], inputs["attention_mask"],
        **{name: inputs[name] for name in tester.image_input_names},
    ).attention_mask.bool()
    # Padding positions attend to nothing and hold whatever each kernel leaves there; compare the real ones.
    torch.testing.assert_close(logits["eager"][expanded_mask], logits["sdpa"][expanded_mask], rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(tester, family_model, family_processor):
    inputs = tester.inputs(family_processor, num_images=2)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    gradients = []
    for checkpointing in (False, True):
        model = copy.deepcopy(family_model).train()
        if checkpointing:
            # `activation_checkpointing_enable` from transformers 5.24, `gradient_checkpointing_enable` before
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert model.model.language_model.gradient_checkpointing
        model(**inputs, labels=labels, num_visual_tokens=tester.counts[1]).loss.backward()
        gradients.append({name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None})
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 10
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, msg=name)


def test_resize_token_embeddings(tester, family_model, family_processor):
    model = copy.deepcopy(family_model)
    old_vocab = model.config.text_config.vocab_size
    old_rows = model.get_input_embeddings().weight[:old_vocab].clone()
    model.resize_token_embeddings(old_vocab + 10)
    assert model.config.text_config.vocab_size == old_vocab + 10
    assert model.get_input_embeddings().weight.shape[0] == old_vocab + 10
    assert model.get_output_embeddings().weight.shape[0] == old_vocab + 10
    torch.testing.assert_close(model.get_input_embeddings().weight[:old_vocab], old_rows)
    inputs = tester.inputs(family_processor)
    labels = inputs["input_ids"].clone()
    labels[0, -1] = old_vocab + 9  # a new token as a target
    with torch.no_grad():
        output = model(**inputs, labels=labels)
    assert output.logits.shape[-1] == old_vocab + 10 and torch.isfinite(output.loss)


def test_tensor_parallel_plan_is_llavas(tester, family_model):
    llava = LlavaForConditionalGeneration(LlavaConfig(**_llava_kwargs(family_model)))
    # LLaVA's plan for the language model, plus the head as transformers' newest LLaVA (and every CausalLM) plans it
    assert family_model._tp_plan == {**llava._tp_plan, "lm_head": "colwise_gather_output"}


def test_missing_vision_weights_get_the_vision_towers_own_initialisation(tester, family_model, family_processor, tmp_path):
    folder = saved(family_model, family_processor, tmp_path)
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "vision_tower" not in k}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with CaptureLogger(logging.get_logger("transformers.modeling_utils")):
        model, info = type(family_model).from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] and all("vision_tower" in key for key in info["missing_keys"])
    assert not info["unexpected_keys"]
    torch.manual_seed(0)
    fresh_tower = AutoModel.from_config(model.config.vision_config)  # the vision config's own initialisation
    for name, parameter in model.model.vision_tower.named_parameters():
        expected = dict(fresh_tower.named_parameters())[name]
        if parameter.ndim >= 1 and parameter.numel() > 16:
            ratio = parameter.float().std() / expected.float().std().clamp_min(1e-12)
            assert 0.6 < ratio < 1.6 or expected.std() == 0, f"{name}: std {parameter.std():.4f} vs {expected.std():.4f}"
    for name, parameter in model.named_parameters():
        if "vision_tower" not in name:
            torch.testing.assert_close(parameter, dict(family_model.named_parameters())[name], rtol=0, atol=0)


# -- configs ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_class", [M3LlavaConfig, M3LlavaNextConfig, MQTLlavaConfig])
@pytest.mark.parametrize("value", [True, False, 9.0, "36", 0, -1])
def test_configs_never_take_a_bool_float_or_string_as_a_count(config_class, value):
    with pytest.raises(ValueError, match="num_visual_tokens"):
        config_class(num_visual_tokens=value)


@pytest.mark.parametrize("config_class", [M3LlavaConfig, M3LlavaNextConfig])
@pytest.mark.parametrize("scales", [[True, 576], [9.0, 576], ["36", 576]])
def test_m3_scales_must_be_integers(config_class, scales):
    with pytest.raises(ValueError, match="matryoshka_scales"):
        config_class(matryoshka_scales=scales)


# -- loading what transformers writes ----------------------------------------------------------------------------------


def legacy_llava_hf_layout(state_dict: dict) -> dict:
    """The key layout of older llava-hf uploads (4.x era): no `model.` root, `vision_model.` inside the tower."""
    legacy = {}
    for key, value in state_dict.items():
        if key == "lm_head.weight":
            key = "language_model.lm_head.weight"
        elif key.startswith("model.language_model."):
            key = "language_model.model." + key.removeprefix("model.language_model.")
        elif key.startswith("model.vision_tower."):
            key = "vision_tower.vision_model." + key.removeprefix("model.vision_tower.")
        else:
            key = key.removeprefix("model.")
        legacy[key] = value.contiguous()
    return legacy


@pytest.mark.parametrize("layout", ["as_llava_saves_it", "in_memory_names", "legacy_llava_hf"])
def test_loads_every_weight_of_a_folder_transformers_llava_wrote(tester, family_model, family_processor, layout, tmp_path):
    if tester.reference_class is None:
        pytest.skip("LLaVA has no query transformer: an MQT model cannot come from a LLaVA folder")
    reference = tester.reference_model(family_model)
    if layout == "legacy_llava_hf":
        reference.config.save_pretrained(tmp_path)
        save_file(legacy_llava_hf_layout(reference.state_dict()), tmp_path / "model.safetensors", metadata={"format": "pt"})
    else:
        reference.save_pretrained(tmp_path, save_original_format=layout == "as_llava_saves_it")
    model, info = type(family_model).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    for name, parameter in model.state_dict().items():
        assert torch.equal(parameter, reference.state_dict()[name]), name
    inputs = tester.inputs(family_processor, num_images=2, num_visual_tokens=tester.counts[0])
    reference_inputs = {k: v for k, v in inputs.items() if k != "image_grid_shapes"}
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval()(**inputs).logits, reference(**reference_inputs).logits, rtol=0, atol=1e-5
        )
