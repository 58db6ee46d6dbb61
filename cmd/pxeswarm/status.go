package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pxeswarm/pxeswarm/internal/bytesize"
	"github.com/pxeswarm/pxeswarm/protocol"
	"github.com/pxeswarm/pxeswarm/pxe"
	"github.com/pxeswarm/pxeswarm/tracker"
)

func runStatus(ctx context.Context, args []string) error {
	fs := newFlagSet("status", "[--server URL] [--watch] [--until-done] [--machine MAC]", `
Show what the boot server's machines are doing: each machine's task, the
phase its agent reported, progress, rate and peers, and for each swarm how
much the server sent against what the machines traded among themselves.
With --machine, one machine: its record, its active task and the
hardware its agent found (vendor, model, serial, CPU, memory, disks,
NICs, firmware, Secure Boot). It reads the server's read API (no token
needed).

Examples:
  pxeswarm status --server http://198.18.0.1:8080
  pxeswarm status --watch                      # redraw every 2s
  pxeswarm status --watch --until-done         # exit when no task is active (1 if any failed)
  pxeswarm status --machine 52:54:00:12:34:56  # one machine and its inventory`)
	fs.section("status")
	server := fs.String("server", "http://127.0.0.1:8080", "the boot server's URL")
	watch := fs.Bool("watch", false, "keep showing the status")
	every := fs.Duration("every", 2*time.Second, "how often --watch refreshes")
	fs.note("every")
	untilDone := fs.Bool("until-done", false, "with --watch: exit once every task has ended (exit status 1 if any failed)")
	machine := fs.String("machine", "", "show this machine (its MAC) and its inventory instead of the room")
	if err := fs.parse(args); err != nil {
		return err
	}
	base := strings.TrimRight(*server, "/")
	client := &http.Client{Timeout: 5 * time.Second}
	if *machine != "" {
		mac, err := protocol.ParseMAC(*machine)
		if err != nil {
			return fmt.Errorf("--machine: %w", err)
		}
		var m pxe.MachineStatus
		if err := getJSON(ctx, client, base, "/api/machines/"+mac, &m); err != nil {
			return err
		}
		printMachine(os.Stdout, m)
		return nil
	}
	tty := isTerminal(os.Stdout)
	for {
		snap, err := fetchStatus(ctx, client, base)
		switch {
		case err != nil && !*watch:
			return err
		case err != nil:
			fmt.Printf("%s  server unreachable: %v (retrying)\n", time.Now().Format("15:04:05"), err)
		default:
			if *watch && tty {
				fmt.Print("\033[H\033[2J")
			}
			snap.print(os.Stdout, base)
			if *untilDone && snap.status.Active == 0 && len(snap.tasks) > 0 {
				if n := snap.status.Tasks[protocol.TaskFailed]; n > 0 {
					return fmt.Errorf("%d task(s) failed: see the errors above and the machines' consoles", n)
				}
				return nil
			}
		}
		if !*watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*every):
		}
	}
}

// statusSnapshot is one read of the server's API.
type statusSnapshot struct {
	status   pxe.Status
	machines []pxe.MachineStatus
	tasks    []pxe.Task
	swarms   []tracker.SwarmStats
}

// latest is each machine's newest task (active or finished).
func (s *statusSnapshot) latest() map[string]*pxe.Task {
	m := map[string]*pxe.Task{}
	for i := range s.tasks {
		t := &s.tasks[i]
		if old, ok := m[t.MAC]; !ok || t.Created.After(old.Created) {
			m[t.MAC] = t
		}
	}
	return m
}

func fetchStatus(ctx context.Context, c *http.Client, base string) (*statusSnapshot, error) {
	var s statusSnapshot
	for _, q := range []struct {
		path string
		into any
	}{{"/api/status", &s.status}, {"/api/machines", &s.machines}, {"/api/tasks", &s.tasks}, {"/api/swarms", &s.swarms}} {
		if err := getJSON(ctx, c, base, q.path, q.into); err != nil {
			return nil, err
		}
	}
	return &s, nil
}

// getJSON reads one route of the server's read API into into.
func getJSON(ctx context.Context, c *http.Client, base, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
	if err != nil {
		return fmt.Errorf("--server %q: %w", base, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%w (is pxeswarm serve running, and is --server right?)", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("GET %s: %w: is %s a pxeswarm server?", path, err, base)
	}
	return nil
}

// printMachine shows one machine, its active task and its inventory.
func printMachine(w io.Writer, m pxe.MachineStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	when := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Local().Format("2006-01-02 15:04:05")
	}
	row("machine", "%s", m.MAC)
	row("name", "%s (group %s)", dash(m.Name), dash(m.Group))
	row("ip", "%s (firmware arch %s)", dash(m.IP), dash(m.Arch))
	row("seen", "first %s, last %s", when(m.FirstSeen), when(m.LastSeen))
	if t := m.Task; t != nil {
		row("task", "%s: image %s, %s", t.ID, t.Image, t.State)
	} else {
		row("task", "none active")
	}
	inv := m.Inventory
	if inv == nil {
		row("inventory", "none yet: the agent sends it with its first report on a task")
		tw.Flush()
		return
	}
	s := inv.System
	row("inventory", "reported %s", when(m.InventoryAt))
	row("system", "%s %s, serial %s", dash(s.Vendor), dash(s.Product), dash(s.Serial))
	row("board", "%s %s, serial %s", dash(s.BoardVendor), dash(s.BoardName), dash(s.BoardSerial))
	row("bios", "%s %s (%s)", dash(s.BIOSVendor), dash(s.BIOSVersion), dash(s.BIOSDate))
	sb := "Secure Boot unknown"
	switch inv.SecureBoot {
	case protocol.SecureBootEnabled:
		sb = "Secure Boot on"
	case protocol.SecureBootDisabled:
		sb = "Secure Boot off"
	}
	row("firmware", "%s, %s", dash(strings.ToUpper(inv.Firmware)), sb)
	row("cpu", "%s (%d cores, %d threads)", dash(inv.CPU.Model), inv.CPU.Cores, inv.CPU.Threads)
	row("memory", "%s", bytesize.Format(inv.MemoryBytes))
	for _, d := range inv.Disks {
		row("disk", "%s\t%s\t%s\t%s", d.Name, dash(d.Bus), bytesize.Format(d.SizeBytes), dash(d.Model))
	}
	for _, n := range inv.NICs {
		speed := "link down"
		if n.SpeedMbps > 0 {
			speed = fmt.Sprintf("%d Mb/s", n.SpeedMbps)
		}
		row("nic", "%s\t%s\t%s\t%s", n.Name, dash(n.Driver), dash(n.MAC), speed)
	}
	tw.Flush()
}

func (s *statusSnapshot) print(w io.Writer, base string) {
	fmt.Fprintf(w, "pxeswarm %s  %s  up %s  machines %d  active tasks %d\n\n",
		base, time.Now().Format("15:04:05"), s.status.Uptime, s.status.Machines, s.status.Active)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tNAME\tIP\tTASK\tSTATE\tPHASE\tDONE\tRATE\tPEERS\tNOTE")
	sort.Slice(s.machines, func(i, j int) bool { return s.machines[i].MAC < s.machines[j].MAC })
	latest := s.latest()
	for _, m := range s.machines {
		task, state, phase, done, rate, peers, note := "-", "-", "-", "-", "-", "-", ""
		if t := latest[m.MAC]; t != nil {
			task, state = t.ID, string(t.State)
			note = t.Error
			if r := t.LastReport; r != nil {
				phase = r.Phase
				if r.BytesTotal > 0 {
					done = fmt.Sprintf("%3.0f%%", 100*float64(r.BytesDone)/float64(r.BytesTotal))
				}
				rate = bytesize.Format(r.RateBPS) + "/s"
				peers = fmt.Sprint(r.Peers)
				if note == "" {
					note = r.Message
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.MAC, dash(m.Name), dash(m.IP), task, state, phase, done, rate, peers, note)
	}
	tw.Flush()
	// The seeder announces from the server's public address, which the
	// torrent URLs carry; --server may name another (127.0.0.1).
	host := ""
	for _, raw := range append([]string{base}, imageTorrents(s.status.Images)...) {
		if u, err := url.Parse(raw); err == nil && u.Hostname() != "" {
			host = u.Hostname()
		}
	}
	for _, sw := range s.swarms {
		// The tracker's per-host totals: they keep counting after a
		// machine leaves the swarm.
		var fromServer, fromMachines int64
		for _, h := range sw.Hosts {
			if h.Addr.String() == host {
				fromServer += h.Uploaded
			} else {
				fromMachines += h.Uploaded
			}
		}
		copies := ""
		for _, im := range s.status.Images {
			if im.InfoHash == sw.InfoHash && im.Size > 0 {
				copies = fmt.Sprintf(" (%.2f× the image)", float64(fromServer)/float64(im.Size))
			}
		}
		fmt.Fprintf(w, "\nswarm %s: %d peers now (%d complete); the server has sent %s%s, the machines %s to each other\n",
			sw.Name, sw.Peers, sw.Seeders, bytesize.Format(fromServer), copies, bytesize.Format(fromMachines))
	}
	for _, c := range s.status.Captures {
		line := fmt.Sprintf("\ncapture %s of %s: %s, %s of %s", c.ID, c.Name, c.State, bytesize.Format(c.Received), bytesize.Format(c.Total))
		if c.Image != "" {
			line += ", published as " + c.Image
		}
		if c.Error != "" {
			line += ": " + c.Error
		}
		fmt.Fprintln(w, line)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func imageTorrents(ims []pxe.ImageStatus) []string {
	var urls []string
	for _, im := range ims {
		urls = append(urls, im.Torrent)
	}
	return urls
}
