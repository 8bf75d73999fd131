"""One conditional upload of a staged file to its final S3 key: a PUT, or parts sent in parallel and completed.

Both end with ``If-None-Match: *``, so the object appears whole or not at all, and only if no object has that key
yet; the answer says which. The parts go through botocore's own (threaded, blocking) client: s3transfer, which
``boto3.upload_file`` uses, cannot send the condition, and s3fs's asyncio path moves large files about half as
fast here. Parts of an upload that fails are aborted; those of a killed process stay invisible until ``gc``.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CONFLICT_RETRIES = 5  # S3 answers 409 while another conditional write of the same key is in flight


def put_if_absent(client: Any, bucket: str, key: str, path: Path, part_size: int, workers: int) -> bool:
    """Upload ``path`` to ``key``; True if written, False if an object was there already (nothing changed)."""
    for attempt in range(CONFLICT_RETRIES):
        try:
            size = path.stat().st_size
            if size < 2 * part_size:
                with open(path, "rb") as body:
                    client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            else:
                _multipart(client, bucket, key, path, size, part_size, workers)
            return True
        except client.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412"):
                return False
            if code not in ("ConditionalRequestConflict", "409") or attempt == CONFLICT_RETRIES - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def _multipart(client: Any, bucket: str, key: str, path: Path, size: int, part_size: int, workers: int) -> None:
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    fd = os.open(path, os.O_RDONLY)
    try:

        def send(index: int) -> dict[str, Any]:
            data = os.pread(fd, part_size, index * part_size)
            out = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=index + 1, Body=data)
            return {"PartNumber": index + 1, "ETag": out["ETag"]}

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelkin-s3") as pool:
            parts = list(pool.map(send, range(-(-size // part_size))))
        client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
        )
    except BaseException:
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # the original failure is what the caller needs to see; gc aborts what is left
            pass
        raise
    finally:
        os.close(fd)
