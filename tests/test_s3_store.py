"""The store layer (shards/store.h, shards/s3_client.h) against a real S3-compatible server.

moto's standalone server runs on 127.0.0.1; every request of the client under test goes
through `SigV4Proxy` (tests/s3_server.py), which recomputes the AWS Signature V4 with
botocore and rejects mismatches with 403, and which injects faults (503 SlowDown, 500,
connection resets, truncated bodies, slow answers). Reference reads and listings go to
moto directly with boto3. Every run of the tool is checked for the secret (and the
session token) on stdout/stderr.
"""
import hashlib
import os
import time
import tarfile

import pytest

from conftest import run, tool
from s3_server import (ACCESS_KEY, SECRET_KEY, SigV4Proxy, bucket,  # noqa: F401 (fixtures)
                       client_env, direct, moto, proxy)

TOKEN = "FQoGZXIvYXdzEPmTokenValue/ForTests+0123456789=="
MiB = 1 << 20


def store_tool(args, env, check=True):
    r = run([tool("pm_store_tool"), "--backoff", "0.01", *args], check=check, env=env,
            timeout=120)
    for secret in (SECRET_KEY, env.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY), TOKEN,
                   SECRET_KEY[8:20]):
        assert secret not in r.stdout and secret not in r.stderr, "a credential was printed"
    return r


def data_file(tmp_path, name, size, seed=1):
    # deterministic, incompressible-looking bytes
    out = bytearray()
    block = hashlib.sha256(f"{seed}".encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    p = tmp_path / name
    p.write_bytes(bytes(out[:size]))
    return p


def uploads(direct, bucket):
    return direct.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_single_put_limit(proxy, direct, bucket, tmp_path):
    """Without --part-size an object below the single-PUT limit (store.h put_max, 64 MiB by
    default) goes up as one PUT, however it is written; past the limit the writer switches
    to a multipart upload. The limit is lowered with --put-max to keep the test small."""
    env = client_env(proxy)
    mid = data_file(tmp_path, "mid", 20 * MiB + 7, seed=3)  # above the 16 MiB part size
    store_tool(["--chunk", str(MiB), "put", f"s3://{bucket}/d/mid.bin", mid], env)
    assert [e[0] for e in proxy.log if e[2]] == [], "a multipart request for a 20 MiB object"
    assert [e[0] for e in proxy.log if e[0] == "PUT"] == ["PUT"]
    big = data_file(tmp_path, "big", 7 * MiB + 3, seed=4)
    proxy.clear()
    store_tool(["--put-max", str(6 * MiB), "--chunk", str(MiB), "put",
                f"s3://{bucket}/d/big.bin", big], env)
    assert sum(e[0] == "POST" and e[2].startswith("uploads") for e in proxy.log) == 1
    assert sum(e[0] == "PUT" and "partNumber=" in e[2] for e in proxy.log) == 1  # one 7 MiB part
    assert sum(e[0] == "POST" and e[2].startswith("uploadId=") for e in proxy.log) == 1
    for name, p in (("mid.bin", mid), ("big.bin", big)):
        assert direct.get_object(Bucket=bucket, Key=f"d/{name}")["Body"].read() == p.read_bytes()
    assert uploads(direct, bucket) == []


def test_roundtrip_single_put_and_multipart(proxy, direct, bucket, tmp_path):
    env = client_env(proxy)
    small = data_file(tmp_path, "small", 1000)
    big = data_file(tmp_path, "big", 23 * MiB + 12345, seed=2)
    store_tool(["put", f"s3://{bucket}/ds/a b+c.txt", small], env)
    proxy.add_fault("slow", method="PUT", query="partNumber=1&", delay=0.5)
    store_tool(["--part-size", str(5 * MiB), "--parallel", "3", "put",
                f"s3://{bucket}/ds/00000.tar", big], env)
    assert proxy.max_parts_inflight == 3  # parts really go in parallel, at most 3
    # the small object went as one PUT, the big one as 5 parts and a complete
    puts = [e for e in proxy.log if e[0] == "PUT"]
    assert sum("partNumber=" in e[2] for e in puts) == 5
    assert sum(e[0] == "POST" and e[2].startswith("uploadId=") for e in proxy.log) == 1
    # reference: what moto holds
    got = direct.get_object(Bucket=bucket, Key="ds/00000.tar")["Body"].read()
    assert got == big.read_bytes()
    assert direct.get_object(Bucket=bucket, Key="ds/a b+c.txt")["Body"].read() == \
        small.read_bytes()
    assert uploads(direct, bucket) == []
    # whole and ranged reads through our client
    out = tmp_path / "out"
    store_tool(["get", f"s3://{bucket}/ds/00000.tar", out], env)
    assert out.read_bytes() == big.read_bytes()
    data = big.read_bytes()
    for a, b in [(0, 0), (10, 5 * MiB + 10), (len(data) - 100, len(data) - 1),
                 (len(data) - 10, len(data) + 1000)]:
        store_tool(["get", f"s3://{bucket}/ds/00000.tar", out, "--range", f"{a}-{b}"], env)
        assert out.read_bytes() == data[a:b + 1]
    r = store_tool(["size", f"s3://{bucket}/ds/00000.tar"], env)
    assert int(r.stdout) == len(data)
    # listing matches boto3's
    ls = store_tool(["ls", f"s3://{bucket}/ds"], env).stdout.splitlines()
    ref = direct.list_objects_v2(Bucket=bucket, Prefix="ds/")["Contents"]
    assert ls == [f"{o['Key'][3:]}\t{o['Size']}" for o in ref]
    # an empty object, and a key with characters that need encoding
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    odd = "ds/odd/é ü?#%&=~;,:@$!'()*[]{}.bin"
    store_tool(["put", f"s3://{bucket}/{odd}", empty], env)
    assert direct.get_object(Bucket=bucket, Key=odd)["Body"].read() == b""
    store_tool(["get", f"s3://{bucket}/{odd}", out], env)
    assert out.read_bytes() == b""
    assert store_tool(["size", f"s3://{bucket}/{odd}"], env).stdout == "0\n"
    store_tool(["rm", f"s3://{bucket}/{odd}"], env)
    # delete, then the object is gone (not found, named in the message)
    store_tool(["rm", f"s3://{bucket}/ds/a b+c.txt"], env)
    r = store_tool(["size", f"s3://{bucket}/ds/a b+c.txt"], env, check=False)
    assert r.returncode == 1 and "404" in r.stderr and f"s3://{bucket}/ds/a b+c.txt" in r.stderr
    assert proxy.rejected == 0


def test_virtual_hosted_addressing(proxy, direct, bucket, tmp_path):
    """PIXELMILL_S3_PATH_STYLE=0: the bucket goes in the host name (curl resolves
    *.localhost to loopback; moto takes the bucket from the first label)."""
    env = client_env(proxy)
    env["AWS_ENDPOINT_URL"] = f"http://s3.localhost:{proxy.port}"
    env["PIXELMILL_S3_PATH_STYLE"] = "0"
    small = data_file(tmp_path, "small", 777)
    store_tool(["put", f"s3://{bucket}/v/x.bin", small], env)
    assert proxy.log[-1][:2] == ("PUT", "/v/x.bin")
    assert direct.get_object(Bucket=bucket, Key="v/x.bin")["Body"].read() == small.read_bytes()
    assert store_tool(["ls", f"s3://{bucket}/v"], env).stdout == "x.bin\t777\n"
    assert proxy.log[-1][:2] == ("GET", "/")


def test_wrong_secret_is_rejected_and_never_printed(proxy, direct, bucket, tmp_path):
    small = data_file(tmp_path, "small", 100)
    wrong = SECRET_KEY[:-3] + "QQQ"
    r = store_tool(["--attempts", "2", "put", f"s3://{bucket}/x.bin", small],
                   client_env(proxy, secret=wrong), check=False)
    assert r.returncode == 1
    assert f"cannot put 's3://{bucket}/x.bin': 403 SignatureDoesNotMatch" in r.stderr
    assert proxy.rejected >= 1
    assert "Contents" not in direct.list_objects_v2(Bucket=bucket)
    # the right secret works against the same proxy
    store_tool(["put", f"s3://{bucket}/x.bin", small], client_env(proxy))
    # other failures do not print credentials either (store_tool checks every run)
    r = store_tool(["get", f"s3://no-such-bucket-{bucket}/x.bin", tmp_path / "o"],
                   client_env(proxy), check=False)
    assert r.returncode == 1 and "NoSuchBucket" in r.stderr


def test_session_token_is_sent_and_signed(moto, direct, bucket, tmp_path):
    p = SigV4Proxy(moto.port, keys={ACCESS_KEY: (SECRET_KEY, TOKEN)})
    try:
        small = data_file(tmp_path, "small", 100)
        r = store_tool(["--attempts", "1", "put", f"s3://{bucket}/t.bin", small], client_env(p),
                       check=False)
        assert r.returncode == 1 and "InvalidToken" in r.stderr
        store_tool(["put", f"s3://{bucket}/t.bin", small], client_env(p, token=TOKEN))
        assert direct.head_object(Bucket=bucket, Key="t.bin")["ContentLength"] == 100
    finally:
        p.close()


def test_faults_are_retried_and_objects_intact(proxy, direct, bucket, tmp_path):
    env = client_env(proxy)
    big = data_file(tmp_path, "big", 17 * MiB + 7, seed=3)
    proxy.add_fault("503", method="POST", query="uploads=")          # CreateMultipartUpload
    proxy.add_fault("503", method="PUT", query="partNumber=1&", times=2)
    proxy.add_fault("reset", method="PUT", query="partNumber=2&")
    proxy.add_fault("500", method="PUT", query="partNumber=3&")
    proxy.add_fault("slow", method="PUT", query="partNumber=4&", delay=1.0)
    proxy.add_fault("reset", method="POST", query="uploadId=")       # Complete
    store_tool(["--part-size", str(5 * MiB), "--parallel", "4", "put",
                f"s3://{bucket}/f/00001.tar", big], env)
    assert all(f.fired == f.times for f in proxy.faults)
    assert direct.get_object(Bucket=bucket, Key="f/00001.tar")["Body"].read() == big.read_bytes()
    assert uploads(direct, bucket) == []
    # single PUT with a 503 then a reset
    small = data_file(tmp_path, "small", 3000, seed=4)
    proxy.clear()
    proxy.add_fault("503", method="PUT", times=1)
    proxy.add_fault("reset", method="PUT", times=1)
    store_tool(["put", f"s3://{bucket}/f/s.json", small], env)
    assert direct.get_object(Bucket=bucket, Key="f/s.json")["Body"].read() == small.read_bytes()
    # GETs: a body cut in the middle resumes where it stopped (If-Match, Range)
    proxy.clear()
    proxy.add_fault("truncate", method="GET", path="/00001.tar", times=2)
    out = tmp_path / "out"
    store_tool(["get", f"s3://{bucket}/f/00001.tar", out], env)
    assert out.read_bytes() == big.read_bytes()
    assert sum(e[0] == "GET" for e in proxy.log) == 3
    proxy.clear()
    proxy.add_fault("reset", method="GET", times=1)
    proxy.add_fault("503", method="GET", times=1)
    store_tool(["get", f"s3://{bucket}/f/00001.tar", out, "--range", "100-6000099"], env)
    assert out.read_bytes() == big.read_bytes()[100:6000100]
    # a stalled answer is abandoned after --low-speed-time and retried
    proxy.clear()
    proxy.add_fault("slow", method="GET", delay=20.0)
    t0 = time.time()
    store_tool(["--low-speed-time", "1", "get", f"s3://{bucket}/f/s.json", out], env)
    # well before the stalled answer would have come, whatever the machine's load
    assert out.read_bytes() == small.read_bytes() and time.time() - t0 < 15
    assert sum(e[0] == "GET" for e in proxy.log) == 2
    # HEAD and LIST retry too
    proxy.clear()
    proxy.add_fault("503", method="HEAD")
    proxy.add_fault("reset", method="GET", query="list-type=2")
    assert int(store_tool(["size", f"s3://{bucket}/f/00001.tar"], env).stdout) == big.stat().st_size
    assert "00001.tar" in store_tool(["ls", f"s3://{bucket}/f"], env).stdout


def test_permanent_failure_leaves_no_upload(proxy, direct, bucket, tmp_path):
    env = client_env(proxy)
    big = data_file(tmp_path, "big", 16 * MiB, seed=5)
    proxy.add_fault("503", method="PUT", query="partNumber=2&", times=None)
    r = store_tool(["--part-size", str(5 * MiB), "--attempts", "3", "put",
                    f"s3://{bucket}/p/00012.tar", big], env, check=False)
    assert r.returncode == 1
    assert f"cannot put 's3://{bucket}/p/00012.tar' (part 2): 503 SlowDown after 3 attempts" \
        in r.stderr
    assert uploads(direct, bucket) == []
    assert "Contents" not in direct.list_objects_v2(Bucket=bucket)
    assert sum(e[0] == "DELETE" and "uploadId=" in e[2] for e in proxy.log) == 1
    # a complete that keeps failing: the upload is aborted, no object appears
    proxy.clear()
    proxy.add_fault("500", method="POST", query="uploadId=", times=None)
    r = store_tool(["--part-size", str(5 * MiB), "--attempts", "2", "put",
                    f"s3://{bucket}/p/00013.tar", big], env, check=False)
    assert r.returncode == 1
    assert f"cannot complete the upload of 's3://{bucket}/p/00013.tar': 500 InternalError " \
        "after 2 attempts" in r.stderr
    assert uploads(direct, bucket) == []
    assert "Contents" not in direct.list_objects_v2(Bucket=bucket)


def test_caller_abort_leaves_nothing(proxy, direct, bucket, tmp_path):
    env = client_env(proxy)
    big = data_file(tmp_path, "big", 20 * MiB, seed=6)
    r = store_tool(["--part-size", str(5 * MiB), "--abort-after", str(12 * MiB), "put",
                    f"s3://{bucket}/a/00003.tar", big], env, check=False)
    assert r.returncode == 3
    assert any("partNumber=" in e[2] for e in proxy.log)  # the upload had begun
    assert uploads(direct, bucket) == []
    assert "Contents" not in direct.list_objects_v2(Bucket=bucket)


def test_sweep_aborts_stale_uploads_under_prefix(proxy, direct, bucket):
    env = client_env(proxy)
    for key in ("ds/00001.tar", "ds/sub/00002.tar", "other/00001.tar"):
        direct.create_multipart_upload(Bucket=bucket, Key=key)
    r = store_tool(["sweep", f"s3://{bucket}/ds"], env)
    assert r.stdout.strip() == "2"
    assert [u["Key"] for u in uploads(direct, bucket)] == ["other/00001.tar"]
    # an age limit spares recent uploads (the proxy makes the upload 10 minutes old)
    proxy.initiated_age_s = 600
    assert store_tool(["sweep", f"s3://{bucket}/other", "3600"], env).stdout.strip() == "0"
    assert store_tool(["sweep", f"s3://{bucket}/other", "300"], env).stdout.strip() == "1"
    assert uploads(direct, bucket) == []


def test_listing_pages_follow_continuation_tokens(proxy, direct, bucket):
    env = client_env(proxy)
    for i in range(11):
        direct.put_object(Bucket=bucket, Key=f"pg/{i:05d}.json", Body=b"x" * i)
    direct.put_object(Bucket=bucket, Key="pgx/not-me", Body=b"")
    proxy.max_keys = 3
    ls = store_tool(["ls", f"s3://{bucket}/pg"], env).stdout.splitlines()
    assert ls == [f"{i:05d}.json\t{i}" for i in range(11)]
    assert sum("continuation-token=" in e[2] for e in proxy.log) == 3
    for i in range(5):
        direct.create_multipart_upload(Bucket=bucket, Key=f"pg/{i}.tar")
    proxy.max_keys = 2
    assert store_tool(["sweep", f"s3://{bucket}/pg"], env).stdout.strip() == "5"
    assert uploads(direct, bucket) == []


def test_tar_writer_streams_a_shard_to_s3(proxy, direct, bucket, tmp_path):
    """tar_writer_open_store on S3 gives the same bytes as on a directory; Python's tarfile
    reads it back."""
    env = client_env(proxy)
    args = ["--part-size", str(5 * MiB), "--parallel", "2", "tar"]
    r_s3 = store_tool([*args, f"s3://{bucket}/shards/00000.tar", "40", "300000"], env)
    r_fs = store_tool([*args, f"{tmp_path}/ds/00000.tar", "40", "300000"], env)
    assert r_s3.stdout == r_fs.stdout  # size and xxh3
    body = direct.get_object(Bucket=bucket, Key="shards/00000.tar")["Body"].read()
    assert body == (tmp_path / "ds" / "00000.tar").read_bytes()
    assert len(body) > 10 * MiB and int(r_s3.stdout.split()[0]) == len(body)
    assert sum("partNumber=" in e[2] for e in proxy.log) == 3
    with tarfile.open(tmp_path / "ds" / "00000.tar") as t:
        names = t.getnames()
        assert names[:2] == ["000000000.bin", "000000000.txt"] and len(names) == 80
        assert t.extractfile("000000039.txt").read() == b"caption 39"
    assert uploads(direct, bucket) == []


BAD_BODIES = [
    b"",
    b"\x00\xff garbage \x80",
    b"<?xml version='1.0'?><ListBucketResult><Contents><Key>a</Key></Contents>",
    b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
    b"<ListBucketResult><Contents><Key>a</Key><Size>-1x</Size></Contents></ListBucketResult>",
    b"<!DOCTYPE r [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><ListBucketResult><Contents>"
    b"<Key>&x;</Key><Size>1</Size></Contents></ListBucketResult>",
    b"<!DOCTYPE r [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
    b"<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;'>]>"
    b"<InitiateMultipartUploadResult><UploadId>&d;&d;&d;</UploadId>"
    b"</InitiateMultipartUploadResult>",
    b"<Error><Code>\x01\x02" + b"A" * 5000 + b"</Code></Error>",
]


@pytest.mark.parametrize("i", range(len(BAD_BODIES)))
def test_malformed_answers_fail_cleanly(proxy, direct, bucket, tmp_path, i):
    """Answers that are not S3's XML: a clean error (exit 1), never a crash, no file read
    through an external entity, no upload left behind."""
    env = client_env(proxy)
    body = BAD_BODIES[i]
    proxy.add_fault("garbage", method="GET", query="list-type=2", times=None, body=body)
    r = store_tool(["--attempts", "2", "ls", f"s3://{bucket}/x"], env, check=False)
    assert r.returncode == 1 and f"s3://{bucket}/x" in r.stderr
    assert "root:" not in r.stdout + r.stderr
    proxy.clear()
    proxy.add_fault("garbage", method="POST", query="uploads=", times=None, body=body)
    big = data_file(tmp_path, "big", 6 * MiB)
    r = store_tool(["--attempts", "2", "--part-size", str(5 * MiB), "put",
                    f"s3://{bucket}/x/1.tar", big], env, check=False)
    assert r.returncode == 1 and "cannot start an upload of" in r.stderr
    assert "Contents" not in direct.list_objects_v2(Bucket=bucket)


def test_posix_store_with_the_tool(tmp_path):
    env = dict(os.environ)
    src = data_file(tmp_path, "src", 3 * MiB + 5, seed=7)
    root = tmp_path / "ds"
    store_tool(["put", f"{root}/00000.tar", src], env)
    assert (root / "00000.tar").read_bytes() == src.read_bytes()
    out = tmp_path / "out"
    store_tool(["get", f"{root}/00000.tar", out, "--range", "7-1000"], env)
    assert out.read_bytes() == src.read_bytes()[7:1001]
    # an aborted write leaves nothing under the final name, nor a temporary file
    r = store_tool(["--abort-after", "1", "--chunk", "4096", "put", f"{root}/00001.tar", src],
                   env, check=False)
    assert r.returncode == 3
    assert sorted(p.name for p in root.iterdir()) == ["00000.tar"]
    (root / ".00002.tar.tmp.1.0123456789abcdef").write_bytes(b"left by a killed writer")
    assert store_tool(["ls", str(root)], env).stdout.splitlines() == [
        f"00000.tar\t{src.stat().st_size}"]
    assert store_tool(["sweep", str(root)], env).stdout.strip() == "1"
    store_tool(["rm", f"{root}/00000.tar"], env)
    assert list(root.iterdir()) == []
