FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The build context has no .git (.dockerignore): the version comes in here.
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=${VERSION}" -o /out/ledgerdesk ./cmd/ledgerdesk

FROM debian:bookworm-slim
# ca-certificates: TLS to IMAP, POP3 and SMTP servers and to OAuth token
# endpoints is verified against the system's roots (/etc/ssl/certs); the
# slim image has none, so every verified connection would fail.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed, numeric, unprivileged user: volumes keep their owner across
# rebuilds, and Kubernetes' runAsNonRoot can check a number.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/ledgerdesk --no-create-home --shell /usr/sbin/nologin ledgerdesk \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/ledgerdesk
COPY --from=build /out/ledgerdesk /usr/local/bin/ledgerdesk
# The defaults (./data, 127.0.0.1:8080) would be unwritable and unreachable
# in a container.
ENV LEDGERDESK_DATA_DIR=/var/lib/ledgerdesk \
    LEDGERDESK_HTTP_ADDR=0.0.0.0:8080
WORKDIR /var/lib/ledgerdesk
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ledgerdesk"]
CMD ["serve"]
