"""containerd's gRPC API over its unix socket: images, content, leases, namespaces.

Only the calls an import needs, with messages encoded by :mod:`wire` (no
generated stubs). Every call names its namespace in the
``containerd-namespace`` metadata, as containerd's own clients do. The socket
is tried with a plain connect first, so a missing socket, a refused
connection and a permission problem each get their own message.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO, NamedTuple

import grpc

from ignitevm.errors import IgniteError, InvalidInput
from ignitevm.images.containerd import wire
from ignitevm.log import log

CALL_TIMEOUT = 60.0  # seconds for one unary call (reads stream for as long as they take)
LEASE_EXPIRY = 3600  # seconds: containerd drops a lease left behind by a killed import
_MAX_MESSAGE = 64 << 20
_SOCKET_HINT = "is containerd running? Give its socket with --containerd-socket"


class Target(NamedTuple):
    """An image record: its name and the descriptor of its index or manifest."""

    name: str
    media_type: str
    digest: str
    size: int


class Client:
    """A connection to one containerd, in one namespace."""

    def __init__(self, socket_path: str, namespace: str):
        self.socket = socket_path.removeprefix("unix://")  # (ctr takes both forms)
        self.namespace = namespace
        self._channel: grpc.Channel | None = None

    def __enter__(self) -> Client:
        _check_socket(self.socket)
        self._channel = grpc.insecure_channel(
            "unix:" + os.path.abspath(self.socket),
            options=[("grpc.max_receive_message_length", _MAX_MESSAGE),
                     ("grpc.enable_retries", 0)])
        return self

    def __exit__(self, *exc: object) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _metadata(self, namespace: str | None) -> list[tuple[str, str]]:
        return [("containerd-namespace", namespace or self.namespace)]

    def call(self, method: str, request: bytes, what: str, *,
             namespace: str | None = None) -> bytes | None:
        """One unary call: the answer's bytes, or None if containerd says not found."""
        assert self._channel is not None
        stub = self._channel.unary_unary(method)
        try:
            answer = stub(request, metadata=self._metadata(namespace), timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise self.error(exc, what) from None
        return bytes(answer)

    def error(self, exc: Any, what: str) -> IgniteError:
        """What a failed call means, in one line."""
        code, details = exc.code(), (exc.details() or "").strip()
        if code == grpc.StatusCode.UNAVAILABLE:
            return IgniteError(f"cannot reach containerd at {self.socket} ({what}): {details}",
                               hint=_SOCKET_HINT)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return IgniteError(f"containerd at {self.socket} did not answer {what} within "
                               f"{CALL_TIMEOUT:.0f} s", hint="is it overloaded or stuck?")
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return IgniteError(f"containerd at {self.socket} does not offer {what}: {details}",
                               hint="is this socket containerd's main (gRPC) socket?")
        return IgniteError(f"containerd refused {what}: {details} ({code.name})")

    # Images and namespaces

    def image(self, name: str, namespace: str | None = None) -> Target | None:
        answer = self.call("/containerd.services.images.v1.Images/Get", wire.string(1, name),
                           f"the image {name}", namespace=namespace)
        if answer is None:
            return None
        try:
            image = wire.fields(wire.get_bytes(wire.fields(answer), 1))
            desc = wire.fields(wire.get_bytes(image, 3))
            return Target(wire.get_str(image, 1), wire.get_str(desc, 1),
                          wire.get_str(desc, 2), wire.get_int(desc, 3))
        except wire.WireError as exc:
            raise self.malformed("the image record", exc) from None

    def image_names(self) -> list[str]:
        return self._names("/containerd.services.images.v1.Images/List", "images")

    def namespaces(self) -> list[str]:
        return self._names("/containerd.services.namespaces.v1.Namespaces/List", "namespaces")

    def _names(self, method: str, what: str) -> list[str]:
        """The names (field 1) of the records (field 1) a List call answers."""
        answer = self.call(method, b"", f"the list of {what}") or b""
        try:
            return sorted(wire.get_str(r, 1) for r in wire.get_messages(wire.fields(answer), 1))
        except wire.WireError as exc:
            raise self.malformed(f"the list of {what}", exc) from None

    def malformed(self, what: str, exc: Exception) -> IgniteError:
        return InvalidInput(f"containerd at {self.socket} sent a malformed answer for {what}"
                            f" ({exc})", hint="is this socket containerd's?")

    # Content

    def content_size(self, digest: str) -> int | None:
        """The size of a committed blob; None if the store lacks it."""
        answer = self.call("/containerd.services.content.v1.Content/Info",
                           wire.string(1, digest), f"the content {digest}")
        if answer is None:
            return None
        try:
            info = wire.fields(wire.get_bytes(wire.fields(answer), 1))
            if wire.get_str(info, 1) != digest:
                raise wire.WireError(f"it describes {wire.get_str(info, 1)!r}")
            return wire.get_int(info, 2)
        except wire.WireError as exc:
            raise self.malformed(f"the content {digest}", exc) from None

    @contextmanager
    def read(self, digest: str, size: int, label: str) -> Iterator[BinaryIO]:
        """The bytes of a blob as a stream, exactly ``size`` of them (the caller checks
        the digest: all of it is untrusted)."""
        assert self._channel is not None
        stub = self._channel.unary_stream("/containerd.services.content.v1.Content/Read")
        call = stub(wire.string(1, digest), metadata=self._metadata(None))
        try:
            yield io.BufferedReader(_Blob(self, call, size, label), 1 << 20)
        finally:
            call.cancel()  # (a no-op once the stream has ended)

    # Leases

    @contextmanager
    def lease(self) -> Iterator[str]:
        """A lease for the block: content added to it stays until it is released (or it
        expires, if this process dies first)."""
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + LEASE_EXPIRY))
        lease_id = f"ignite-import-{secrets.token_hex(8)}"
        request = wire.string(1, lease_id) + wire.string_map(
            3, {"containerd.io/gc.expire": expires})
        self.call("/containerd.services.leases.v1.Leases/Create", request, "a lease")
        try:
            yield lease_id
        finally:
            try:
                self.call("/containerd.services.leases.v1.Leases/Delete",
                          wire.string(1, lease_id), f"the release of lease {lease_id}")
            except IgniteError as exc:  # it expires on its own
                log.warning("Could not release containerd lease %s: %s", lease_id, exc)

    def hold(self, lease_id: str, digest: str) -> None:
        """Keep the blob ``digest`` from containerd's garbage collector while the lease lives."""
        resource = wire.string(1, digest) + wire.string(2, "content")
        if self.call("/containerd.services.leases.v1.Leases/AddResource",
                     wire.string(1, lease_id) + wire.message(2, resource),
                     f"a lease on {digest}") is None:
            raise IgniteError(f"containerd lost lease {lease_id} during the import",
                              hint="try again")


class _Blob(io.RawIOBase):
    """A Content.Read stream as a file: checks that the pieces come in order and that
    exactly ``size`` bytes arrive."""

    def __init__(self, client: Client, call: Any, size: int, label: str):
        self._client, self._call, self._size, self._label = client, call, size, label
        self._pos = 0
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._pending:
            piece = self._next()
            if piece is None:
                return 0
            self._pending = memoryview(piece)
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _next(self) -> bytes | None:
        try:
            answer = next(self._call)
        except StopIteration:
            if self._pos != self._size:
                raise InvalidInput(f"{self._label} from containerd is truncated ({self._pos} of"
                                   f" {self._size} bytes)") from None
            return None
        except grpc.RpcError as exc:
            raise self._client.error(exc, f"reading {self._label}") from None
        try:
            msg = wire.fields(bytes(answer))
            offset, data = wire.get_int(msg, 1), wire.get_bytes(msg, 2)
        except wire.WireError as exc:
            raise self._client.malformed(f"reading {self._label}", exc) from None
        if offset != self._pos:
            raise InvalidInput(f"containerd sent {self._label} out of order (bytes at "
                               f"{offset}, expected {self._pos})")
        self._pos += len(data)
        if self._pos > self._size:
            raise InvalidInput(f"{self._label} from containerd is longer than its "
                               f"{self._size} bytes", hint="its store is corrupt")
        return data


def _check_socket(path: str) -> None:
    """Connect once to name what is wrong with the socket, if anything."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise InvalidInput(f"{path} is not a socket", hint=_SOCKET_HINT)
    except FileNotFoundError:
        raise IgniteError(f"no containerd socket at {path}", hint=_SOCKET_HINT) from None
    except PermissionError:
        raise IgniteError(f"permission denied reaching containerd's socket {path}",
                          hint="run as root (or as a member of the socket's group)") from None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(CALL_TIMEOUT)
        try:
            s.connect(path)
        except PermissionError:
            raise IgniteError(f"permission denied on containerd's socket {path}",
                              hint="run as root (or as a member of the socket's group)"
                              ) from None
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                raise IgniteError(f"containerd is not listening on {path} (connection "
                                  "refused)", hint=_SOCKET_HINT) from None
            raise IgniteError(f"cannot connect to containerd at {path}: "
                              f"{exc.strerror or exc}", hint=_SOCKET_HINT) from None
