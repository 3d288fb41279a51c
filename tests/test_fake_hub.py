"""The fake Hub (tests/fake_hub.py) against the real huggingface_hub client: what the model downloader relies on."""

from __future__ import annotations

import hashlib
import io
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from tqdm import tqdm

from fake_hub import FakeHub

REPO = "org/model"
CONFIG = b'{"hidden_size": 8}\n'
WEIGHTS = bytes(range(256)) * 4096  # 1 MiB, LFS by suffix
BIG = os.urandom(16 * 1024 * 1024)  # LFS by suffix; bigger than huggingface_hub's 10 MiB download chunk


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    sha = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()


@pytest.fixture(autouse=True)
def _no_ambient_hub_settings(monkeypatch, tmp_path_factory):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # Even with local_dir=, snapshot_download records refs/<revision> in the HF cache: keep it out of ~/.cache.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))


@pytest.fixture
def hub():
    with FakeHub(tokens={"hf_test"}) as hub:
        hub.commit = hub.add_repo(
            REPO, {"config.json": CONFIG, "model.safetensors": WEIGHTS, "big.safetensors": BIG, "sub/notes.txt": b"hi"}
        )
        yield hub
        assert hub.errors == []


def test_model_info_lists_sizes_blob_ids_and_sha256(hub):
    info = HfApi(endpoint=hub.url).model_info(REPO, revision="main", files_metadata=True, token=False)
    assert info.id == REPO
    assert info.sha == hub.commit
    assert info.private is False
    assert info.gated is False
    siblings = {s.rfilename: s for s in info.siblings}
    assert sorted(siblings) == ["big.safetensors", "config.json", "model.safetensors", "sub/notes.txt"]

    config = siblings["config.json"]
    assert (config.size, config.blob_id, config.lfs) == (len(CONFIG), git_blob_oid(CONFIG), None)

    weights = siblings["model.safetensors"]
    assert weights.size == len(WEIGHTS)
    assert weights.blob_id == git_blob_oid(lfs_pointer(WEIGHTS))  # the pointer's oid, as on the Hub
    assert weights.lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert weights.lfs.size == len(WEIGHTS)
    assert weights.lfs.pointer_size == len(lfs_pointer(WEIGHTS))

    request = hub.requests[-1]
    assert request.path == f"/api/models/{REPO}/revision/main"
    assert "blobs=true" in request.query


def test_model_info_without_revision_or_files_metadata(hub):
    info = HfApi(endpoint=hub.url).model_info(REPO, token=False)
    assert info.sha == hub.commit
    assert hub.requests[-1].path == f"/api/models/{REPO}"
    assert all(s.size is None and s.lfs is None for s in info.siblings)  # the Hub only sends them with blobs=true


def test_file_metadata_for_plain_and_lfs_files(hub):
    plain_url = hf_hub_url(REPO, "config.json", revision=hub.commit, endpoint=hub.url)
    plain = get_hf_file_metadata(plain_url, token="hf_test")
    assert plain.etag == git_blob_oid(CONFIG)
    assert plain.size == len(CONFIG)
    assert plain.commit_hash == hub.commit
    assert plain.location == plain_url
    assert plain.xet_file_data is None

    lfs_url = hf_hub_url(REPO, "model.safetensors", revision=hub.commit, endpoint=hub.url)
    lfs = get_hf_file_metadata(lfs_url, token="hf_test")
    assert lfs.etag == hashlib.sha256(WEIGHTS).hexdigest()
    assert lfs.size == len(WEIGHTS)
    assert lfs.commit_hash == hub.commit
    assert lfs.location.startswith(f"{hub.cdn_url}/cdn/{lfs.etag}?")
    assert lfs.xet_file_data is None

    # The CDN is another origin, so the client stops at the 302: no HEAD reaches the CDN.
    assert [(r.method, r.server, r.status) for r in hub.requests] == [("HEAD", "hub", 200), ("HEAD", "hub", 302)]
    assert all(r.authorization == "Bearer hf_test" for r in hub.requests)


def test_hf_hub_download_to_local_dir(hub, tmp_path):
    for name, content in [("config.json", CONFIG), ("model.safetensors", WEIGHTS), ("sub/notes.txt", b"hi")]:
        path = hf_hub_download(REPO, name, endpoint=hub.url, local_dir=tmp_path, token="hf_test")
        assert Path(path) == tmp_path / name
        assert Path(path).read_bytes() == content

    cdn_gets = [r for r in hub.requests if r.server == "cdn"]
    assert [(r.method, r.file, r.status) for r in cdn_gets] == [("GET", "model.safetensors", 200)]
    assert cdn_gets[0].authorization is None  # hf_hub_download drops the token for a CDN on another origin
    plain_get = hub.content_gets("config.json")[0]
    assert (plain_get.server, plain_get.authorization) == ("hub", "Bearer hf_test")


def test_snapshot_download(hub, tmp_path):
    snapshot_download(REPO, endpoint=hub.url, local_dir=tmp_path, token=False)
    assert (tmp_path / "config.json").read_bytes() == CONFIG
    assert (tmp_path / "big.safetensors").read_bytes() == BIG
    assert (tmp_path / "sub" / "notes.txt").read_bytes() == b"hi"


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_http_get_resumes_a_partial_file_with_range(hub, tmp_path, name):
    content = hub.blob(REPO, name).source
    metadata = get_hf_file_metadata(hf_hub_url(REPO, name, revision=hub.commit, endpoint=hub.url), token="hf_test")
    partial = tmp_path / name
    done = len(content) // 3
    partial.write_bytes(content[:done])
    headers = {} if metadata.location.startswith(hub.cdn_url) else {"authorization": "Bearer hf_test"}
    with partial.open("ab") as f:
        http_get(metadata.location, f, resume_size=done, headers=headers, expected_size=metadata.size, tqdm_class=tqdm)
    assert partial.read_bytes() == content
    (get,) = hub.content_gets(name)
    assert (get.range, get.status, get.body_bytes) == (f"bytes={done}-", 206, len(content) - done)


def test_truncated_download_is_resumed_by_http_get(hub):
    hub.truncate("big.safetensors", after_bytes=12 * 1024 * 1024)
    metadata = get_hf_file_metadata(hf_hub_url(REPO, "big.safetensors", revision=hub.commit, endpoint=hub.url))
    buffer = io.BytesIO()
    http_get(metadata.location, buffer, expected_size=metadata.size)
    assert buffer.getvalue() == BIG
    first, second = hub.content_gets("big.safetensors")
    assert (first.range, first.status, first.body_bytes) == (None, 200, 12 * 1024 * 1024)
    # httpx hands out 10 MiB chunks: the 2 MiB already received past the first chunk are lost and fetched again.
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    assert (second.range, second.status, second.body_bytes) == (f"bytes={chunk}-", 206, len(BIG) - chunk)


def test_truncation_inside_the_first_chunk_restarts_without_range(hub):
    hub.truncate("model.safetensors", after_bytes=1000)
    metadata = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", revision=hub.commit, endpoint=hub.url))
    buffer = io.BytesIO()
    http_get(metadata.location, buffer, expected_size=metadata.size)
    assert buffer.getvalue() == WEIGHTS
    assert [(r.range, r.body_bytes) for r in hub.content_gets("model.safetensors")] == [
        (None, 1000),
        (None, len(WEIGHTS)),
    ]


def test_pr_revision_by_name_and_by_sha(hub, tmp_path):
    pr_commit = hub.add_repo(REPO, {"config.json": b'{"hidden_size": 16}\n'}, revision="refs/pr/1")
    api = HfApi(endpoint=hub.url)
    info = api.model_info(REPO, revision="refs/pr/1", files_metadata=True, token=False)
    assert info.sha == pr_commit
    assert [s.rfilename for s in info.siblings] == ["config.json"]
    assert hub.requests[-1].path == f"/api/models/{REPO}/revision/refs%2Fpr%2F1"
    assert api.model_info(REPO, revision=pr_commit, token=False).sha == pr_commit
    assert api.model_info(REPO, revision="main", token=False).sha == hub.commit

    metadata = get_hf_file_metadata(hf_hub_url(REPO, "config.json", revision="refs/pr/1", endpoint=hub.url))
    assert hub.requests[-1].path == f"/{REPO}/resolve/refs%2Fpr%2F1/config.json"
    assert (metadata.commit_hash, metadata.size) == (pr_commit, 20)

    path = hf_hub_download(REPO, "config.json", revision="refs/pr/1", endpoint=hub.url, local_dir=tmp_path / "a")
    assert Path(path).read_bytes() == b'{"hidden_size": 16}\n'
    path = hf_hub_download(REPO, "config.json", revision=pr_commit, endpoint=hub.url, local_dir=tmp_path / "b")
    assert Path(path).read_bytes() == b'{"hidden_size": 16}\n'
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "model.safetensors", revision="refs/pr/1", endpoint=hub.url, local_dir=tmp_path / "c")


def test_gated_repo_needs_a_valid_token(hub, tmp_path):
    hub.add_repo("org/gated", {"model.safetensors": WEIGHTS}, gated=True)
    url = hf_hub_url("org/gated", "model.safetensors", endpoint=hub.url)
    # Like on the Hub, the repo's metadata stays readable without a token.
    assert HfApi(endpoint=hub.url).model_info("org/gated", files_metadata=True, token=False).gated == "auto"

    for token in (False, "hf_wrong"):
        with pytest.raises(GatedRepoError) as excinfo:
            get_hf_file_metadata(url, token=token)
        assert excinfo.value.response.status_code == 401
        with pytest.raises(GatedRepoError):
            hf_hub_download("org/gated", "model.safetensors", endpoint=hub.url, local_dir=tmp_path, token=token)

    assert get_hf_file_metadata(url, token="hf_test").size == len(WEIGHTS)
    path = hf_hub_download("org/gated", "model.safetensors", endpoint=hub.url, local_dir=tmp_path, token="hf_test")
    assert Path(path).read_bytes() == WEIGHTS


def test_unknown_tokens_can_be_rejected_like_the_hub_does():
    with FakeHub(tokens={"hf_test"}, reject_unknown_tokens=True) as hub:
        hub.add_repo(REPO, {"config.json": CONFIG})
        with pytest.raises(HfHubHTTPError) as excinfo:
            HfApi(endpoint=hub.url).model_info(REPO, token="hf_wrong")
        assert excinfo.value.response.status_code == 401
        assert not isinstance(excinfo.value, RepositoryNotFoundError)
        assert HfApi(endpoint=hub.url).model_info(REPO, token="hf_test").id == REPO


def test_not_found_errors(hub, tmp_path):
    api = HfApi(endpoint=hub.url)
    with pytest.raises(RepositoryNotFoundError) as excinfo:
        api.model_info("org/missing", token=False)
    assert excinfo.value.response.status_code == 401  # anonymous: the Hub says 401 for a missing repo
    with pytest.raises(RepositoryNotFoundError) as excinfo:
        api.model_info("org/missing", token="hf_test")
    assert excinfo.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        get_hf_file_metadata(hf_hub_url("org/missing", "config.json", endpoint=hub.url), token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json", endpoint=hub.url, local_dir=tmp_path, token=False)

    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="nope", token=False)
    with pytest.raises(RevisionNotFoundError):
        get_hf_file_metadata(hf_hub_url(REPO, "config.json", revision="nope", endpoint=hub.url))

    with pytest.raises(RemoteEntryNotFoundError) as excinfo:
        get_hf_file_metadata(hf_hub_url(REPO, "nope.bin", endpoint=hub.url))
    assert isinstance(excinfo.value, EntryNotFoundError)
    assert excinfo.value.response.headers["X-Repo-Commit"] == hub.commit
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "nope.bin", endpoint=hub.url, local_dir=tmp_path)


def test_fail_fault_answers_the_status_once(hub):
    hub.fail("model.safetensors", status=503)
    metadata = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", revision=hub.commit, endpoint=hub.url))
    with pytest.raises(HfHubHTTPError) as excinfo:  # http_get only retries 408 and 429
        http_get(metadata.location, io.BytesIO(), expected_size=metadata.size)
    assert excinfo.value.response.status_code == 503
    buffer = io.BytesIO()
    http_get(metadata.location, buffer, expected_size=metadata.size)
    assert buffer.getvalue() == WEIGHTS
    assert [r.status for r in hub.content_gets("model.safetensors")] == [503, 200]

    hub.fail("config.json", status=500, method="HEAD")
    with pytest.raises(HfHubHTTPError) as excinfo:
        get_hf_file_metadata(hf_hub_url(REPO, "config.json", endpoint=hub.url))
    assert excinfo.value.response.status_code == 500
    assert get_hf_file_metadata(hf_hub_url(REPO, "config.json", endpoint=hub.url)).size == len(CONFIG)


def test_corrupt_serves_other_bytes_of_the_same_size(hub):
    hub.corrupt("model.safetensors")
    metadata = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", revision=hub.commit, endpoint=hub.url))
    buffer = io.BytesIO()
    http_get(metadata.location, buffer, expected_size=metadata.size)
    assert len(buffer.getvalue()) == len(WEIGHTS)
    assert hashlib.sha256(buffer.getvalue()).hexdigest() != metadata.etag


def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET"):
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_ranges_on_cdn_and_plain_files(hub):
    cdn = hub.cdn_location(REPO, "model.safetensors")
    status, headers, body = fetch(cdn, {"Range": "bytes=10-19"})
    assert (status, headers["Content-Range"], headers["Content-Length"], body) == (
        206,
        f"bytes 10-19/{len(WEIGHTS)}",
        "10",
        WEIGHTS[10:20],
    )
    status, headers, body = fetch(cdn, {"Range": "bytes=-5"})
    assert (status, headers["Content-Range"], body) == (
        206,
        f"bytes {len(WEIGHTS) - 5}-{len(WEIGHTS) - 1}/{len(WEIGHTS)}",
        WEIGHTS[-5:],
    )
    status, headers, _ = fetch(cdn, {"Range": f"bytes={len(WEIGHTS)}-"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{len(WEIGHTS)}")
    status, headers, body = fetch(cdn)
    assert (status, headers["Accept-Ranges"], body) == (200, "bytes", WEIGHTS)
    assert not any(name.lower().startswith("x-xet") for name in headers)

    plain = hf_hub_url(REPO, "config.json", endpoint=hub.url)
    status, headers, body = fetch(plain, {"Range": "bytes=2-"})
    assert (status, headers["Content-Range"], body) == (206, f"bytes 2-{len(CONFIG) - 1}/{len(CONFIG)}", CONFIG[2:])
    assert headers["ETag"] == f'"{git_blob_oid(CONFIG)}"'
    assert headers["X-Repo-Commit"] == hub.commit


def test_lfs_resolve_redirect_headers(hub):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(hf_hub_url(REPO, "model.safetensors", endpoint=hub.url), method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        opener.open(request, timeout=10)
    headers = excinfo.value.headers
    assert excinfo.value.code == 302
    sha256 = hashlib.sha256(WEIGHTS).hexdigest()
    assert headers["X-Linked-Etag"] == f'"{sha256}"'
    assert headers["X-Linked-Size"] == str(len(WEIGHTS))
    assert headers["X-Repo-Commit"] == hub.commit
    assert headers["ETag"] == f'"{git_blob_oid(lfs_pointer(WEIGHTS))}"'
    assert headers["Location"].startswith(f"{hub.cdn_url}/cdn/{sha256}?")


def test_httpx_drops_the_token_when_following_the_redirect_itself(hub):
    buffer = io.BytesIO()
    url = hf_hub_url(REPO, "model.safetensors", endpoint=hub.url)
    http_get(url, buffer, headers={"authorization": "Bearer hf_test"})
    assert buffer.getvalue() == WEIGHTS
    resolve, cdn = hub.requests
    assert (resolve.server, resolve.status, resolve.authorization) == ("hub", 302, "Bearer hf_test")
    assert (cdn.server, cdn.status, cdn.authorization) == ("cdn", 200, None)


def test_signed_cdn_urls(hub):
    metadata = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", endpoint=hub.url))
    assert fetch(metadata.location.replace("Signature=", "Signature=0"))[0] == 403
    hub.expire_cdn_urls()
    with pytest.raises(HfHubHTTPError) as excinfo:
        http_get(metadata.location, io.BytesIO(), expected_size=metadata.size)
    assert excinfo.value.response.status_code == 403
    fresh = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", endpoint=hub.url))
    assert fetch(fresh.location)[0] == 200

    with FakeHub(reject_auth_on_cdn=True) as strict:
        strict.add_repo(REPO, {"model.safetensors": WEIGHTS})
        location = strict.cdn_location(REPO, "model.safetensors")
        assert fetch(location, {"Authorization": "Bearer hf_test"})[0] == 400
        assert fetch(location)[0] == 200


def test_files_from_disk_and_lfs_by_size(hub, tmp_path):
    big = tmp_path / "big.dat"
    big.write_bytes(BIG[: 11 * 1024 * 1024])  # > 10 MiB: LFS whatever its name
    small = tmp_path / "small.dat"
    small.write_bytes(b"x" * 100)
    commit = hub.add_repo("org/disk", {"weights/big.dat": big, "small.dat": small})
    siblings = {s.rfilename: s for s in HfApi(endpoint=hub.url).model_info("org/disk", files_metadata=True).siblings}
    assert siblings["weights/big.dat"].lfs.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert siblings["small.dat"].lfs is None
    out = hf_hub_download("org/disk", "weights/big.dat", revision=commit, endpoint=hub.url, local_dir=tmp_path / "out")
    assert Path(out).read_bytes() == big.read_bytes()


def test_throttle_slows_content_down(hub):
    hub.throttle(1024 * 1024)  # 1 MiB/s
    location = hub.cdn_location(REPO, "model.safetensors")
    started = time.monotonic()
    status, _, body = fetch(location, {"Range": "bytes=0-262143"})  # 256 KiB
    assert (status, body) == (206, WEIGHTS[:262144])
    assert time.monotonic() - started >= 0.15  # 0.25 s at 1 MiB/s, less the last 64 KiB piece's pause
    hub.throttle(None)


def test_commit_sha_is_deterministic(hub):
    with FakeHub() as other:
        files = {"config.json": CONFIG, "model.safetensors": WEIGHTS, "big.safetensors": BIG, "sub/notes.txt": b"hi"}
        assert other.add_repo(REPO, files) == hub.commit
        assert other.add_repo(REPO, files, revision="dev") != hub.commit
