"""Object operations on the mirror prefix: the only module that calls S3 for the mirror.

Every object is one file of the pki tree, keyed ``prefix + relative path``. Each carries the
file's mode and MD5 as user metadata (``x-amz-meta-mode: 0600``, ``x-amz-meta-md5``): the
mode so a restore puts it back, the MD5 because with SSE-KMS the ETag is not the content's
MD5. botocore errors are translated into :class:`MirrorError` here.

Metadata is written by whoever writes the object: a bucket writer who overwrites an object
can copy it. So what the mirror believes about a body it did not upload itself comes from
S3: the ETag of a single-part put without SSE-KMS or SSE-C is the body's MD5, and every
object is put with ``ChecksumAlgorithm=SHA256`` (S3 checks the body against it and refuses
a mismatch), which a HEAD with ``ChecksumMode=ENABLED`` returns. ListObjectsV2 names the
algorithm but not the value, so the value costs a HEAD, made only for an object whose ETag
the manifest does not know.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aws_ork.aws import AWS_ERRORS, error_code, make_client
from aws_ork.base.awserrors import count_aws_error
from aws_ork.base.errors import MirrorError
from aws_ork.config import BucketUrl, Config

log = logging.getLogger(__name__)

ACL = "bucket-owner-full-control"
DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes
MODE_META = "mode"
MD5_META = "md5"
#: a HEAD's answer for an object that is not there: an answer, not an error
NOT_FOUND = ("404", "NoSuchKey")
TYPE_META = "type"  # "symlink": the body is the link's target, relative to its directory


class ObjectTooLarge(MirrorError):
    """An object longer than the caller's limit: refused, not read."""


@dataclass(frozen=True)
class ObjectOptions:
    """How objects are written: SSE (None, ``AES256`` or ``aws:kms``) and the canned ACL."""

    sse: str | None = None
    kms_key_id: str | None = None
    acl: str | None = ACL

    def put_args(self) -> dict[str, str]:
        args: dict[str, str] = {}
        if self.acl:
            args["ACL"] = self.acl
        if self.sse:
            args["ServerSideEncryption"] = self.sse
            if self.sse == "aws:kms" and self.kms_key_id:
                args["SSEKMSKeyId"] = self.kms_key_id
        return args


@dataclass(frozen=True)
class Remote:
    """What we know of one object: its ETag, the body's MD5 and SHA-256 (base64) as S3
    vouches for them (the MD5 we sent and S3 checked, an MD5 ETag, S3's own checksum; None
    when S3 does not say), and the mode. ``claimed`` is the MD5 its metadata claims (a HEAD
    only; not trusted, never saved): an object whose claim matches the local file while S3
    says otherwise was overwritten with copied metadata."""

    etag: str
    md5: str | None
    mode: int | None
    sha256: str | None = None
    claimed: str | None = None


@dataclass(frozen=True)
class Download:
    """One object's body and the mode to give the file."""

    body: bytes
    mode: int | None
    symlink: bool = False


def format_mode(mode: int) -> str:
    return f"{mode & 0o7777:04o}"


def parse_mode(text: str | None) -> int | None:
    """The mode from metadata; None when missing or not an octal permission (untrusted)."""
    if not text:
        return None
    try:
        value = int(text, 8)
    except ValueError:
        return None
    return value if 0 <= value <= 0o7777 else None


def _code_of(exc: MirrorError) -> str | None:
    """The AWS error code behind a translated error; None when it had no AWS cause."""
    return error_code(exc.__cause__) if exc.__cause__ is not None else None


def _etag(raw: str) -> str:
    return raw.strip('"')


def md5_from_etag(etag: str, sse: str | None, *, customer_key: bool = False) -> str | None:
    """The content MD5 an ETag stands for, when it stands for one: a single-part upload
    stored without SSE-KMS or SSE-C (whose ETags are not MD5s); None otherwise."""
    if (
        sse in ("aws:kms", "aws:kms:dsse")
        or customer_key
        or re.fullmatch(r"[0-9a-f]{32}", etag) is None
    ):
        return None
    return etag


def full_sha256(response: dict[str, Any]) -> str | None:
    """The body's SHA-256 (base64) from a HEAD or GET with ChecksumMode=ENABLED; None when
    there is none, or it is a multipart upload's composite checksum (not the body's)."""
    value = response.get("ChecksumSHA256")
    if (
        not isinstance(value, str)
        or "-" in value
        or response.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT"
    ):
        return None
    return value


class S3Tree:
    """The objects under ``s3://bucket/prefix/``, addressed by relative path."""

    def __init__(
        self, client: Any, target: BucketUrl, options: ObjectOptions = ObjectOptions()
    ) -> None:
        self.client = client
        self.target = target
        self.options = options

    def key(self, relpath: str) -> str:
        return self.target.prefix + relpath

    def check(self) -> None:
        """Reach the bucket (for ``--check``)."""
        with self._translate("head bucket"):
            self.client.head_bucket(Bucket=self.target.bucket)

    def default_encryption(self) -> list[str]:
        """The bucket's default encryption algorithms (``AES256``, ``aws:kms``...); [] when
        it has none (``ServerSideEncryptionConfigurationNotFoundError``)."""
        try:
            with self._translate("get bucket encryption"):
                rules = (
                    self.client.get_bucket_encryption(Bucket=self.target.bucket)
                    .get("ServerSideEncryptionConfiguration", {})
                    .get("Rules", [])
                )
        except MirrorError as exc:
            if _code_of(exc) == "ServerSideEncryptionConfigurationNotFoundError":
                return []
            raise
        return [
            str(rule.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm"))
            for rule in rules
            if rule.get("ApplyServerSideEncryptionByDefault")
        ]

    def public_access_block(self) -> dict[str, bool]:
        """The bucket's public access block settings ({} when it has none:
        ``NoSuchPublicAccessBlockConfiguration``)."""
        try:
            with self._translate("get public access block"):
                block = self.client.get_public_access_block(Bucket=self.target.bucket).get(
                    "PublicAccessBlockConfiguration", {}
                )
        except MirrorError as exc:
            if _code_of(exc) == "NoSuchPublicAccessBlockConfiguration":
                return {}
            raise
        return {str(name): value is True for name, value in block.items()}

    def put(
        self, relpath: str, body: bytes, mode: int, md5: str, *, symlink: bool = False
    ) -> Remote:
        """Upload one file (or symlink); returns what the mirror now holds for it."""
        metadata = {MODE_META: format_mode(mode), MD5_META: md5}
        if symlink:
            metadata[TYPE_META] = "symlink"
        with self._translate(f"put {relpath}"):
            response = self.client.put_object(
                Bucket=self.target.bucket,
                Key=self.key(relpath),
                Body=body,
                Metadata=metadata,
                ChecksumAlgorithm="SHA256",
                **self.options.put_args(),
            )
        return Remote(_etag(response["ETag"]), md5, mode & 0o7777, full_sha256(response))

    def delete(self, relpaths: Iterable[str]) -> int:
        """Delete objects, up to 1,000 per request; returns how many were asked for."""
        keys = sorted({self.key(r) for r in relpaths})
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = keys[start : start + DELETE_BATCH]
            with self._translate("delete"):
                response = self.client.delete_objects(
                    Bucket=self.target.bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise MirrorError(
                    f"{self.target}: delete of {first.get('Key')} failed: "
                    f"{first.get('Code')} ({len(response['Errors'])} failed)"
                )
        return len(keys)

    def list(self) -> dict[str, str]:
        """{relative path: ETag} of every object under the prefix (paginated listing)."""
        etags: dict[str, str] = {}
        with self._translate("list"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.target.bucket, Prefix=self.target.prefix):
                for obj in page.get("Contents", []):
                    etags[obj["Key"][len(self.target.prefix) :]] = _etag(obj["ETag"])
        return etags

    def head(self, relpath: str) -> Remote | None:
        """What S3 says of the object's body (when the manifest does not know its ETag), its
        mode and its metadata's MD5 claim; None if the object is gone."""
        import botocore.exceptions

        try:
            with self._translate(f"head {relpath}", expected=NOT_FOUND):
                response = self.client.head_object(
                    Bucket=self.target.bucket, Key=self.key(relpath), ChecksumMode="ENABLED"
                )
        except MirrorError as exc:
            cause = exc.__cause__
            if (
                isinstance(cause, botocore.exceptions.ClientError)
                and error_code(cause) in NOT_FOUND
            ):
                return None
            raise
        meta = response.get("Metadata", {})
        etag = _etag(response["ETag"])
        md5 = md5_from_etag(
            etag,
            response.get("ServerSideEncryption"),
            customer_key="SSECustomerAlgorithm" in response,
        )
        return Remote(
            etag, md5, parse_mode(meta.get(MODE_META)), full_sha256(response), meta.get(MD5_META)
        )

    def get(self, relpath: str, limit: int | None = None) -> Download:
        """Download one object and check its body against the MD5 it was stored with; with
        ``limit``, a body longer than that many bytes is refused (MirrorError), unread."""
        import hashlib

        with self._translate(f"get {relpath}"):
            response = self.client.get_object(Bucket=self.target.bucket, Key=self.key(relpath))
            stream = response["Body"]
            body = stream.read() if limit is None else stream.read(limit + 1)
            if limit is not None:
                stream.close()
        if limit is not None and len(body) > limit:
            raise ObjectTooLarge(f"{self.target}{relpath}: larger than {limit} bytes: refused")
        meta = response.get("Metadata", {})
        digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
        expected = meta.get(MD5_META) or md5_from_etag(
            _etag(response.get("ETag", "")), response.get("ServerSideEncryption")
        )
        if expected is not None and expected != digest:
            raise MirrorError(
                f"{self.target}{relpath}: downloaded body does not match its "
                f"MD5 ({digest} != {expected})"
            )
        return Download(body, parse_mode(meta.get(MODE_META)), meta.get(TYPE_META) == "symlink")

    @contextlib.contextmanager
    def _translate(self, what: str, expected: Collection[str] = ()) -> Iterator[None]:
        """botocore errors become MirrorError naming the bucket and the step; each is counted
        for the metrics unless its code is an ``expected`` answer (a HEAD's 404)."""
        try:
            yield
        except AWS_ERRORS as exc:
            code = error_code(exc)
            if code not in expected:
                count_aws_error("s3", code)
            raise MirrorError(f"{self.target}: {what}: {code}: {exc}") from exc


def s3_tree(cfg: Config) -> S3Tree:
    """The mirror's objects, written with the configured SSE and ACL."""
    assert cfg.bucket_url is not None
    s3 = make_client("s3", cfg.effective_bucket_region, max_attempts=2)
    return S3Tree(
        s3, cfg.bucket_url, ObjectOptions(cfg.bucket_sse, cfg.bucket_kms_key_id, cfg.bucket_acl)
    )
