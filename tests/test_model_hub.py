"""Checkpoints on the Hugging Face Hub: MMAR.from_pretrained("owner/name") through the Hugging Face
cache (offline, as the tests run: a cache laid out as the Hub's downloads leave it), the CLI's
--model owner/name, and push_to_hub's requests (recorded, never sent)."""

import hashlib
import os
import shutil
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from PIL import Image

from helpers_model import one_thread, tiny_model  # noqa: F401
from mmar.cli import main
from mmar.model.hub import looks_like_repo_id, resolve_checkpoint
from mmar.pipelines.mmar import MMAR

MAIN = "a" * 40  # commit hashes
TAGGED = "b" * 40


def lay_out_hub_cache(cache: Path, repo_id: str, commits: dict, refs: dict) -> Path:
    """The Hugging Face cache as snapshot_download leaves it: models--owner--name/ with blobs/
    (each file's bytes), snapshots/<commit>/... (relative symlinks to the blobs) and
    refs/<branch or tag> (a commit hash, no newline). commits: commit -> checkpoint directory."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    for commit, src in commits.items():
        for f in sorted(p for p in Path(src).rglob("*") if p.is_file()):
            data = f.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = repo / "snapshots" / commit / f.relative_to(src)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    for ref, commit in refs.items():
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 as huggingface_hub reads it (conftest sets the variable; this holds it
    even if a run sets HF_HUB_OFFLINE=0)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def cached(tmp_path, offline):
    """(cache dir, model at main, model at tag v1) of repo someone/tiny-mmar in a Hub cache."""
    models = {MAIN: tiny_model(seed=0), TAGGED: tiny_model(seed=1)}
    for commit, m in models.items():
        m.save_pretrained(tmp_path / "saved" / commit, repo_id="someone/tiny-mmar")
    cache = tmp_path / "hf-cache"
    commits = {c: tmp_path / "saved" / c for c in models}
    lay_out_hub_cache(cache, "someone/tiny-mmar", commits, {"main": MAIN, "v1": TAGGED})
    return cache, models[MAIN], models[TAGGED]


def same_model(a: MMAR, b: MMAR) -> bool:
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    if state_a.keys() != state_b.keys():
        return False
    if not all(torch.equal(state_a[k], state_b[k]) for k in state_a):
        return False
    kw = dict(num_iter=2, num_steps=2, seed=3)
    images = [a.generate_images(["digit one"], **kw), b.generate_images(["digit one"], **kw)]
    return images[0][0].tobytes() == images[1][0].tobytes()


def test_repo_id_loads_from_the_hub_cache_offline(cached):
    cache, at_main, _ = cached
    snapshot = cache / "models--someone--tiny-mmar" / "snapshots" / MAIN
    assert resolve_checkpoint("someone/tiny-mmar", cache_dir=cache) == snapshot
    assert (snapshot / "model.safetensors").is_symlink()  # read through the blob links
    loaded = MMAR.from_pretrained("someone/tiny-mmar", cache_dir=cache)
    assert same_model(loaded, at_main)


def test_revision_picks_a_tag_or_a_commit(cached):
    cache, at_main, tagged = cached
    assert same_model(
        MMAR.from_pretrained("someone/tiny-mmar", revision="v1", cache_dir=cache), tagged
    )
    by_hash = MMAR.from_pretrained("someone/tiny-mmar", revision=TAGGED, cache_dir=cache)
    assert same_model(by_hash, tagged) and not same_model(by_hash, at_main)


def test_default_cache_is_hf_hub_cache(cached, monkeypatch):
    cache, at_main, _ = cached
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # what HF_HUB_CACHE=... sets
    assert same_model(MMAR.from_pretrained("someone/tiny-mmar"), at_main)


def test_repo_id_not_cached_while_offline_raises(tmp_path, offline):
    cache = tmp_path / "empty-cache"
    with pytest.raises(FileNotFoundError) as e:
        MMAR.from_pretrained("someone/not-here", cache_dir=cache)
    message = str(e.value)
    assert message.startswith("someone/not-here is not a local directory, so it was read as a")
    assert (
        f"HF_HUB_OFFLINE=1 forbids downloads and it is not in the Hugging Face cache {cache}"
        in message
    )
    assert "`hf download someone/not-here`" in message and "unset HF_HUB_OFFLINE" in message


def test_unknown_revision_while_offline_raises(cached):
    cache, _, _ = cached
    with pytest.raises(FileNotFoundError, match=r"at revision 'v9'.*--revision v9"):
        MMAR.from_pretrained("someone/tiny-mmar", revision="v9", cache_dir=cache)


@pytest.mark.parametrize(
    "error, match",
    [
        ("repo", r"the Hub has no such repo \(or it is private or gated: log in"),
        ("revision", r"the repo has no revision 'dev'"),
        ("unreachable", r"the Hub could not be reached \(LocalEntryNotFoundError\)"),
    ],
)
def test_hub_errors_say_what_to_do_raises(monkeypatch, error, match):
    """What an online snapshot_download raises (simulated: the tests never go online)."""
    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/x"))
    exc = {
        "repo": RepositoryNotFoundError("404", response=response),
        "revision": RevisionNotFoundError("404", response=response),
        "unreachable": LocalEntryNotFoundError("no connection"),
    }[error]

    def snapshot_download(repo_id, revision=None, cache_dir=None):
        raise exc

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    with pytest.raises(FileNotFoundError, match=match):
        MMAR.from_pretrained("someone/tiny-mmar", revision="dev" if error == "revision" else None)


def test_snapshot_that_is_no_checkpoint_lists_missing_files_raises(tmp_path, offline):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "README.md").write_text("not a model")
    lay_out_hub_cache(tmp_path / "c", "someone/other", {MAIN: tmp_path / "files"}, {"main": MAIN})
    with pytest.raises(FileNotFoundError, match=r"\(Hub repo someone/other\): missing config"):
        MMAR.from_pretrained("someone/other", cache_dir=tmp_path / "c")


def test_local_paths_stay_local(tmp_path, monkeypatch, offline):
    """An existing path is read as a directory even when it looks like a repo id; a missing
    one that cannot be a repo id keeps the missing-files error; revision= is for repo ids."""
    tiny_model().save_pretrained(tmp_path / "runs" / "quickstart")
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("runs/quickstart") == Path("runs/quickstart")
    MMAR.from_pretrained("runs/quickstart")
    with pytest.raises(FileNotFoundError, match=r"runs/a/b: missing config\.json"):
        MMAR.from_pretrained("runs/a/b")
    with pytest.raises(ValueError, match="revision='v1' applies to a Hugging Face Hub repo id"):
        MMAR.from_pretrained("runs/quickstart", revision="v1")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("owner/name", True),
        ("Org-1/model.v2_x", True),
        ("runs/quickstart", True),  # looks like one: read from the Hub unless the path exists
        ("name", False),  # mmar asks for the owner
        ("a/b/c", False),
        ("/abs/path", False),
        ("./x", False),
        ("owner/", False),
        ("owner/na--me", False),
        ("owner/na..me", False),
        ("owner/-name", False),
        (Path("owner/name"), False),  # a Path is a path
    ],
)
def test_looks_like_repo_id(name, expected):
    assert looks_like_repo_id(name) == expected


def test_cli_model_reads_a_repo_id(cached, tmp_path, monkeypatch, capsys):
    cache, _, _ = cached
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    out = tmp_path / "out"
    argv = ["generate", "--model", "someone/tiny-mmar", "--prompt", "digit one", "--out", str(out)]
    assert main([*argv, "--num-iter", "2", "--num-steps", "2", "--device", "cpu"]) == 0
    assert Image.open(out / "p000_s000.png").size == (8, 8)
    capsys.readouterr()
    assert main([*argv[:2], "someone/not-here", *argv[3:], "--force"]) == 2
    err = capsys.readouterr().err
    assert "mmar generate: --model someone/not-here is not a local directory" in err
    assert "HF_HUB_OFFLINE=1 forbids downloads" in err


@pytest.fixture
def recorded_hub(monkeypatch, tmp_path):
    """HfApi.create_repo / upload_folder replaced by recorders: their arguments, the token the
    HfApi was made with, and a copy of the uploaded folder (gone once push_to_hub returns)."""
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs, self.token))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*"))
        shutil.copytree(folder_path, tmp_path / "uploaded")
        calls.append(("upload_folder", repo_id, {"folder_path": folder_path, **kwargs}, files))
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_to_hub_uploads_the_saved_directory(recorded_hub, tmp_path):
    model = tiny_model()
    out = model.push_to_hub(
        "someone/tiny-mmar",
        private=True,
        commit_message="first",
        token="hf_test",
        metrics={"t2i_accuracy": 0.25},
        samples=Image.new("L", (16, 8), 128),
    )
    assert out == "commit-info"
    (create, repo_id, kwargs, token), upload = recorded_hub
    assert (create, repo_id, kwargs, token) == (
        "create_repo",
        "someone/tiny-mmar",
        {"exist_ok": True, "private": True},
        "hf_test",
    )
    assert upload[:2] == ("upload_folder", "someone/tiny-mmar")
    assert upload[2]["commit_message"] == "first"
    files = upload[3]
    assert {"README.md", "config.json", "model.safetensors", "metrics.json", "samples.png"} <= set(
        files
    )
    assert "backbone/config.json" in files and "tokenizer/tokenizer.json" in files
    assert not Path(upload[2]["folder_path"]).exists()  # the temporary directory is removed
    uploaded = tmp_path / "uploaded"
    card = (uploaded / "README.md").read_text()
    assert 'mmar.MMAR.from_pretrained("someone/tiny-mmar")' in card
    assert "| t2i_accuracy | 0.25 |" in card
    assert same_model(MMAR.from_pretrained(uploaded), model)


def test_push_to_hub_defaults_and_bad_repo_id_raises(recorded_hub):
    model = tiny_model()
    model.push_to_hub("someone/tiny-mmar")
    (_, _, kwargs, token), upload = recorded_hub
    assert kwargs == {"exist_ok": True, "private": None} and token is None
    assert "metrics.json" not in upload[3] and "samples.png" not in upload[3]
    recorded_hub.clear()
    with pytest.raises(ValueError, match="repo_id must be a Hugging Face Hub repo id owner/name"):
        model.push_to_hub("not a repo")
    assert recorded_hub == []  # refused before any request
