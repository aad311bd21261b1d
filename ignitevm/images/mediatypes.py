"""The media types of OCI and Docker images (kept free of imports: the CLI's fast
pull path reads them)."""

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
CONFIG_TYPES = {
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
}
LAYER_TYPES = {
    f"application/vnd.oci.image.layer.{kind}v1.tar{suffix}"
    for kind in ("", "nondistributable.")
    for suffix in ("", "+gzip", "+zstd")
} | {
    f"application/vnd.docker.image.rootfs.{t}.tar{z}"
    for t in ("diff", "foreign.diff")
    for z in ("", ".gzip")
}
