# pxeswarm: `make demo` runs the main job, `make test` runs the tests.
# Both install what they need first (scripts/deps.sh).
GO      ?= go
BIN     := bin/pxeswarm
FUZZTIME ?= 10s
export CGO_ENABLED := 0

.PHONY: all build deps demo test unit fuzz bench-hash clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/pxeswarm

deps:
	@scripts/deps.sh

demo: deps build
	BIN=$(BIN) scripts/demo-local.sh

test: deps unit fuzz

unit:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

# Every fuzz target runs briefly; FUZZTIME=5m for a longer search.
fuzz:
	$(GO) test -run=NONE -fuzz='^FuzzLoad$$' -fuzztime=$(FUZZTIME) ./imager/
	$(GO) test -run=NONE -fuzz='^FuzzParseAnnounce$$' -fuzztime=$(FUZZTIME) ./tracker/

# mktorrent's hasher against sha1sum on the same 1 GiB file, as a ratio.
bench-hash:
	$(GO) test -run=NONE -bench=HashVsSha1sum -benchtime=3x ./imager/

clean:
	rm -rf bin
