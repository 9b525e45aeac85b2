package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/providers"
)

// TestJournalLogLines: to the journal, every line starts with its syslog
// priority and carries no time of its own; elsewhere lines stay as they
// were.
func TestJournalLogLines(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLoggerFor(&config.Config{}, &buf, true)
	if err != nil {
		t.Fatal(err)
	}
	log.Error("deploy failed")
	log.Warn("slow")
	log.Info("line one\nline two")
	want := []string{"<3>ERROR\tdeploy failed", "<4>WARN\tslow", "<6>INFO\tline one", "<6>line two"}
	got := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(got) != len(want) {
		t.Fatalf("journal lines:\n%s", buf.String())
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d = %q, want %q", i, got[i], want[i])
		}
	}

	buf.Reset()
	log, _ = newLoggerFor(&config.Config{}, &buf, false)
	log.Error("deploy failed")
	if strings.HasPrefix(buf.String(), "<") || !strings.Contains(buf.String(), "ERROR") {
		t.Errorf("plain line: %q", buf.String())
	}
}

// TestJSONLogTimes: JSON logs carry RFC 3339 times.
func TestJSONLogTimes(t *testing.T) {
	var buf bytes.Buffer
	cfg := &config.Config{}
	cfg.Daemon.LogFormat = "json"
	log, err := newLoggerFor(cfg, &buf, false)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hello")
	var line struct {
		TS string `json:"ts"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	if _, err := time.Parse(time.RFC3339, line.TS); err != nil {
		t.Errorf("ts %q is not RFC 3339: %v", line.TS, err)
	}
}

// TestJournalStreamMatch: JOURNAL_STREAM counts only for the stream it
// names, as sd-daemon(3) asks.
func TestJournalStreamMatch(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if !sameStream(fmt.Sprintf("%d:%d", st.Dev, st.Ino), f) {
		t.Error("the named stream is not recognised")
	}
	for _, env := range []string{"", "x", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1)} {
		if sameStream(env, f) {
			t.Errorf("JOURNAL_STREAM=%q taken for the stream", env)
		}
	}
}

// TestPropagationReportsProgress: a wait reports, every ProgressEvery,
// the nameservers that still lag and what they answered.
func TestPropagationReportsProgress(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNameError)
		m.Authoritative = true
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	defer srv.Shutdown()

	p := providers.Propagation{Nameservers: []string{pc.LocalAddr().String()}, Timeout: time.Second,
		Interval: 20 * time.Millisecond, ProgressEvery: 100 * time.Millisecond}
	var reports []providers.Progress
	ctx := providers.WithProgress(context.Background(), func(pr providers.Progress) { reports = append(reports, pr) })
	err = p.Wait(ctx, "example.com", []providers.Record{{Name: "_x.example.com", Target: "t.example.net"}})
	if err == nil {
		t.Fatal("wait for a record no server has succeeded")
	}
	if len(reports) < 3 {
		t.Fatalf("%d progress reports in a 1 s wait every 100 ms", len(reports))
	}
	want := pc.LocalAddr().String() + ": answered NXDOMAIN for _x.example.com"
	if r := reports[0]; r.Servers != 1 || len(r.Lagging) != 1 || r.Lagging[0] != want {
		t.Errorf("report %+v, want %q", r, want)
	}
}
