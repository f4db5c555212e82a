#!/usr/bin/env python3
"""The floor `dr copy` is measured against: a plain streaming copy of the same objects with
an SDK (botocore, which the aws CLI brings), each GET body piped into a multipart upload in
8 MiB parts, two objects at a time (as dr copies them), nothing buffered beyond a part.

    python3 ci/bench-copy.py ENDPOINT FROM_BUCKET TO_BUCKET TO_PREFIX KEY...

KEY is relative to FROM_BUCKET; it is written to TO_BUCKET under TO_PREFIX/KEY.
Credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (SeaweedFS takes any).
"""

import sys
from concurrent.futures import ThreadPoolExecutor

import botocore.session
from botocore.config import Config

PART = 8 << 20


def client(endpoint):
    s = botocore.session.get_session()
    return s.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=8),
    )


def read_part(body):
    chunks, n = [], 0
    while n < PART:
        c = body.read(PART - n)
        if not c:
            break
        chunks.append(c)
        n += len(c)
    return b"".join(chunks)


def copy(s3, src_bucket, dst_bucket, key, dst_key):
    body = s3.get_object(Bucket=src_bucket, Key=key)["Body"]
    first = read_part(body)
    if len(first) < PART:
        s3.put_object(Bucket=dst_bucket, Key=dst_key, Body=first)
        return len(first)
    up = s3.create_multipart_upload(Bucket=dst_bucket, Key=dst_key)["UploadId"]
    parts, n, part = [], 0, first
    try:
        while part:
            r = s3.upload_part(
                Bucket=dst_bucket, Key=dst_key, UploadId=up, PartNumber=len(parts) + 1, Body=part
            )
            parts.append({"ETag": r["ETag"], "PartNumber": len(parts) + 1})
            n += len(part)
            part = read_part(body)
        s3.complete_multipart_upload(
            Bucket=dst_bucket, Key=dst_key, UploadId=up, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        s3.abort_multipart_upload(Bucket=dst_bucket, Key=dst_key, UploadId=up)
        raise
    return n


def main():
    endpoint, src, dst, prefix, *keys = sys.argv[1:]
    s3 = client(endpoint)
    with ThreadPoolExecutor(2) as pool:
        total = sum(pool.map(lambda k: copy(s3, src, dst, k, f"{prefix}/{k}"), keys))
    print(total)


if __name__ == "__main__":
    main()
