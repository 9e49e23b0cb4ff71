"""A checkpoint named by a Hugging Face Hub repo id ("owner/name"), resolved to a local directory.

    resolve_checkpoint("runs/quickstart")       # an existing local directory: returned as it is
    resolve_checkpoint("owner/mnist-mmar")      # ~/.cache/huggingface/hub/models--owner--mnist-
                                                # mmar/snapshots/<commit>/ (downloaded if needed)

A name that is an existing path is local, whatever it looks like. Otherwise a name of the form
``owner/name`` (one "/", the Hub's characters: letters, digits, "-", "_", ".") is a Hub repo,
fetched with ``huggingface_hub.snapshot_download``: it honours ``HF_HUB_OFFLINE`` (then only the
cache is read), ``HF_HUB_CACHE`` / ``cache_dir``, ``HF_TOKEN`` and ``revision`` (a branch, tag or
commit hash). Anything else is returned as a path, so that the caller's "missing files" error
names it. A repo that cannot be had raises FileNotFoundError saying why (offline and not cached,
no such repo, no such revision, Hub unreachable) and how to fix it.
"""

from __future__ import annotations

import re
from pathlib import Path

from mmar._versions import require

# owner/name: the Hub's rules (huggingface_hub.utils.validate_repo_id) with the owner required
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID = re.compile(rf"{_PART}/{_PART}")


def looks_like_repo_id(name: str | Path) -> bool:
    """True for a string ``owner/name`` the Hub accepts as a model repo id ("--" and ".." are
    refused, as the Hub refuses them); a ``Path`` never is one."""
    return (
        isinstance(name, str)
        and REPO_ID.fullmatch(name) is not None
        and ".." not in name
        and "--" not in name
    )


def is_hub_name(name: str | Path) -> bool:
    """True when ``name`` is read from the Hub: it looks like a repo id and no path of that name
    exists here."""
    return looks_like_repo_id(name) and not Path(name).exists()


def resolve_checkpoint(
    name: str | Path, revision: str | None = None, cache_dir: str | Path | None = None
) -> Path:
    """The local directory of checkpoint ``name``: the path itself, or the snapshot of Hub repo
    ``name`` at ``revision`` (default: main) in ``cache_dir`` (default: ``HF_HUB_CACHE``).

    ValueError: ``revision`` given for a local path. FileNotFoundError: the repo cannot be had
    (the message says why and what to do).
    """
    if not is_hub_name(name):
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} applies to a Hugging Face Hub repo id (owner/name), but "
                f"{name} is a local path; leave revision out, or give a repo id"
            )
        return Path(name)
    return _snapshot(str(name), revision, cache_dir)


def _snapshot(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> Path:
    require("huggingface-hub")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    at = f" at revision {revision!r}" if revision is not None else ""
    head = f"{repo_id} is not a local directory, so it was read as a Hugging Face Hub repo id{at}"
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir))
    except RevisionNotFoundError:
        raise FileNotFoundError(
            f"{head}: the repo has no revision {revision!r}; give a branch, tag or commit hash "
            "it has, or leave revision out (main)"
        ) from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"{head}, and the Hub has no such repo (or it is private or gated: log in with "
            "`hf auth login` or set HF_TOKEN); give a checkpoint directory, e.g. runs/quickstart, "
            "or an existing repo id"
        ) from None
    except IncompleteSnapshotError as e:  # its message names the missing files
        raise FileNotFoundError(f"{head}: {e}") from None
    except LocalEntryNotFoundError as e:
        fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
        if constants.HF_HUB_OFFLINE:
            why = (
                f"HF_HUB_OFFLINE=1 forbids downloads and it is not in the Hugging Face cache "
                f"{cache}: download it first (`{fetch}`) or unset HF_HUB_OFFLINE, or give a "
                "checkpoint directory, e.g. runs/quickstart"
            )
        else:
            why = (
                f"the Hub could not be reached ({type(e).__name__}) and it is not in the Hugging "
                f"Face cache {cache}: check the connection, or give a checkpoint directory, e.g. "
                "runs/quickstart"
            )
        raise FileNotFoundError(f"{head}, but {why}") from None
