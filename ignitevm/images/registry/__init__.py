"""Pulling images from OCI registries (the distribution API) with a client of our own.

- :mod:`tls`: which scheme and certificates a registry host gets;
- :mod:`credentials`: where a user's registry credentials come from;
- :mod:`auth`: Basic and Bearer-token authentication, tokens cached per scope;
- :mod:`client`: HTTP with retries, timeouts and safe redirects;
- :mod:`manifests`: manifests and indexes, platform selection;
- :mod:`pull`: manifests, config and layers into the shared content store.
"""
