"""The download client against hw_sim.cloud over real HTTPS: ETag, Range resume, limits, faults."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from agent.sync.download import DownloadError, Fetcher, FetchSettings
from hw_sim.cloud import SimCloud

SIZE = 3 * 1024 * 1024 + 17


@pytest.fixture
def cloud(tmp_path):
    root = tmp_path / "cloud"
    (root / "1").mkdir(parents=True)
    data = os.urandom(SIZE)
    (root / "1" / "model.bin").write_bytes(data)
    (root / "1" / "manifest.json").write_bytes(b'{"v": 1}')
    with SimCloud(root, tls=True) as server:
        server.publish(1)
        server.data = data
        server.sha = hashlib.sha256(data).hexdigest()
        yield server


def fetcher(cloud, **settings) -> Fetcher:
    return Fetcher(FetchSettings(ca_bundle=cloud.ca_file, backoff_s=0.05, **settings))


def download(cloud, dest, **settings):
    with fetcher(cloud, **settings) as f:
        f.download(cloud.base_url + "1/model.bin", dest, SIZE, cloud.sha, deadline=time.monotonic() + 60)
        return f


def test_manifest_with_etag_is_not_sent_again(cloud):
    with fetcher(cloud) as f:
        first = f.get_manifest(cloud.url)
        assert first.body == b'{"v": 1}' and first.etag
        assert f.get_manifest(cloud.url, first.etag).body is None  # 304
        cloud.set_manifest(b'{"v": 2}')
        assert f.get_manifest(cloud.url, first.etag).body == b'{"v": 2}'
    assert [r.status for r in cloud.requests_for("/manifest.json")] == [200, 304, 200]


def test_tls_needs_the_servers_ca(cloud):
    with Fetcher(FetchSettings(retries=0)) as f, pytest.raises(DownloadError, match="TLS failed.*ca_bundle") as error:
        f.get_manifest(cloud.url)
    assert error.value.code == "network"


def test_a_truncated_download_resumes_with_a_range_request(cloud, tmp_path):
    cloud.inject("truncate", count=2, path="/1/model.bin")
    dest = tmp_path / "model.bin"
    f = download(cloud, dest)
    assert dest.read_bytes() == cloud.data
    ranges = [r.range for r in cloud.requests_for("/1/model.bin")]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and len(ranges) == 3
    assert f.resumes == 2 and f.bytes_downloaded == SIZE  # nothing fetched twice


def test_a_server_that_ignores_range_is_read_again_from_the_start(cloud, tmp_path):
    cloud.inject("truncate", path="/1/model.bin")
    cloud.inject("ignore_range", path="/1/model.bin")
    dest = tmp_path / "model.bin"
    download(cloud, dest)
    assert dest.read_bytes() == cloud.data


def test_500s_are_retried_then_given_up(cloud, tmp_path):
    cloud.inject("http_500", count=2, path="/1/model.bin")
    download(cloud, tmp_path / "a.bin")
    cloud.inject("http_500", count=10, path="/1/model.bin")
    with pytest.raises(DownloadError, match="HTTP 500.*after 3 attempts") as error:
        download(cloud, tmp_path / "b.bin", retries=2)
    assert error.value.code == "network"


def test_a_wrong_hash_is_refused_and_the_file_removed(cloud, tmp_path):
    cloud.inject("wrong_hash", count=5, path="/1/model.bin")
    dest = tmp_path / "model.bin"
    with pytest.raises(DownloadError, match="sha256") as error:
        download(cloud, dest)
    assert error.value.code == "bad_hash" and not dest.exists()


def test_a_resumed_file_with_a_wrong_hash_is_fetched_once_more_from_scratch(cloud, tmp_path):
    dest = tmp_path / "model.bin"
    dest.write_bytes(os.urandom(1000))  # a stale partial file from another version
    download(cloud, dest)
    assert dest.read_bytes() == cloud.data
    assert [r.range for r in cloud.requests_for("/1/model.bin")] == ["bytes=1000-", None]


def test_size_limits(cloud, tmp_path):
    with fetcher(cloud) as f, pytest.raises(DownloadError, match="more than the manifest's") as error:
        f.download(cloud.base_url + "1/model.bin", tmp_path / "x", SIZE - 1, cloud.sha, time.monotonic() + 60)
    assert error.value.code == "too_large"
    cloud.set_manifest(b"x" * 5000)
    with fetcher(cloud, max_manifest_bytes=4096) as f, pytest.raises(DownloadError, match="limit is 4096"):
        f.get_manifest(cloud.url)


def test_a_slow_server_runs_into_the_deadline_and_stop_interrupts(cloud, tmp_path):
    cloud.inject("slow", count=5, path="/1/model.bin", rate=100_000)
    with fetcher(cloud) as f, pytest.raises(DownloadError, match="not downloaded in time") as error:
        f.download(cloud.base_url + "1/model.bin", tmp_path / "x", SIZE, cloud.sha, time.monotonic() + 1.0)
    assert error.value.code == "timeout"
    stop = threading.Event()
    cloud.inject("slow", count=5, path="/1/model.bin", rate=100_000)
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with Fetcher(FetchSettings(ca_bundle=cloud.ca_file), stop) as f, pytest.raises(DownloadError) as error:
        f.download(cloud.base_url + "1/model.bin", tmp_path / "y", SIZE, cloud.sha, time.monotonic() + 60)
    assert error.value.code == "stopped"
    print(f"\nstopped {time.monotonic() - started - 0.5:.2f} s after the stop event")
    assert time.monotonic() - started < 10  # generous: it stops at the next 64 KiB chunk


def test_a_missing_file_is_a_final_http_error(cloud, tmp_path):
    with fetcher(cloud) as f, pytest.raises(DownloadError, match="HTTP 404") as error:
        f.download(cloud.base_url + "1/nope.bin", tmp_path / "x", 10, "0" * 64, time.monotonic() + 60)
    assert error.value.code == "http_error"
    assert len(cloud.requests_for("/1/nope.bin")) == 1  # not retried
