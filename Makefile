# The README's two commands are `make run` and `make test`; .ci/run calls `make test`.
GO        ?= go
TOOL      := $(GO) tool -modfile=tools.mod
PKGS      := ./...
FUZZTIME  ?= 20000x

.PHONY: run build test prepare check-fmt vet lint staticcheck unit fuzz bench fmt

run: ## start the service (embedded store under ./data unless LEDGERDESK_DATABASE_URL is set)
	$(GO) run ./cmd/ledgerdesk serve

build:
	$(GO) build -o ledgerdesk ./cmd/ledgerdesk

test: prepare check-fmt vet lint unit fuzz ## the whole suite, as CI runs it

prepare: ## install Dovecot if missing, make sure PostgreSQL answers, build SeaweedFS's weed once (S3 tests)
	bash .ci/prepare

check-fmt:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

lint: ## golangci-lint v2 (includes staticcheck and the depguard rule that keeps domain pure)
	$(TOOL) golangci-lint run $(PKGS)

staticcheck:
	$(TOOL) staticcheck $(PKGS)

unit:
	CI=$${CI:-1} $(GO) test -race -count=1 -timeout 20m $(PKGS)

fuzz: ## a short run of every fuzz target (a count, not a duration: time-based runs can fail spuriously under load)
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./adapters/mimeparse
	$(GO) test -run='^$$' -fuzz='^FuzzParseAddress$$' -fuzztime=$(FUZZTIME) ./adapters/mimeparse
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeUTF7$$' -fuzztime=$(FUZZTIME) ./adapters/mimeparse
	$(GO) test -run='^$$' -fuzz='^FuzzReadResponse$$' -fuzztime=$(FUZZTIME) ./adapters/pop3source
	$(GO) test -run='^$$' -fuzz='^FuzzDotRoundTrip$$' -fuzztime=$(FUZZTIME) ./adapters/pop3source
	$(GO) test -run='^$$' -fuzz='^FuzzParseTicketReference$$' -fuzztime=$(FUZZTIME) ./domain
	$(GO) test -run='^$$' -fuzz='^FuzzDecideMail$$' -fuzztime=$(FUZZTIME) ./domain
	$(GO) test -run='^$$' -fuzz='^FuzzJSONPlan$$' -fuzztime=$(FUZZTIME) ./projections

bench: ## event store throughput against raw pgx baselines
	$(GO) run ./cmd/ledgerdesk bench

fmt:
	$(TOOL) gofumpt -l -w . || gofmt -w .
