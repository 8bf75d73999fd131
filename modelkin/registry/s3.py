"""The blob store on S3 or an S3-compatible server (``MODELKIN_STORE=s3://bucket/prefix``), through s3fs.

What S3 adds to the fsspec store:

- one upload per blob, straight to its final key, with a conditional write (``If-None-Match: *``, see
  ``s3_upload``): two writers of one digest never overwrite each other, and a stored blob is never rewritten.
  Blobs of at least two parts (``MODELKIN_S3_PART_SIZE``, default 8 MiB) go up as a multipart upload, which
  stays invisible until it completes; ``gc`` aborts the ones an interrupted writer left. A blob of at least one
  part is looked up first (HEAD), so its bytes are never sent when it is stored already; a smaller one is sent
  straight away, the server's refusal being the cheaper answer.
- a bucket is never created: a missing one is an error that names it.
- every failure of the service becomes one sentence saying what is wrong (unreachable endpoint, missing bucket,
  access denied, missing or rejected credentials) with no secret in it: the endpoint is shown without user
  information, and botocore's own messages are never passed on.

Credentials and the endpoint come from the usual AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` for S3-compatible servers).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from modelkin.errors import ConfigError, StoreUnavailable
from modelkin.registry.s3_upload import put_if_absent
from modelkin.registry.staging import Leftover, Staging, writer_name
from modelkin.registry.store import FsspecStore

MiB = 2**20
MIN_PART_SIZE = 5 * MiB  # S3's smallest part (all but the last)
DEFAULT_PART_SIZE = 8 * MiB
PART_SIZE_VARIABLE = "MODELKIN_S3_PART_SIZE"
CONCURRENT_PARTS = 10  # parts in flight at once (as boto3's transfers): memory is bounded by this x part size
STORE_ATTEMPTS = 5
REFRESH_AFTER = 600.0  # seconds: an older blob found stored is refreshed before use (gc's default grace: 3600)
COPY_LIMIT = 5 * 2**30  # the largest object one CopyObject request copies
COPY_PART = 2**30  # the range of each part when a larger blob is copied onto itself


class S3Store(FsspecStore):
    """Blobs under ``s3://bucket/prefix``; see the module docstring for what differs from other fsspec stores."""

    def __init__(self, url: str, staging: Staging) -> None:
        try:
            import s3fs
        except ImportError:
            raise ConfigError(
                f"the store {url} needs s3fs, which is not installed.", hint="pip install 'modelkin[s3]'"
            ) from None
        if "@" in url.split("://", 1)[1].split("/", 1)[0]:
            raise ConfigError(
                "the store URL holds credentials, which modelkin does not read from a URL.",
                hint="write s3://BUCKET/PREFIX and put the keys in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
            )
        # user information in AWS_ENDPOINT_URL is never sent (botocore's own client drops it too)
        raw = _endpoint_variable()
        self._endpoint_kwargs = {"endpoint_url": redact_url(raw)} if raw and "@" in raw else {}
        fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, client_kwargs=self._endpoint_kwargs)
        super().__init__(url, staging, fs)
        self.bucket = self.root.split("/", 1)[0]
        if not self.bucket:
            raise ConfigError(f"the store URL {url!r} names no bucket.", hint="write s3://BUCKET/PREFIX")
        self.part_size = _part_size()

    @cached_property
    def _client(self) -> Any:
        """botocore's blocking client, for uploads, lookups and deletes (s3fs serves listings and reads)."""
        import botocore.config
        import botocore.session

        config = botocore.config.Config(max_pool_connections=CONCURRENT_PARTS + 2)
        return botocore.session.get_session().create_client("s3", config=config, **self._endpoint_kwargs)

    def _store(self, path: Path, key: str, size: int) -> None:
        """Upload once unless the blob is there; a stored blob of the wrong size (damaged) is replaced.

        A blob found stored counts as stored once it is young enough (``_usable``): the version about to
        reference it is not committed yet, and ``gc`` would otherwise see an old unreferenced blob and delete it.
        """
        if size >= self.part_size and self._usable(key, size, self._stat(key)):
            return
        for _ in range(STORE_ATTEMPTS):
            if put_if_absent(self._client, self.bucket, self._object(key), path, self.part_size, CONCURRENT_PARTS):
                return
            stored = self._stat(key)  # refused: a blob is there
            if self._usable(key, size, stored):
                return
            if stored is not None and stored[0] != size:
                self._client.delete_object(Bucket=self.bucket, Key=self._object(key))
            time.sleep(0.05)
        raise StoreUnavailable(f"could not store {key} in {self.location}: it kept changing while being written.")

    def _usable(self, key: str, size: int, stored: tuple[int, float] | None) -> bool:
        """Whether a stored blob (its size and age) will do: whole, and refreshed first if gc could take it soon.

        A blob younger than ``REFRESH_AFTER`` is safe under gc's default grace for far longer than a
        registration takes, so it is used as it is and never rewritten; an older one is refreshed.
        """
        if stored is None or stored[0] != size:
            return False
        return time.time() - stored[1] < REFRESH_AFTER or self._refresh(key, size)

    def _refresh(self, key: str, size: int) -> bool:
        """Make a stored blob's age zero, as ``touch`` does on a filesystem; False if it is gone (gc was first).

        An object's LastModified cannot be set, so the object is copied onto itself inside the service: no
        bytes travel, and readers see the same bytes throughout. One request copies up to 5 GiB; a larger blob
        is copied in ranges as a multipart upload, which appears whole when it completes.
        """
        obj = self._object(key)
        source = {"Bucket": self.bucket, "Key": obj}
        try:
            if size <= COPY_LIMIT:
                self._client.copy_object(Bucket=self.bucket, Key=obj, CopySource=source, MetadataDirective="REPLACE")
                return True
            upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=obj)["UploadId"]
            try:
                parts = []
                for number, start in enumerate(range(0, size, COPY_PART), 1):
                    end = min(start + COPY_PART, size) - 1
                    out = self._client.upload_part_copy(Bucket=self.bucket, Key=obj, UploadId=upload,
                                                        PartNumber=number, CopySource=source,
                                                        CopySourceRange=f"bytes={start}-{end}")  # fmt: skip
                    parts.append({"PartNumber": number, "ETag": out["CopyPartResult"]["ETag"]})
                self._client.complete_multipart_upload(Bucket=self.bucket, Key=obj, UploadId=upload,
                                                       MultipartUpload={"Parts": parts})  # fmt: skip
            except BaseException:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=obj, UploadId=upload)
                raise
            return True
        except self._client.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def _stat(self, key: str) -> tuple[int, float] | None:
        """(size, modification time) of a stored object, or None."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._object(key))
            return int(head["ContentLength"]), _timestamp(head.get("LastModified"))
        except self._client.exceptions.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _object(self, key: str) -> str:
        """The object key inside the bucket of a ``bucket/prefix/…`` path."""
        return key.partition("/")[2]

    @property
    def _prefix(self) -> str:
        """The store's key prefix with its slash (``objects/``), or nothing for a store at the bucket's root."""
        inside = self._object(self.root)
        return f"{inside}/" if inside else ""

    def check(self) -> None:
        """The probe goes through the client that uploads, so a check also readies it for the first upload."""
        try:
            self._client.head_bucket(Bucket=self.bucket)  # the one sure way to tell a missing bucket
        except Exception as exc:
            problem = s3_error(exc, self.bucket, endpoint())
            # the answer to a HEAD has no body, so a 403 may be a denial or rejected credentials: the probe
            # write below, whose answer names its reason, tells them apart
            if problem is None or problem.problem != "access_denied":
                raise problem or exc from None
        probe = self._prefix + writer_name(".probe")
        data = os.urandom(32)
        with self._errors():
            self._client.put_object(Bucket=self.bucket, Key=probe, Body=data)
            back = self._client.get_object(Bucket=self.bucket, Key=probe)["Body"].read()
            self._client.delete_object(Bucket=self.bucket, Key=probe)
        if back != data:
            raise StoreUnavailable(f"the store {self.location} returned other bytes than were written.")

    def leftovers(self, cutoff: float) -> Iterator[Leftover]:
        """Temporary objects, and multipart uploads under the prefix started before ``cutoff``."""
        yield from super().leftovers(cutoff)
        with self._errors():
            for up in self._multipart_uploads(self._prefix):
                if _timestamp(up.get("Initiated")) < cutoff:
                    parts = self.fs.call_s3("list_parts", Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    size = sum(int(p.get("Size", 0)) for p in parts.get("Parts", []))
                    yield Leftover("multipart", f"{self.bucket}/{up['Key']}?uploadId={up['UploadId']}", size)

    def _multipart_uploads(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every unfinished multipart upload under ``prefix``, page after page."""
        markers: dict[str, str] = {}
        while True:
            page = self.fs.call_s3("list_multipart_uploads", Bucket=self.bucket, Prefix=prefix, **markers)
            yield from page.get("Uploads", [])
            if not page.get("IsTruncated"):
                return
            markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    def remove_leftover(self, leftover: Leftover) -> None:
        if leftover.kind != "multipart":
            return super().remove_leftover(leftover)
        key, _, upload_id = leftover.name.partition("?uploadId=")
        with self._errors():
            try:
                self.fs.call_s3("abort_multipart_upload", Bucket=self.bucket, Key=key.partition("/")[2],
                                UploadId=upload_id)  # fmt: skip
            except FileNotFoundError:  # completed or aborted meanwhile
                pass

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except StoreUnavailable:
            raise
        except Exception as exc:
            translated = s3_error(exc, self.bucket, endpoint())
            if translated is None:
                raise
            raise translated from None


def s3_error(exc: BaseException, bucket: str, where: str) -> StoreUnavailable | None:
    """One sentence for a failure of the S3 service, or None for ordinary outcomes (a missing key)."""
    import botocore.exceptions as bx

    for e in _chain(exc):
        if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)):
            return StoreUnavailable(
                "no AWS credentials were found for the S3 store.", problem="missing_credentials",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), then `modelkin store check`",
            )  # fmt: skip
        if isinstance(e, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ProxyConnectionError)):
            return StoreUnavailable(
                f"cannot reach the S3 endpoint {where}.", problem="unreachable",
                hint="check AWS_ENDPOINT_URL and the network, then `modelkin store check`",
            )  # fmt: skip
        if isinstance(e, bx.ReadTimeoutError):
            return StoreUnavailable(f"the S3 endpoint {where} did not answer in time.", problem="unreachable")
        code = str(((getattr(e, "response", None) or {}).get("Error") or {}).get("Code", ""))
        operation = str(getattr(e, "operation_name", ""))
        if code == "NoSuchBucket" or (code in ("404", "NotFound") and operation == "HeadBucket"):
            return StoreUnavailable(
                f"the bucket {bucket!r} does not exist at {where}.", problem="missing_bucket",
                hint="modelkin never creates buckets: create it, or fix the bucket name in MODELKIN_STORE",
            )  # fmt: skip
        if code in ("AccessDenied", "AllAccessDisabled", "403", "Forbidden"):
            return StoreUnavailable(
                f"access to the bucket {bucket!r} was denied.", problem="access_denied",
                hint="the credentials need s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on it",
            )  # fmt: skip
        if code in _REJECTED_CREDENTIALS:
            return StoreUnavailable(
                f"the S3 endpoint {where} rejected the AWS credentials ({code}).", problem="bad_credentials",
                hint="check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN",
            )  # fmt: skip
    return None


_REJECTED_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                         "TokenRefreshRequired")  # fmt: skip


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _endpoint_variable() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def endpoint() -> str:
    """The S3 endpoint in use, for messages: without user information, so no secret can show."""
    raw = _endpoint_variable()
    return redact_url(raw) if raw else "AWS S3"


def redact_url(url: str) -> str:
    """``url`` without user name, password, query or fragment (where presigned tokens would sit)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "(an unparsable endpoint URL)"


def _part_size() -> int:
    raw = os.environ.get(PART_SIZE_VARIABLE)
    if not raw:
        return DEFAULT_PART_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < MIN_PART_SIZE:
        raise ConfigError(
            f"{PART_SIZE_VARIABLE}={raw!r} is not a part size S3 accepts.",
            hint=f"give a number of bytes of at least {MIN_PART_SIZE} (5 MiB)",
        )
    return size


def _timestamp(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float("inf")  # undated: never taken for stale
