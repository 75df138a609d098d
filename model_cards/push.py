"""`push_checkpoint`: validate a checkpoint folder, then upload it to the Hub in a single commit.

Nothing is uploaded unless every check passes; without a token or with the Hub offline it stops before any
network call. The upload is one `create_commit` (large files go through the library's LFS upload), so a failure
leaves the repo's history unchanged.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import PushError
from .folder_validation import FolderContents, check_remote_code_load, validate_checkpoint_folder

REPO_ID = re.compile(r"^([A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


@dataclass
class PushResult:
    contents: FolderContents
    repo_id: str
    revision: str | None
    commit_message: str
    dry_run: bool
    commit_url: str | None = None
    commit_oid: str | None = None

    def describe(self) -> str:
        total = sum(size for _, size in self.contents.files)
        where = f"{self.repo_id}" + (f" (branch {self.revision})" if self.revision else "")
        lines = [(f"{'Would upload' if self.dry_run else 'Uploaded'} {len(self.contents.files)} files "
                  f"({total / 2**20:.1f} MiB) to {where} in one commit: {self.commit_message!r}")]
        lines += [f"  {name}  ({size:,} bytes)" for name, size in self.contents.files]
        if self.contents.left_out:
            lines.append("Left out (earlier results the card no longer shows, training checkpoints and logs): "
                         + ", ".join(self.contents.left_out))
        if self.dry_run:
            lines += ["", "Model card (README.md):", "", self.contents.card]
        else:
            lines += [f"Commit: {self.commit_url}",
                      (f"Users of the remote code should pin it: from_pretrained({self.repo_id!r}, "
                       f"trust_remote_code=True, revision={self.commit_oid!r})")]
        return "\n".join(lines)


def check_credentials(token: str | None) -> str:
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise PushError("The Hub is offline (HF_HUB_OFFLINE is set): nothing was uploaded. Unset it to push.")
    token = token or get_token()
    if not token:
        raise PushError("No Hugging Face token: run `hf auth login` or set HF_TOKEN. Nothing was uploaded.")
    return token


def push_checkpoint(folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
                    commit_message: str | None = None, dry_run: bool = False, token: str | None = None,
                    api=None) -> PushResult:
    """Validate `folder` (see `validate_checkpoint_folder`) and upload it to `repo_id` in one commit.

    Args:
        revision: a branch to commit to (created if missing); default the main branch.
        dry_run: validate and return what would be uploaded, without any network call.
        api: the `huggingface_hub.HfApi` to use (default: a new one with `token`).
    """
    if not REPO_ID.match(repo_id):
        raise PushError(f"{repo_id!r} is not a Hub repo id (name or owner/name).")
    folder = Path(folder)
    contents = validate_checkpoint_folder(folder, repo_id, load_check=False)
    if not dry_run:
        token = check_credentials(token)  # before the slow load check: fail fast without a token
    check_remote_code_load(folder)
    message = commit_message or f"Upload {folder.name} with matryoshka-llava"
    result = PushResult(contents, repo_id, revision, message, dry_run)
    if dry_run:
        return result

    from huggingface_hub import CommitOperationAdd, HfApi

    api = api or HfApi(token=token)
    try:
        api.whoami()
    except Exception as error:  # network down, token rejected: nothing has been sent yet
        raise PushError(f"Cannot reach the Hub with this token ({type(error).__name__}: {error}). "
                        "Nothing was uploaded.") from error
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
                      for name, _ in contents.files]
        commit = api.create_commit(repo_id, operations=operations, commit_message=message, revision=revision)
    except Exception as error:
        raise PushError(f"The upload to {repo_id} failed ({type(error).__name__}: {error}). No commit was made, "
                        "so the repo's files are unchanged; run the push again.") from error
    result.repo_id, result.commit_url, result.commit_oid = repo_id, commit.commit_url, commit.oid
    return result
