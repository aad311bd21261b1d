"""Images read from a running containerd's store (``image import --runtime containerd``).

:mod:`wire` encodes and decodes the few protobuf messages used, :mod:`client`
speaks containerd's gRPC API over its unix socket, and :mod:`source` opens an
image there as an :class:`~ignitevm.images.source.ImageSource`, through the same
OCI reader as archives and layouts.
"""
