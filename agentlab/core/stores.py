"""Key-value buckets and object stores on JetStream, with the same sync/async twins.

    ledger = KeyValueBucket.declare(client, "TASK_LEDGER")
    if ledger.create("task-42", {"by": "cto"}):    # False if the key already existed
        do_the_side_effect()
    blobs = ObjectBucket.declare(client, "TOOL_PAYLOADS")
    ref = blobs.put("conversation-7/result", big_bytes)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import nats.js.errors
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType

from ..errors import AgentlabError
from ..wire.messages import decode_json, to_bytes


class ObjectMissing(AgentlabError, LookupError):
    def __init__(self, bucket: str, name: str):
        self.bucket, self.name = bucket, name
        super().__init__(
            f"Object '{name}' is not in object store '{bucket}': it was never stored, was "
            "deleted, or expired (object stores can have a TTL)."
        )

if TYPE_CHECKING:
    from .client import Client


class KeyValueBucket:
    """A JetStream key-value bucket. Values are bytes, str, dicts (JSON) or pydantic models."""

    def __init__(self, client: Client, kv: Any, name: str):
        self._client = client
        self._kv = kv
        self.name = name

    @classmethod
    def declare(cls, client: Client, bucket: str, *, history: int = 1, ttl: float | None = None,
                storage: str = "file", replicas: int = 1, description: str = "") -> KeyValueBucket:
        """Open the bucket, creating it first if it does not exist."""
        return client._bridge.run(cls.adeclare(client, bucket, history=history, ttl=ttl,
                                               storage=storage, replicas=replicas,
                                               description=description), operation="declare")

    @classmethod
    async def adeclare(cls, client: Client, bucket: str, *, history: int = 1,
                       ttl: float | None = None, storage: str = "file",
                       replicas: int | Callable[[], Awaitable[int]] = 1,
                       description: str = "") -> KeyValueBucket:
        """``replicas`` may be a coroutine function: asked only if the bucket is created
        (an existing bucket keeps its copies, so reading what decides them is wasted)."""
        async def open_or_create() -> Any:
            js = client.nc.jetstream()
            try:
                return await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                copies = replicas if isinstance(replicas, int) else await replicas()
                return await js.create_key_value(KeyValueConfig(
                    bucket=bucket, history=history, ttl=ttl, storage=StorageType(storage),
                    replicas=copies, description=description or None))
        return cls(client, await client._bridge.arun(open_or_create()), bucket)

    def _run(self, coro: Any, operation: str) -> Any:
        return self._client._bridge.run(coro, operation=operation)

    def get(self, key: str, default: Any = None) -> Any:
        """The value as JSON-decoded data (or raw bytes if it is not JSON), else ``default``."""
        return self._run(self.aget(key, default), "get")

    async def aget(self, key: str, default: Any = None) -> Any:
        async def read() -> Any:
            try:
                entry = await self._kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                return default
            return _decode(entry.value, f"{self.name}/{key}")
        return await self._client._bridge.arun(read())

    def put(self, key: str, value: Any) -> int:
        """Store ``value`` under ``key``; returns the new revision."""
        return self._run(self.aput(key, value), "put")

    async def aput(self, key: str, value: Any) -> int:
        return await self._client._bridge.arun(self._kv.put(key, to_bytes(value)))

    def create(self, key: str, value: Any) -> bool:
        """Store only if ``key`` is new. True if this call created it: an atomic claim."""
        return self._run(self.acreate(key, value), "create")

    async def acreate(self, key: str, value: Any) -> bool:
        async def claim() -> bool:
            try:
                await self._kv.create(key, to_bytes(value))
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
            return True
        return await self._client._bridge.arun(claim())

    def delete(self, key: str) -> None:
        self._run(self._kv.delete(key), "delete")

    def keys(self) -> list[str]:
        return self._run(self.akeys(), "keys")

    async def akeys(self) -> list[str]:
        async def list_keys() -> list[str]:
            try:
                return await self._kv.keys()
            except nats.js.errors.NoKeysError:
                return []
        return await self._client._bridge.arun(list_keys())

    def __repr__(self) -> str:
        return f"<KeyValueBucket {self.name}>"


class ObjectBucket:
    """A JetStream object store: large payloads in chunks, referenced by name."""

    def __init__(self, client: Client, store: Any, name: str):
        self._client = client
        self._store = store
        self.name = name

    @classmethod
    def declare(cls, client: Client, bucket: str, *, ttl: float | None = None,
                storage: str = "file", replicas: int = 1) -> ObjectBucket:
        return client._bridge.run(cls.adeclare(client, bucket, ttl=ttl, storage=storage,
                                               replicas=replicas), operation="declare")

    @classmethod
    async def adeclare(cls, client: Client, bucket: str, *, ttl: float | None = None,
                       storage: str = "file", replicas: int = 1) -> ObjectBucket:
        async def open_or_create() -> Any:
            js = client.nc.jetstream()
            try:
                return await js.object_store(bucket)
            except nats.js.errors.BucketNotFoundError:
                return await js.create_object_store(bucket, ObjectStoreConfig(
                    bucket=bucket, ttl=ttl, storage=StorageType(storage), replicas=replicas))
        return cls(client, await client._bridge.arun(open_or_create()), bucket)

    def put(self, name: str, data: Any) -> str:
        """Store ``data``; returns the reference to send instead: ``obj://<bucket>/<name>``."""
        return self._client._bridge.run(self.aput(name, data), operation="put")

    async def aput(self, name: str, data: Any) -> str:
        await self._client._bridge.arun(self._store.put(name, to_bytes(data)))
        return f"obj://{self.name}/{name}"

    def get(self, name: str) -> bytes:
        return self._client._bridge.run(self.aget(name), operation="get")

    async def aget(self, name: str) -> bytes:
        async def read() -> bytes:
            try:
                result = await self._store.get(name)
            except nats.js.errors.ObjectNotFoundError:
                raise ObjectMissing(self.name, name) from None
            return bytes(result.data or b"")
        return await self._client._bridge.arun(read())

    def delete(self, name: str) -> None:
        self._client._bridge.run(self.adelete(name), operation="delete")

    async def adelete(self, name: str) -> None:
        async def remove() -> None:
            try:
                await self._store.delete(name)
            except nats.js.errors.ObjectNotFoundError:
                pass  # already gone: deleting is idempotent
        await self._client._bridge.arun(remove())

    def __repr__(self) -> str:
        return f"<ObjectBucket {self.name}>"


def _decode(data: bytes | None, where: str) -> Any:
    if not data:
        return data
    try:
        return decode_json(data, where)
    except ValueError:
        return data
