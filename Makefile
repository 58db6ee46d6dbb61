# pxeswarm: `make demo` runs the main job, `make test` runs the tests.
# Both install what they need first (scripts/deps.sh).
GO      ?= go
BIN     := bin/pxeswarm
# A count, not a duration: Go 1.26's fuzz coordinator can fail a target
# with a bare "context deadline exceeded" when a -fuzztime duration ends
# (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
FUZZTIME ?= 30000x
export CGO_ENABLED := 0

.PHONY: all build deps demo demo-capture demo-local test unit test-console test-qemu-full fuzz bench bench-quick bench-hash bench-mktorrent bench-memory bench-slowpeers clean deb

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/pxeswarm

deps:
	@scripts/deps.sh

# The virtual classroom: 3 QEMU machines PXE-boot and get imaged (root).
demo: deps build
	$(GO) build -o bin/demo ./demo
	bin/demo --pxeswarm $(BIN)

# The image's life from a golden machine: pc1 is captured over PXE
# (pxeswarm capture --mac), then pc2 and pc3 deploy the captured image from
# the swarm and boot it (root; about 6 minutes).
demo-capture: deps build
	$(GO) build -o bin/demo ./demo
	bin/demo --pxeswarm $(BIN) --capture --data 67108864

# The swarm alone, on loopback: a seeder and six fetchers, no VMs.
demo-local: deps build
	BIN=$(BIN) scripts/demo-local.sh

test: deps unit fuzz bench-quick

unit:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 45m ./...

# The web console alone: its access tests and the headless-Chromium test
# (part of unit), keeping the pages' screenshots in bin/screenshots.
test-console: deps
	PXESWARM_SCREENSHOTS=$(CURDIR)/bin/screenshots $(GO) test -count=1 -run 'TestConsole' ./pxe/

# Every QEMU test, the extended tier too (CI runs the covering subset in
# make test; see the README's "Testing in QEMU").
test-qemu-full: deps
	PXESWARM_QEMU_TIER=full $(GO) test -count=1 -timeout 90m ./qemu-tests/

# Every fuzz target runs briefly (30000 inputs); FUZZTIME=1000000x for a
# longer search. Each
# parser of network or file input has one: torrents, announces, plans,
# site configs, DHCP packets (server and the agent's client) and lease
# files, the status, admin and GET routes, TFTP names, partition tables,
# kernel module indexes, resume state files, the peer-wire messages
# that drive the seeder's reveal schedule and the leecher's reveal
# rewrite, the server's torrent cache, and the filesystems a used map
# reads (ext, FAT, NTFS, swap), a capture's manifest, a report's
# machine inventory, and the console's post-login redirect.
FUZZ_TARGETS := imager:FuzzLoad tracker:FuzzParseAnnounce protocol:FuzzVerify pxe:FuzzParseSite \
	pxe/dhcp:FuzzFull pxe/dhcp:FuzzProxy pxe/dhcp:FuzzLeaseFile pxe/dhcp:FuzzLeaseJournal pxe:FuzzStatusAPI pxe:FuzzAdminAPI \
	partition:FuzzReadTable initramfs:FuzzParseCmdline initramfs:FuzzParseStickConfig \
	initramfs/coldplug:FuzzParseDep initramfs/coldplug:FuzzParseSoftdep initramfs/dhclient:FuzzNewDiscovery \
	imager:FuzzLoadState imager:FuzzSchedule pxe:FuzzTFTPName pxe:FuzzGetRoutes \
	imager:FuzzLeecherReveal pxe/catalog:FuzzTorrentCache \
	usedmap:FuzzExt usedmap:FuzzFAT usedmap:FuzzNTFS usedmap:FuzzDetect \
	protocol:FuzzParseManifest protocol:FuzzInventory protocol:FuzzReceived pxe/console:FuzzSafeNext pxe:FuzzParseWeekly pxe:FuzzScheduleAPI pxe/wake:FuzzParse
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t#*:}; echo "fuzz $$pkg $$fn"; \
		$(GO) test -run=NONE -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=200x ./$$pkg/; \
	done

# The fleet benchmark on a simulated LAN (network namespaces, needs root):
# every method side by side on a raw image and on ext4 and NTFS images
# (used blocks: pxeswarm against Clonezilla's partclone + udpcast), plus
# what mktorrent reads of a 256 GB partition, the peak RSS of seed and
# fetch on a 256 GiB image (a minute more; INITRAMFS=path adds the agent's
# 1 GiB budget) and a capture of ext4 and NTFS golden disks (bin/bench
# --only capture runs it alone); writes docs/BENCHMARKS.md and
# docs/bench.svg (the committed run took 55 minutes on 2 cores: about 36
# for the raw image with the two rooms and the fleet rows up to N=100, the
# rest for the filesystem images, the capture, the read cost and memory;
# bin/bench --help selects).
bench: deps build
	$(GO) build -o bin/bench ./bench
	bin/bench --pxeswarm $(BIN) $(if $(INITRAMFS),--initramfs $(INITRAMFS))

# N=4: a small raw image, pxeswarm against HTTP unicast, and a 256 MiB ext4
# image, pxeswarm against partclone + udpcast: fails unless pxeswarm's T_all
# ratio is below the other's in both; then pxeswarm capture of that ext4 to
# pxeswarm serve over one 25 Mbit/s link: fails if it moved more than
# 1.05 × used or took over 1.3 × max(used/R, read) (part of make test;
# about 65 s, 16 of them the capture).
bench-quick: deps build
	$(GO) build -o bin/bench ./bench
	bin/bench --quick --pxeswarm $(BIN)

# What mktorrent reads to make the used-block torrent of a 256 GB ext4
# partition (a sparse file) holding 4 GiB of files: read bytes against used
# bytes, from the process's /proc/PID/io (needs 10 GiB free in $TMPDIR).
bench-mktorrent: build
	$(GO) build -o bin/bench ./bench
	bin/bench mktorrent-cost --pxeswarm $(BIN)

# Peak RSS of pxeswarm seed and fetch for a 256 GiB image (sparse files;
# the fetch runs a minute at about 1 Gbit/s on loopback and writes about
# 7 GiB to $TMPDIR). INITRAMFS=path adds the 1 GiB terminal's budget.
bench-memory: build
	$(GO) build -o bin/bench ./bench
	bin/bench memory --pxeswarm $(BIN) $(if $(INITRAMFS),--initramfs $(INITRAMFS))

# pxeswarm with every client held to 5% of a core (a CPU cgroup each; every
# link at 1000 Mbit/s, as make demo's are not shaped), N=3 and 8, beside
# homogeneous N=4, 8, 16: server copies, share from peers, T_all/T_min
# (bench/slowcpu.go; about 3 minutes).
bench-slowpeers: build
	$(GO) build -o bin/bench ./bench
	bin/bench --only slowpeers --pxeswarm $(BIN)

# mktorrent's hasher against sha1sum on the same 1 GiB file, as a ratio.
bench-hash:
	$(GO) test -run=NONE -bench=HashVsSha1sum -benchtime=3x ./imager/

clean:
	rm -rf bin

# The terminals' kernel and initramfs (build/, from this checkout): Debian's
# kernel with its NIC and disk drivers, u-root, the agent, and the server's
# public plan key. PLAN_KEY and BOOT_DIR default to `pxeswarm serve`'s state
# folder, so a rebuilt pair is served at once.
# FIRMWARE_DIR is where the NICs' firmware is taken from: the host's
# /lib/firmware by default; `make firmware` fills bin/firmware from
# Debian's non-free-firmware without changing this host's apt sources
# (then FIRMWARE_DIR=bin/firmware).
PLAN_KEY ?= /var/lib/pxeswarm/plan-key.pub
BOOT_DIR ?= /var/lib/pxeswarm/boot
FIRMWARE_DIR ?= /lib/firmware
.PHONY: initramfs firmware
initramfs: deps build
	$(BIN) build initramfs --out $(BOOT_DIR) --key $(PLAN_KEY) --firmware-dir $(FIRMWARE_DIR)

firmware:
	bash scripts/firmware.sh bin/firmware

# The Debian package (build/deb, with nfpm): /usr/bin/pxeswarm, the systemd
# unit, /etc/pxeswarm/site.toml, and the terminals' kernel and initramfs
# built here without a plan key (serve appends its own) into
# /usr/lib/pxeswarm/boot; depends on Debian's ipxe. Needs the kernel and
# modules the initramfs is built from (linux-image-amd64). Writes
# bin/pxeswarm_<version>_amd64.deb; install it with
#   apt install ./bin/pxeswarm_<version>_amd64.deb
# (TestPackage in build/deb, part of make test, installs one into a
# scratch root and serves from it.)
DEB_VERSION ?= $(shell git log -1 --format=0.1.0~git%cd.%h --date=format:%Y%m%d 2>/dev/null || echo 0.1.0)
DEB_BOOT    := bin/deb-boot
deb: deps firmware
	$(GO) build -trimpath -ldflags="-s -w" -o bin/deb-pxeswarm ./cmd/pxeswarm
	bin/deb-pxeswarm build initramfs --out $(DEB_BOOT) --key none --firmware-dir bin/firmware
	$(GO) run ./cmd/pxeswarm-deb --binary bin/deb-pxeswarm --boot-dir $(DEB_BOOT) \
		--version $(DEB_VERSION) --out bin/pxeswarm_$(DEB_VERSION)_amd64.deb
