#!/usr/bin/env bash
# The local swarm demo: one seeder with the tracker and several fetchers on
# loopback, each on its own 127.x address as machines on a LAN would be.
# It shows their progress live, then checks every copy byte for byte.
set -euo pipefail

BIN=${BIN:-bin/pxeswarm}
N=${DEMO_FETCHERS:-6}
SIZE_MB=${DEMO_SIZE_MB:-256}
work=$(mktemp -d /tmp/pxeswarm-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

echo "== pxeswarm local swarm demo: $N fetchers, a ${SIZE_MB} MiB image in two partitions"
head -c $((SIZE_MB / 8))M /dev/urandom >"$work/esp.img"
head -c $((SIZE_MB - SIZE_MB / 8))M /dev/urandom >"$work/root.img"
port=$((20000 + RANDOM % 20000))
"$BIN" mktorrent --name demo --tracker "http://127.0.0.1:$port/announce" --table gpt \
	-o "$work/demo.torrent" "$work/esp.img" "$work/root.img"

"$BIN" seed --torrent "$work/demo.torrent" --source "$work/esp.img,$work/root.img" \
	--listen 127.2.0.1:0 --tracker-listen "127.0.0.1:$port" --interval 2s \
	--progress-every 1s >"$work/seed.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q "joined swarm" "$work/seed.log" && break; sleep 0.1; done

start=$(date +%s.%N)
for i in $(seq "$N"); do
	"$BIN" fetch --torrent "$work/demo.torrent" --target "$work/m$i-esp.img,$work/m$i-root.img" \
		--listen "127.2.1.$i:0" --seed-for 5s --progress-every 500ms >"$work/m$i.log" 2>&1 &
	pids+=($!)
done

show() {
	for i in $(seq "$N"); do
		line=$(grep -E '^fetch: ' "$work/m$i.log" | tail -n 1 || true)
		printf 'machine %-2d %s%s\n' "$i" "${line#fetch: }" "$eol"
	done
}
tty=false eol=''
[ -t 1 ] && tty=true eol=$'\033[K'
while :; do
	running=0
	for p in "${pids[@]:1}"; do kill -0 "$p" 2>/dev/null && running=$((running + 1)); done
	show
	[ "$running" -eq 0 ] && break
	if $tty; then sleep 0.5; printf '\033[%dA' "$N"; else sleep 2; echo; fi
done

fail=0
for i in $(seq "$N"); do
	wait "${pids[$i]}" || { echo "machine $i: fetch failed"; tail -5 "$work/m$i.log"; fail=1; }
done
end=$(date +%s.%N)
echo
echo "== checking every copy against the source"
for i in $(seq "$N"); do
	if cmp -s "$work/esp.img" "$work/m$i-esp.img" && cmp -s "$work/root.img" "$work/m$i-root.img"; then
		echo "machine $i: both partitions identical"
	else
		echo "machine $i: MISMATCH"; fail=1
	fi
done
kill -INT "${pids[0]}"; wait "${pids[0]}" || true
sent=$(grep -o 'uploaded_bytes=[0-9]*' "$work/seed.log" | tail -n1 | cut -d= -f2)
total=$((SIZE_MB * 1024 * 1024))
awk -v s="$sent" -v t="$total" -v n="$N" -v a="$start" -v b="$end" 'BEGIN {
	printf "== %d machines imaged in %.1fs; the seeder sent %.2f copies of the image, the machines traded the other %.2f\n", n, b - a, s / t, n - s / t }'
exit $fail
