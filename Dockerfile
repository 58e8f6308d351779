# Multi-stage build: a static keyhole binary on distroless, running as non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/keyhole ./cmd/keyhole

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keyhole /usr/local/bin/keyhole
COPY configs/keyhole.yaml /etc/keyhole/keyhole.yaml
USER nonroot:nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/keyhole"]
CMD ["serve", "--config", "/etc/keyhole/keyhole.yaml"]
