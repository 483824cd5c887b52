"""A local S3 server for tests: moto's server mode on 127.0.0.1, in a thread."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3

ACCESS_KEY = "testing"
SECRET_KEY = "testing"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        name = f"tg-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, prefix: str = "blobs") -> dict[str, str]:
        """The settings of a taskgate process that keeps its blobs in ``bucket``."""
        return {
            "TASKGATE_STORAGE_URL": f"s3://{bucket}/{prefix}",
            "TASKGATE_S3_ENDPOINT_URL": self.endpoint_url,
            "TASKGATE_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "TASKGATE_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }


@contextmanager
def running_s3() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    # Port 0: the kernel picks a free port as the server binds, so parallel test
    # processes never race for one.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()
