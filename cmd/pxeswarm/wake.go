package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pxeswarm/pxeswarm/pxe"
)

// adminClient calls the boot server's admin API with its token.
type adminClient struct {
	base, token string
	http        *http.Client
}

// adminFlags adds --server, --token-file and --fingerprint to fs. With
// tokenOptional (a read route) a missing token file is no error.
func adminFlags(fs *flagSet, tokenOptional ...bool) func() (*adminClient, error) {
	server := fs.String("server", "http://127.0.0.1:8080", "the boot server's URL; its admin URL (https://…) when it serves the admin API over HTTPS")
	tokenFile := fs.String("token-file", "/var/lib/pxeswarm/admin-token", "file holding the server's admin token (<state_dir>/admin-token on the server)")
	fingerprint := fs.String("fingerprint", "", "with an https:// --server: trust exactly the certificate of this SHA-256 fingerprint (pxeswarm serve logs it as https_fingerprint=)")
	return func() (*adminClient, error) {
		tok, err := os.ReadFile(*tokenFile)
		if err != nil && len(tokenOptional) > 0 && tokenOptional[0] && os.IsNotExist(err) {
			tok, err = nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("admin token: %w (copy <state_dir>/admin-token from the server and name it with --token-file)", err)
		}
		c := &adminClient{base: strings.TrimRight(*server, "/"), token: strings.TrimSpace(string(tok)), http: &http.Client{Timeout: 30 * time.Second}}
		if *fingerprint != "" {
			tc, err := pxe.PinnedTLS(*fingerprint)
			if err != nil {
				return nil, fmt.Errorf("%w: --fingerprint: %v", errUsage, err)
			}
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = tc
			c.http.Transport = tr
		}
		return c, nil
	}
}

// call sends body (nil: none) as JSON and decodes a 2xx reply into out.
func (c *adminClient) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("--server %q: %w", c.base, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w (is pxeswarm serve running, and is --server right?)", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Error)
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: %w: is %s a pxeswarm server?", method, path, err, c.base)
		}
	}
	return nil
}

func runWake(ctx context.Context, args []string) error {
	fs := newFlagSet("wake", "[--server URL] [--token-file FILE] (MAC... | --group GROUP)", `
Wake machines with Wake-on-LAN: the boot server sends each one's magic
packet (6×0xff, then its MAC 16 times, on UDP port 9) as a broadcast out
of the interface facing the terminals and to each subnet's directed
broadcast (the [wake] section of the site config). Only the admin token
can wake machines.

This sends once and starts nothing. To wake machines and re-image them in
one step, create the tasks with "wake": true (POST /api/tasks): the
server then sends again every 30s, up to 5 times, while a machine has not
PXE-booted. A machine wakes only if Wake-on-LAN is on in its firmware
(and often in the OS it was shut down from) and it has standby power.

Examples:
  pxeswarm wake 52:54:00:12:34:56 52:54:00:12:34:57
  pxeswarm wake --group room-101 --server https://198.18.0.1:8443 --fingerprint AB:CD:…`)
	fs.section("wake")
	group := fs.String("group", "", "wake every known machine of this group (as the config's [[machine]] group)")
	client := adminFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	macs := fs.Args()
	if (len(macs) == 0) == (*group == "") {
		fs.Usage()
		return fmt.Errorf("%w: name MACs or --group, not both", errUsage)
	}
	c, err := client()
	if err != nil {
		return err
	}
	var reply pxe.WakeReply
	if err := c.call(ctx, "POST", "/api/wake", pxe.WakeRequest{MACs: macs, Group: *group}, &reply); err != nil {
		return err
	}
	for _, s := range reply.Sent {
		fmt.Printf("sent magic packet for %s to %s\n", s.MAC, s.To)
	}
	if reply.Error != "" {
		return fmt.Errorf("some packets failed: %s", reply.Error)
	}
	return nil
}

func runSchedule(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stderr, scheduleHelp)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	switch args[0] {
	case "add":
		return runScheduleAdd(ctx, args[1:])
	case "list":
		return runScheduleList(ctx, args[1:])
	case "delete":
		return runScheduleDelete(ctx, args[1:])
	}
	fmt.Fprint(os.Stderr, scheduleHelp)
	return fmt.Errorf("%w: unknown schedule command %q: want add, list or delete", errUsage, args[0])
}

const scheduleHelp = `Usage: pxeswarm schedule add|list|delete [flags]

Schedules start tasks at a set time, once or every week: "Friday 22:00:
wake room-101, re-image it with lab, power off". The boot server keeps
them in its store, so they survive a restart; one whose time passed while
the server was down fires once when it starts again, if it is at most
schedule.grace (default 1h) late, and is recorded as missed otherwise.

  pxeswarm schedule add --weekly "fri 22:00" --group room-101 --image lab --wake --after poweroff
  pxeswarm schedule add --at 2026-12-24T06:00:00+01:00 --mac 52:54:00:12:34:56 --image lab
  pxeswarm schedule list
  pxeswarm schedule delete s3

Run 'pxeswarm schedule add -h' for every flag.
`

func runScheduleAdd(ctx context.Context, args []string) error {
	fs := newFlagSet("schedule add", "(--at TIME | --weekly RULE) (--mac MAC... | --group G) --image NAME [flags]", `
Add a schedule. When it fires, every machine named (or every known machine
of the group, as it is then) gets a task for the image, as POST
/api/tasks would make it; a machine that has an active task then is
skipped and named in the schedule's runs. With --wake the server sends
Wake-on-LAN packets right after and again while a machine has not
PXE-booted.

When:
  --at     once, an RFC 3339 time with its zone: 2026-12-04T22:00:00+01:00
  --weekly every week, in the server's time zone (schedule.time_zone):
           "fri 22:00", "mon,wed 07:15", "mon-fri 18:30", "daily 06:00"`)
	fs.section("when")
	at := fs.String("at", "", "fire once at this RFC 3339 time")
	weekly := fs.String("weekly", "", `fire every week: days and HH:MM, such as "fri 22:00"`)
	fs.section("what")
	var macs listFlag
	fs.Var(&macs, "mac", "a machine's MAC (repeat, or separate with commas)")
	group := fs.String("group", "", "every known machine of this group when it fires")
	image := fs.String("image", "", "the image to deploy (required)")
	name := fs.String("name", "", "a name shown in lists, such as \"room 101 friday\"")
	wakeUp := fs.Bool("wake", false, "wake the machines (Wake-on-LAN) once their tasks exist")
	after := fs.String("after", "", "what a machine does when done: reboot, poweroff or shell (default: the server's [plan])")
	check := fs.String("check", "", "fresh or verify (default: the server's [plan])")
	seedFor := fs.String("seed-for", "", "how long a finished machine seeds, e.g. 10m (default: the server's [plan])")
	onError := fs.String("on-error", "", "halt, retry or shell (default: the server's [plan])")
	fs.section("server")
	client := adminFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if (*at == "") == (*weekly == "") || (len(macs) == 0) == (*group == "") || *image == "" {
		fs.Usage()
		return fmt.Errorf("%w: need --at or --weekly, --mac or --group, and --image", errUsage)
	}
	c, err := client()
	if err != nil {
		return err
	}
	req := pxe.CreateSchedule{Name: *name, At: *at, Weekly: *weekly, MACs: macs,
		CreateTasks: pxe.CreateTasks{Group: *group, Image: *image, Wake: *wakeUp, After: *after, Check: *check, SeedFor: *seedFor, OnError: *onError}}
	var sc pxe.Schedule
	if err := c.call(ctx, "POST", "/api/schedules", req, &sc); err != nil {
		return err
	}
	fmt.Printf("schedule %s: next %s\n", sc.ID, sc.Next.Local().Format("Mon 2006-01-02 15:04 MST"))
	return nil
}

func runScheduleList(ctx context.Context, args []string) error {
	fs := newFlagSet("schedule list", "[--server URL] [--token-file FILE]", `
List the schedules: when each fires next, for whom, and its last run. This
reads the server's read API: no token is needed.`)
	fs.section("server")
	client := adminFlags(fs, true)
	if err := fs.parse(args); err != nil {
		return err
	}
	c, err := client()
	if err != nil {
		return err
	}
	var scs []pxe.Schedule
	if err := c.call(ctx, "GET", "/api/schedules", nil, &scs); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tWHEN\tNEXT\tFOR\tIMAGE\tWAKE\tLAST RUN")
	for _, sc := range scs {
		when := sc.Weekly
		if when == "" {
			when = "once " + sc.At.Local().Format("2006-01-02 15:04")
		}
		next := "-"
		if !sc.Next.IsZero() {
			next = sc.Next.Local().Format("Mon 01-02 15:04")
		}
		who := sc.Group
		if who == "" {
			who = strings.Join(sc.MACs, ",")
		}
		last := "-"
		if n := len(sc.Runs); n > 0 {
			r := sc.Runs[n-1]
			last = fmt.Sprintf("%s: %d task(s)", r.Ran.Local().Format("01-02 15:04"), len(r.Tasks))
			if len(r.Skipped) > 0 {
				last += fmt.Sprintf(", %d skipped", len(r.Skipped))
			}
			if r.Error != "" {
				last += ": " + r.Error
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\n", sc.ID, dash(sc.Name), when, next, who, sc.Image, sc.Wake, last)
	}
	return tw.Flush()
}

func runScheduleDelete(ctx context.Context, args []string) error {
	fs := newFlagSet("schedule delete", "[--server URL] [--token-file FILE] ID...", `
Delete schedules by ID (see pxeswarm schedule list). Tasks they started
stay; cancel those with POST /api/tasks/{id}/cancel.`)
	fs.section("server")
	client := adminFlags(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("%w: name the schedule IDs to delete", errUsage)
	}
	c, err := client()
	if err != nil {
		return err
	}
	for _, id := range fs.Args() {
		if err := c.call(ctx, "DELETE", "/api/schedules/"+id, nil, nil); err != nil {
			return err
		}
		fmt.Printf("schedule %s deleted\n", id)
	}
	return nil
}
