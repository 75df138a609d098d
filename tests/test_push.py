"""Publishing: validation before anything is sent, one commit, clear errors offline or without a token, and the
remote-code files carried by transformers' own push_to_hub."""

import json
import shutil
from types import SimpleNamespace

import pytest
import transformers.utils.hub as transformers_hub
from huggingface_hub import ModelCard, constants
from tiny_models import tiny_m3, tiny_processor

from matryoshka_llava.cli import main as cli_main
from matryoshka_llava.model_cards import PushError, card_inputs_for_folder, write_model_card
from matryoshka_llava.model_cards import push as push_module
from matryoshka_llava.model_cards.folder_validation import validate_checkpoint_folder
from matryoshka_llava.model_cards.push import push_checkpoint

pytest_plugins = ["conversion_fixtures"]  # tiny sources of every format, converted once per session

REPO = "me/m3-tiny"


class RecordingHubApi:
    """Stands in for huggingface_hub.HfApi: records calls, keeps what each commit would upload."""

    def __init__(self, fail_commit: bool = False):
        self.calls, self.commits, self.fail_commit = [], [], fail_commit

    def whoami(self, *args, **kwargs):
        self.calls.append("whoami")
        return {"name": "me"}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs.get("private")))
        return SimpleNamespace(repo_id=repo_id)

    def create_branch(self, repo_id, branch, **kwargs):
        self.calls.append(("create_branch", branch))

    def create_commit(self, repo_id, operations, commit_message=None, revision=None, **kwargs):
        self.calls.append(("create_commit", revision, commit_message))
        if self.fail_commit:
            raise ConnectionError("connection reset during LFS upload")
        files = {}
        for operation in operations:
            source = operation.path_or_fileobj
            with open(source, "rb") if isinstance(source, str) else source as handle:
                files[operation.path_in_repo] = handle.read()
        self.commits.append(files)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/abc123", oid="abc123")


@pytest.fixture
def checkpoint(converted, tmp_path):
    """A converted folder whose card is rendered for REPO."""
    folder = tmp_path / "m3-tiny"
    shutil.copytree(converted["m3_release", "m3"].output, folder)
    write_model_card(folder, card_inputs_for_folder(folder, repo_id=REPO))
    return folder


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_validation_refuses_unpublishable_folders(checkpoint):
    validate_checkpoint_folder(checkpoint, REPO, load_check=False)
    with pytest.raises(PushError, match="does not load 'me/other'.*--repo-id me/other"):
        push_checkpoint(checkpoint, "me/other", dry_run=True)
    (checkpoint / "training_args.bin").write_bytes(b"pickle")
    with pytest.raises(PushError, match="pickled files.*training_args.bin"):
        push_checkpoint(checkpoint, REPO, dry_run=True)
    (checkpoint / "training_args.bin").unlink()
    shard = min(checkpoint.glob("model-*.safetensors"))
    shard.rename(checkpoint / "stray.safetensors")
    with pytest.raises(PushError, match=rf"missing: \['{shard.name}'\]; not in the index: \['stray.safetensors'\]"):
        push_checkpoint(checkpoint, REPO, dry_run=True)
    (checkpoint / "stray.safetensors").rename(shard)
    config_text = (checkpoint / "config.json").read_text()
    config = json.loads(config_text)
    del config["auto_map"]["AutoModelForImageTextToText"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(PushError, match="no auto_map entry for AutoModelForImageTextToText"):
        push_checkpoint(checkpoint, REPO, dry_run=True)
    (checkpoint / "config.json").write_text(config_text)
    (checkpoint / "README.md").unlink()
    with pytest.raises(PushError, match="no model card"):
        validate_checkpoint_folder(checkpoint, REPO, load_check=False)
    with pytest.raises(PushError, match="not a Hub repo id"):
        push_checkpoint(checkpoint, "not a repo", dry_run=True)


def test_offline_or_without_token_nothing_is_sent(checkpoint, monkeypatch):
    api = RecordingHubApi()
    with pytest.raises(PushError, match="offline.*nothing was uploaded"):
        push_checkpoint(checkpoint, REPO, api=api)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(push_module, "check_remote_code_load", lambda folder: pytest.fail("checked before the token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(checkpoint.parent / "hf-home"))  # no stored token either
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(checkpoint.parent / "hf-home" / "token"))
    with pytest.raises(PushError, match="No Hugging Face token.*Nothing was uploaded"):
        push_checkpoint(checkpoint, REPO, api=api)
    assert api.calls == []


def test_push_uploads_the_validated_files_in_one_commit(checkpoint, online, monkeypatch, capsys):
    order = []
    monkeypatch.setattr(push_module, "check_remote_code_load", lambda folder: order.append("load check"))
    api = RecordingHubApi()
    original_create_repo = api.create_repo
    api.create_repo = lambda repo_id, **kwargs: (order.append("create_repo"), original_create_repo(repo_id, **kwargs))[1]
    result = push_checkpoint(checkpoint, REPO, private=True, revision="v1", commit_message="First", token="hf_x", api=api)
    assert order == ["load check", "create_repo"]
    assert api.calls == ["whoami", ("create_repo", REPO, True), ("create_branch", "v1"), ("create_commit", "v1", "First")]
    (uploaded,) = api.commits
    on_disk = {path.relative_to(checkpoint).as_posix() for path in checkpoint.rglob("*") if path.is_file()}
    assert set(uploaded) == on_disk
    assert uploaded["README.md"] == (checkpoint / "README.md").read_bytes()
    assert result.commit_oid == "abc123"
    assert "revision='abc123'" in result.describe()  # tells users of the remote code what to pin


def test_failed_upload_says_no_commit_was_made(checkpoint, online, monkeypatch):
    monkeypatch.setattr(push_module, "check_remote_code_load", lambda folder: None)
    with pytest.raises(PushError, match="No commit was made"):
        push_checkpoint(checkpoint, REPO, token="hf_x", api=RecordingHubApi(fail_commit=True))


@pytest.fixture
def hub_calls(monkeypatch):
    """transformers' push_to_hub with its Hub calls recorded instead of sent."""
    api = RecordingHubApi()
    monkeypatch.setattr(transformers_hub, "hf_api", lambda: api)
    monkeypatch.setattr(transformers_hub, "create_and_tag_model_card",
                        lambda repo_id, tags=None, token=None: ModelCard("---\nlibrary_name: transformers\n---\n"))
    return api


def test_transformers_push_to_hub_carries_the_remote_code_and_passes_push_validation(hub_calls, tmp_path, capsys):
    model, processor = tiny_m3(), tiny_processor()
    model.push_to_hub(REPO)
    processor.push_to_hub(REPO)
    model_files, processor_files = hub_calls.commits
    config = json.loads(model_files["config.json"])
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForImageTextToText"}
    for reference in config["auto_map"].values():
        assert f"{reference.split('.')[0]}.py" in model_files
    assert {"modeling_matryoshka_base.py", "token_reducers.py", "visual_token_counts.py", "model.safetensors"} <= set(model_files)
    processor_config = json.loads(processor_files["processor_config.json"])
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_matryoshka_llava.MatryoshkaLlavaProcessor"
    assert {"processing_matryoshka_llava.py", "image_processing_matryoshka_llava.py", "chat_template.jinja"} <= set(processor_files)

    # The union of both uploads is a complete checkpoint: it passes `push` validation, clean-process load included.
    folder = tmp_path / "as-uploaded"
    for files in (model_files, processor_files):
        for name, content in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
    (folder / "README.md").unlink()
    write_model_card(folder, card_inputs_for_folder(folder, repo_id=REPO, source_checkpoint="tests/tiny_models.py",
                                                    license="apache-2.0"))
    assert cli_main(["push", str(folder), REPO, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert f"Would upload {len(list(folder.iterdir()))} files" in printed
    assert "  model.safetensors  (" in printed and "Model card (README.md):" in printed and "library_name: transformers" in printed


def test_convert_with_push_to_hub_keeps_the_conversion_when_the_upload_cannot_start(sources, tmp_path, capsys):
    out = tmp_path / "pushed"
    code = cli_main(["convert", str(sources["llava"]), str(out), "--to", "m3", "--clip", str(sources["clip"]),
                     "--push-to-hub", REPO, "--no-progress"])
    assert code == 2 and (out / "config.json").is_file()
    assert f'repo = "{REPO}"' in (out / "README.md").read_text()  # the card is rendered for the target repo
    error = capsys.readouterr().err
    assert "is complete, but the upload failed" in error and "offline" in error
    assert f"matryoshka-llava push {out} {REPO}" in error
