"""The lmms-eval model plugin, found through lmms-eval's entry point and run on a fixture task in POPE's layout."""

import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from matryoshka_llava.processing import chat_prompt

lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (pip install 'matryoshka-llava[lmms-eval]')")

POPE = Path(__file__).parent / "fixtures" / "eval" / "pope.parquet"
QUESTION_SUFFIX = "\nAnswer the question using a single word or phrase."


def write_task(folder: Path) -> str:
    folder.mkdir()
    (folder / "fixture_pope.yaml").write_text(textwrap.dedent(f"""\
        task: matryoshka_fixture_pope
        dataset_path: parquet
        dataset_kwargs:
          data_files:
            test: {POPE}
        test_split: test
        output_type: generate_until
        doc_to_visual: !function fixture_pope_utils.doc_to_visual
        doc_to_text: !function fixture_pope_utils.doc_to_text
        doc_to_target: answer
        generation_kwargs:
          max_new_tokens: 4
          temperature: 0
          do_sample: false
        process_results: !function fixture_pope_utils.process_results
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
        """))
    (folder / "fixture_pope_utils.py").write_text(textwrap.dedent(f"""\
        def doc_to_visual(doc):
            return [doc["image"].convert("RGB")]

        def doc_to_text(doc, lmms_eval_specific_kwargs=None):
            return doc["question"] + {QUESTION_SUFFIX!r}

        def process_results(doc, results):
            return {{"exact_match": float(results[0].strip().lower() == doc["answer"])}}
        """))
    return "matryoshka_fixture_pope"


def test_plugin_is_registered_and_runs_a_task_at_the_requested_count(m3_model, processor, tmp_path):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    assert "matryoshka_llava" in [entry.name for entry in entry_points(group="lmms_eval.models")]
    assert get_model("matryoshka_llava").__name__ == "MatryoshkaLlava"
    folder = tmp_path / "tiny-m3"
    m3_model.save_pretrained(folder)
    processor.save_pretrained(folder)
    task = write_task(tmp_path / "tasks")
    manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    output = simple_evaluate(
        model="matryoshka_llava", model_args=f"pretrained={folder},num_visual_tokens=9,batch_size=4,device=cpu",
        tasks=[task], task_manager=manager, log_samples=True,
    )
    samples = {sample["doc_id"]: sample["resps"][0][0] for sample in output["samples"][task]}
    import datasets

    docs = datasets.load_dataset("parquet", data_files=str(POPE), split="train")
    for doc_id, doc in enumerate(docs):
        inputs = processor(images=doc["image"].convert("RGB"), text=chat_prompt(processor, doc["question"] + QUESTION_SUFFIX),
                           return_tensors="pt")
        expected = m3_model.generate(**inputs, num_visual_tokens=9, max_new_tokens=4, do_sample=False)
        assert samples[doc_id] == processor.decode(expected[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert output["results"][task]["exact_match,none"] == sum(
        samples[i].lower() == doc["answer"] for i, doc in enumerate(docs)) / len(docs)

    with pytest.raises(ValueError, match="num_visual_tokens"):
        simple_evaluate(model="matryoshka_llava", model_args=f"pretrained={folder},num_visual_tokens=100",
                        tasks=[task], task_manager=manager)
