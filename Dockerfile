# Multi-stage build: a static keyhole binary on distroless, running as uid/gid 65532.
#
#   docker build --build-arg VERSION=v1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) -t keyhole .
#
# Base images. Tags move; for a reproducible build pin each by digest, read from the
# registry at the time you pin (never copied from elsewhere):
#   docker buildx imagetools inspect golang:1.26 --format '{{json .Manifest.Digest}}'
#   crane digest gcr.io/distroless/static-debian12:nonroot
# and pass them as --build-arg GO_IMAGE=golang:1.26@sha256:<digest>
#                  --build-arg RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:<digest>
# (or write the digests here; Renovate and Dependabot then keep them current).
ARG GO_IMAGE=golang:1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
# What `keyhole version`, the startup log and HAR exports report (.git is not in the
# build context, so go build cannot read the commit itself).
ARG VERSION=devel
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.buildVersion=${VERSION} -X main.buildCommit=${COMMIT}" \
      -o /out/keyhole ./cmd/keyhole
# The volume's mount point, owned by the user the image runs as: Docker copies it, with
# its owner, into a new named volume.
RUN mkdir -p /out/var/lib/keyhole && chown 65532:65532 /out/var/lib/keyhole && chmod 0750 /out/var/lib/keyhole

FROM ${RUNTIME_IMAGE}
ARG VERSION=devel
ARG COMMIT=unknown
# The repository carries no licence file yet: SPDX NOASSERTION until it does (then its
# SPDX identifier, here or by --build-arg LICENSES=...).
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="keyhole" \
      org.opencontainers.image.description="Least-privilege gateway between AI agents and internal HTTP APIs" \
      org.opencontainers.image.source="https://github.com/keyholehq/keyhole" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.licenses="${LICENSES}"
COPY --from=build /out/keyhole /usr/local/bin/keyhole
COPY configs/container.yaml /etc/keyhole/keyhole.yaml
COPY --from=build --chown=65532:65532 /out/var/lib/keyhole /var/lib/keyhole
USER 65532:65532
# The store (sqlite:///var/lib/keyhole/keyhole.db in configs/container.yaml); nothing else
# is written, so the root filesystem can be read-only.
VOLUME /var/lib/keyhole
# 8080 data plane, 9090 admin plane (admin API, console), 9091 ops (/healthz, /readyz, /metrics).
EXPOSE 8080 9090 9091
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/keyhole", "health", "--config", "/etc/keyhole/keyhole.yaml", "--timeout", "4s"]
ENTRYPOINT ["/usr/local/bin/keyhole"]
CMD ["serve", "--config", "/etc/keyhole/keyhole.yaml"]
