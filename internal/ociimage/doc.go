// Package ociimage builds meshd's container images without a Docker
// daemon, with go-containerregistry: one layer holding a static binary
// (root-owned, not writable) and /etc/passwd and /etc/group naming the
// non-root user the image runs as (65532, "nonroot"); the config names that
// user, the binary as the entrypoint, the platform, and OCI labels with the
// version and source. The result is written as a tarball that `docker
// load`, `podman load`, `kind load image-archive` and go-containerregistry's
// tarball.ImageFromPath read. Its mkimage command is what `make image` runs.
package ociimage
