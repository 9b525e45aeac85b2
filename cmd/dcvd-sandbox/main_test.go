package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/sandbox"
)

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	_, err := parseFlags([]string{"--help"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	help := out.String()
	for _, name := range []string{
		"listen", "state-dir", "config", "service", "access-key-id", "access-key-secret-file", "dns-server",
		"http-addr", "https-addr", "negative-cache", "validity", "service-period", "check-interval", "auto-approve-email", "ca-domain",
		"balance", "fault-error-rate", "fault-rate-limit-rate", "fault-retry-after", "fault-malformed-rate",
		"fault-reset-rate", "fault-latency", "fault-seed", "log-level",
	} {
		i := strings.Index(help, "\n  --"+name+" ")
		if i < 0 {
			i = strings.Index(help, "\n  --"+name+"\n")
		}
		if i < 0 {
			t.Errorf("--%s is not documented", name)
			continue
		}
		entry := help[i+1:]
		if j := strings.Index(entry[1:], "\n  --"); j >= 0 {
			entry = entry[:j+1]
		}
		if !strings.Contains(entry, "(default ") {
			t.Errorf("--%s does not show its default: %q", name, entry)
		}
	}
	for _, want := range []string{"127.0.0.1:8600", "./dcvd-sandbox-state", "5m0s", "2160h0m0s", "(default 1y)", "base URL", "access key",
		"sectigo-dv-multi", "expires = ", "service-end"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--service", "a:p:3", "--service", "b:q", "--fault-error-rate", "0.5", "--fault-seed", "9"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.services) != 2 || o.services[0].MaxDomains != 3 || o.services[1].ProductID != "q" || o.services[1].MaxDomains != 0 {
		t.Errorf("services %+v", o.services)
	}
	if o.faults.ErrorRate != 0.5 || o.faults.Seed != 9 || o.faults.RetryAfter != time.Second {
		t.Errorf("faults %+v", o.faults)
	}
	if time.Duration(o.servicePeriod) != sandbox.DefaultServicePeriod {
		t.Errorf("default service period %s", time.Duration(o.servicePeriod))
	}
	for _, tt := range []struct {
		arg  string
		want time.Duration
	}{
		{"1y", 365 * 24 * time.Hour}, {"2y", 730 * 24 * time.Hour}, {"30d", 30 * 24 * time.Hour}, {"36h", 36 * time.Hour},
		{"none", -1}, {"0", -1},
	} {
		o, err := parseFlags([]string{"--service-period", tt.arg}, io.Discard)
		if err != nil || time.Duration(o.servicePeriod) != tt.want {
			t.Errorf("--service-period %s: %v, %v; want %s", tt.arg, o, err, tt.want)
		}
	}
	for _, bad := range [][]string{
		{"--service-period", "-1h"}, {"--service-period", "0d"}, {"--service-period", "d"}, {"--service-period", "1.5y"},
		{"--service-period", "1000y"}, {"--service-period", "soon"},
		{"--service", "a"}, {"--service", "a:p:x"}, {"--service", "a:p:-1"}, {"--service", ":p"}, {"extra"}, {"--nope"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestLoadCatalogue(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.toml", `
[[product]]
id = "p"
validation = "DV"
max_domains = 2
domain_price = 3.5

[[service]]
id = "s"
product_id = "p"
domains = ["example.com"]
expires = 2027-11-30T00:00:00+08:00
`)
	products, services, err := loadCatalogue(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(products) != 1 || products[0].DomainPrice != 3.5 || len(services) != 1 || services[0].Domains[0] != "example.com" {
		t.Errorf("got %+v %+v", products, services)
	}
	if want := time.Date(2027, 11, 29, 16, 0, 0, 0, time.UTC); len(services) == 1 && !services[0].Expires.Equal(want) {
		t.Errorf("expires %s, want %s", services[0].Expires, want)
	}
	bad := write("bad.toml", "[[product]]\nid = \"p\"\nmax_domains = 2\ndomian_price = 3\n")
	if _, _, err := loadCatalogue(bad); err == nil || !strings.Contains(err.Error(), "domian_price") {
		t.Errorf("unknown key: %v", err)
	}
	noID := write("noid.toml", "[[service]]\nproduct_id = \"p\"\n")
	if _, _, err := loadCatalogue(noID); err == nil {
		t.Error("a service without id accepted")
	}
}

func TestRunPrintsBannerAndStops(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("topsecret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--state-dir", filepath.Join(dir, "state"),
			"--access-key-id", "AKTEST", "--access-key-secret-file", secretFile, "--check-interval", "-1s",
			"--service", "extra:sectigo-dv-multi:5", "--service-period", "none"}, pw, io.Discard)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var banner []string
	base := ""
	for sc.Scan() {
		line := sc.Text()
		banner = append(banner, line)
		if f := strings.Fields(line); len(f) == 3 && f[0] == "base" {
			base = strings.TrimSuffix(f[2], "/api/v1")
		}
		if strings.Contains(line, "extra") {
			break
		}
	}
	text := strings.Join(banner, "\n")
	for _, want := range []string{"AKTEST", "topsecret", filepath.Join(dir, "state", "ca", "root.pem"), "extra", "at most 5 domains", "ends: never"} {
		if !strings.Contains(text, want) {
			t.Errorf("banner lacks %q:\n%s", want, text)
		}
	}
	if base == "" {
		t.Fatalf("no base URL in:\n%s", text)
	}
	resp, err := http.Get(base + "/sandbox/root.pem")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "BEGIN CERTIFICATE") {
		t.Errorf("root.pem: %s", body)
	}
	go io.Copy(io.Discard, pr)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not stop")
	}
}
