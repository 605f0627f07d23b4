FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/ledgerdesk ./cmd/ledgerdesk

FROM debian:bookworm-slim
COPY --from=build /out/ledgerdesk /usr/local/bin/ledgerdesk
RUN useradd --system --home /var/lib/ledgerdesk ledgerdesk && mkdir -p /var/lib/ledgerdesk && chown ledgerdesk /var/lib/ledgerdesk
USER ledgerdesk
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ledgerdesk"]
CMD ["serve"]
