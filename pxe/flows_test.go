package pxe

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pxeswarm/pxeswarm/protocol"
)

// postReport sends body to base's report route as mac's agent, with the
// bearer token tok (none when empty), and returns the status code.
func postReport(t *testing.T, base, mac, body, tok string) int {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/api/report/"+mac, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestSwarmGraph: three machines' agents report, over HTTP and with their
// tasks' tokens, what they received from whom (the server, each other by
// IP and peer port, and a host that is no machine); GET /api/swarm and the
// console's event stream draw exactly those edges, with the machines
// named. Reports an attacker on the LAN can send (no token, another
// task's token, a wrong token, a report without a task) change nothing,
// and no stored report keeps the sources.
func TestSwarmGraph(t *testing.T) {
	f := newFixture(t, func(c *HTTPConfig) { c.Console.OpenRoom = true })
	base := serveLocal(t, f.cfg)
	macs := []string{"52:54:00:12:00:01", "52:54:00:12:00:02", "52:54:00:12:00:03"}
	tasks := make([]Task, len(macs))
	for i, mac := range macs {
		if err := f.store.PutMachine(Machine{MAC: mac, Name: fmt.Sprintf("pc-%02d", i+1), Group: "room-101"}); err != nil {
			t.Fatal(err)
		}
		tasks[i] = f.addTask(`{"mac": "` + mac + `", "image": "demo"}`)
	}
	rep := func(i int, port int, received string) string {
		return fmt.Sprintf(`{"task_id": %q, "phase": "imaging", "bytes_done": 1, "bytes_total": 100000000, "peer_port": %d, "received": [%s]}`,
			tasks[i].ID, port, received)
	}
	const MiB = 1 << 20
	// pc-01 fetched from the server only; pc-02 from the server and
	// pc-01; pc-03 from both machines, the server and a stranger.
	for i, body := range []string{
		rep(0, 7001, fmt.Sprintf(`{"from": "server", "bytes": %d}`, 10*MiB)),
		rep(1, 7002, fmt.Sprintf(`{"from": "127.0.0.1:7001", "bytes": %d}, {"from": "server", "bytes": %d}`, 6*MiB, 4*MiB)),
		rep(2, 7003, fmt.Sprintf(`{"from": "127.0.0.1:7002", "bytes": %d}, {"from": "127.0.0.1:7001", "bytes": %d}, {"from": "server", "bytes": %d}, {"from": "198.18.9.9:6881", "bytes": %d}`, 3*MiB, 2*MiB, 5*MiB, 1*MiB)),
	} {
		if code := postReport(t, base, macs[i], body, f.token(tasks[i].ID)); code != http.StatusOK {
			t.Fatalf("report %s = %d, want 200", body, code)
		}
	}
	// The attacks: each would add or change an edge if it counted.
	lie := fmt.Sprintf(`{"from": "server", "bytes": %d}, {"from": "127.0.0.1:7003", "bytes": %d}`, 999*MiB, 999*MiB)
	for _, a := range []struct {
		name, mac, body, tok string
		want                 int
	}{
		{"no token", macs[0], rep(0, 7001, lie), "", http.StatusUnauthorized},
		{"wrong token", macs[0], rep(0, 7001, lie), strings.Repeat("ab", 24), http.StatusUnauthorized},
		{"another task's token", macs[0], rep(0, 7001, lie), f.token(tasks[1].ID), http.StatusUnauthorized},
		{"own token, another machine's task", macs[0], rep(1, 7001, lie), f.token(tasks[0].ID), http.StatusUnauthorized},
		{"no task", macs[1], `{"phase": "booting", "peer_port": 7009, "received": [` + lie + `]}`, "", http.StatusOK},
	} {
		if code := postReport(t, base, a.mac, a.body, a.tok); code != a.want {
			t.Errorf("%s: report = %d, want %d", a.name, code, a.want)
		}
	}
	wantEdges := []SwarmEdge{
		{From: "198.18.9.9:6881", To: macs[2], Bytes: 1 * MiB},
		{From: macs[0], To: macs[1], Bytes: 6 * MiB},
		{From: macs[0], To: macs[2], Bytes: 2 * MiB},
		{From: macs[1], To: macs[2], Bytes: 3 * MiB},
		{From: NodeServer, To: macs[0], Bytes: 10 * MiB},
		{From: NodeServer, To: macs[1], Bytes: 4 * MiB},
		{From: NodeServer, To: macs[2], Bytes: 5 * MiB},
	}
	wantNodes := []SwarmNode{
		{ID: NodeServer, Kind: NodeServer, Name: "server"},
		{ID: macs[0], Kind: NodeMachine, Name: "pc-01", Task: tasks[0].ID, State: protocol.TaskImaging, FromServer: 10 * MiB},
		{ID: macs[1], Kind: NodeMachine, Name: "pc-02", Task: tasks[1].ID, State: protocol.TaskImaging, FromServer: 4 * MiB, FromPeers: 6 * MiB},
		{ID: macs[2], Kind: NodeMachine, Name: "pc-03", Task: tasks[2].ID, State: protocol.TaskImaging, FromServer: 5 * MiB, FromPeers: 6 * MiB},
		{ID: "198.18.9.9:6881", Kind: NodePeer},
	}
	want := []SwarmGraph{{Image: "demo", Nodes: wantNodes, Edges: wantEdges}}

	resp, err := http.Get(base + "/api/swarm")
	if err != nil {
		t.Fatal(err)
	}
	var got []SwarmGraph
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/swarm = %d, %v", resp.StatusCode, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /api/swarm (-want +got):\n%s", diff)
	}
	resp, err = http.Get(base + "/api/swarm?image=other")
	if err == nil {
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
	}
	if err != nil || len(got) != 0 {
		t.Errorf("GET /api/swarm?image=other = %+v, %v; want none", got, err)
	}

	// The console's event stream carries the same picture.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/events", nil)
	er, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer er.Body.Close()
	sc := bufio.NewScanner(er.Body)
	sc.Buffer(nil, 1<<20)
	var snap Snapshot
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			if err := json.Unmarshal([]byte(data), &snap); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if diff := cmp.Diff(want, snap.Swarm); diff != "" {
		t.Errorf("event stream's swarm (-want +got):\n%s", diff)
	}

	// The stored reports keep no sources.
	for _, mac := range macs {
		m, err := f.store.Machine(mac)
		if err != nil || m.LastReport == nil || m.LastReport.Received != nil {
			t.Errorf("machine %s: %v, last report %+v; want one without received", mac, err, m.LastReport)
		}
	}
	for _, task := range tasks {
		got, err := f.store.Task(task.ID)
		if err != nil || got.LastReport == nil || got.LastReport.Received != nil {
			t.Errorf("task %s: %v, last report %+v; want one without received", task.ID, err, got.LastReport)
		}
	}
}

// TestSwarmGraphResolve: how a source address becomes a machine on a LAN
// (one address per machine): the machine that reports from it with that
// peer port; the only machine that reports from it, whatever port it
// gave (its agent restarted); the only machine DHCP gave it, when none
// reports from it; else the address stays a peer. A machine's own address
// draws no edge, and a new task moves the machine to its image.
func TestSwarmGraphResolve(t *testing.T) {
	var fl flows
	now := time.Now()
	a, b, c := "52:54:00:00:00:0a", "52:54:00:00:00:0b", "52:54:00:00:00:0c"
	ms := []Machine{{MAC: a, Name: "A", IP: "198.18.1.11"}, {MAC: b, Name: "B", IP: "198.18.1.12"}, {MAC: c, Name: "C", IP: "198.18.1.13"}}
	fl.record(a, Task{ID: "ta", Image: "lab"}, "198.18.1.11", protocol.Report{PeerPort: 6881, Received: []protocol.Received{{From: "198.18.1.11:6881", Bytes: 5}, {From: "server", Bytes: 7}}}, now)
	fl.record(b, Task{ID: "tb0", Image: "old"}, "198.18.1.12", protocol.Report{PeerPort: 6881, Received: []protocol.Received{{From: "server", Bytes: 1}}}, now)
	fl.record(b, Task{ID: "tb", Image: "lab"}, "198.18.1.12", protocol.Report{PeerPort: 6881, Received: []protocol.Received{
		{From: "198.18.1.11:7000", Bytes: 3}, {From: "198.18.1.13:6881", Bytes: 2}, {From: "198.18.1.99:6881", Bytes: 1}, {From: "[::ffff:198.18.1.11]:6881", Bytes: 4}}}, now)
	// A report without sources keeps the task's earlier ones.
	fl.record(b, Task{ID: "tb", Image: "lab"}, "198.18.1.12", protocol.Report{}, now)
	got := fl.graphs(ms, map[string]protocol.TaskState{"ta": protocol.TaskSeeding, "tb": protocol.TaskImaging})
	want := []SwarmGraph{{Image: "lab",
		Nodes: []SwarmNode{
			{ID: NodeServer, Kind: NodeServer, Name: "server"},
			{ID: a, Kind: NodeMachine, Name: "A", Task: "ta", State: protocol.TaskSeeding, FromServer: 7},
			{ID: b, Kind: NodeMachine, Name: "B", Task: "tb", State: protocol.TaskImaging, FromPeers: 10},
			{ID: c, Kind: NodeMachine, Name: "C"},
			{ID: "198.18.1.99:6881", Kind: NodePeer},
		},
		Edges: []SwarmEdge{{From: "198.18.1.99:6881", To: b, Bytes: 1}, {From: a, To: b, Bytes: 7}, {From: c, To: b, Bytes: 2}, {From: NodeServer, To: a, Bytes: 7}},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("graphs (-want +got):\n%s", diff)
	}
}
