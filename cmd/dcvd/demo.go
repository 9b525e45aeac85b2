package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/internal/memdns"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
	"github.com/dcvd/dcvd/sandbox"
)

// The demo runs the daemon's whole cycle for one certificate on embedded
// defaults: an in-process sandbox CA, an in-process authoritative DNS server
// standing in for the admin's zone, a web root served by an in-process web
// server, and a temporary deploy directory. It is the README's first
// command: no account, no network, no root.

const demoZone = "example.com"

// demoDomains is what the demo certificate covers, and how each is validated.
var demoDomains = map[string]reseller.Method{
	"example.com":      reseller.MethodDNS,
	"*.example.com":    reseller.MethodDNS,
	"shop.example.com": reseller.MethodHTTP,
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dcvd demo", flag.ContinueOnError)
	stateDir := fs.String("state-dir", "", "where the demo keeps its state (default: a temporary directory, removed afterwards)")
	outDir := fs.String("out", "", "deploy directory for cert.pem, chain.pem, fullchain.pem, privkey.pem (default: <state-dir>/deploy)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: dcvd demo [flags]\n\n"+
			"Runs the daemon's whole cycle for one certificate against an in-process sandbox CA:\n"+
			"key and CSR, signed reissue, DNS records and a validation file published to a local\n"+
			"DNS server and web root, visibility proven, re-check requested, certificate polled,\n"+
			"verified, deployed and reloaded, DCV cleaned up.\n\nFlags:\n")
		printFlags(fs.Output(), fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *stateDir == "" {
		dir, err := os.MkdirTemp("", "dcvd-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		*stateDir = dir
	}
	if *outDir == "" {
		*outDir = filepath.Join(*stateDir, "deploy")
	}
	return demo(ctx, *stateDir, *outDir, stdout)
}

func demo(ctx context.Context, stateDir, outDir string, out io.Writer) error {
	ec := zap.NewDevelopmentEncoderConfig()
	ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(ec), zapcore.AddSync(out), zapcore.InfoLevel))
	say := func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", args...) }

	// The admin's side: the zone's authoritative server and a web server
	// for the web root.
	dnsSrv, err := memdns.Start("127.0.0.1:0", demoZone)
	if err != nil {
		return err
	}
	defer dnsSrv.Close()
	webroot := filepath.Join(stateDir, "webroot")
	if err := os.MkdirAll(webroot, 0o755); err != nil {
		return err
	}
	web, err := serve(http.FileServer(http.Dir(webroot)))
	if err != nil {
		return err
	}
	defer web.Close()
	say("DNS server for %s on %s; web root %s served on %s", demoZone, dnsSrv.Addr(), webroot, web.Addr)

	// The CA's side.
	sb, err := sandbox.New(sandbox.Config{
		StateDir:         filepath.Join(stateDir, "sandbox"),
		DNSServer:        dnsSrv.Addr(),
		HTTPAddr:         web.Addr,
		NegativeCacheTTL: 5 * time.Minute,
		CheckInterval:    -1,
	})
	if err != nil {
		return fmt.Errorf("start the sandbox: %w", err)
	}
	defer sb.Close()
	sb.Start(ctx)
	api, err := serve(sb.Handler())
	if err != nil {
		return err
	}
	defer api.Close()
	keyID, secret := sb.AccessKey()
	say("sandbox CA at http://%s/api/v1", api.Addr)

	cfg := &config.Config{
		API: config.APIConfig{BaseURL: "http://" + api.Addr + "/api/v1", AccessKeyID: keyID, AccessKeySecret: secret, Timeout: 30 * time.Second},
		Daemon: config.DaemonConfig{
			StateDir: filepath.Join(stateDir, "dcvd"), Schedule: "17 */6 * * *", MaxConcurrent: 4,
			PollInterval: 200 * time.Millisecond,
		},
		Certificates: []config.CertConfig{{
			Name: "demo", ServiceID: "demo", KeyType: config.KeyECDSAP256, DNS: "zone",
			Webroots:    []httpchallenge.Webroot{{Dir: webroot}},
			HTTPConnect: web.Addr,
			Domains:     demoDomains,
			Deploy: deploy.Spec{
				Dir:    outDir,
				Reload: `echo "reload: $DCVD_CERT_NAME serial $DCVD_SERIAL for $DCVD_DOMAINS"`,
			},
		}},
	}
	zone := providers.NewWith("zone", dnsSrv, demoZone, providers.Propagation{
		Nameservers: []string{dnsSrv.Addr()}, Interval: 50 * time.Millisecond, Timeout: 30 * time.Second,
	})
	d, err := daemon.New(ctx, cfg, daemon.Options{
		Log: log, Roots: sb.RootPool(), DNS: map[string]*providers.DNS{"zone": zone},
	})
	if err != nil {
		return err
	}
	defer d.Close()

	say("reissuing certificate demo for %s", strings.Join(cfg.Certificates[0].Names(), ", "))
	start := time.Now()
	o, err := d.Reissue(ctx, "demo", daemon.ReissueOptions{Wait: true})
	if err != nil {
		return err
	}
	say("done in %s: serial %s, valid until %s, deployed to %s", time.Since(start).Round(time.Millisecond),
		o.Serial, o.NotAfter.UTC().Format(time.RFC3339), outDir)

	charges := 0
	for _, c := range sb.Ledger() {
		if c.UniqueID == o.UniqueID {
			charges++
		}
	}
	left, _ := filepath.Glob(filepath.Join(webroot, ".well-known", "pki-validation", "*"))
	recs, _ := dnsSrv.GetRecords(ctx, demoZone)
	cnames := 0
	for _, r := range recs {
		if r.RR().Type == "CNAME" {
			cnames++
		}
	}
	say("sandbox ledger: %d charge(s) for %s; DCV left behind: %d file(s), %d CNAME(s)", charges, o.UniqueID, len(left), cnames)
	sts, err := d.Status(ctx)
	if err != nil {
		return err
	}
	say("next renewal: %s (%s)", sts[0].NextRenewal.UTC().Format(time.RFC3339), sts[0].RenewalReason)
	if charges != 1 || len(left) != 0 || cnames != 0 {
		return fmt.Errorf("the demo left the world in a wrong state")
	}
	return nil
}

type server struct {
	Addr string
	srv  *http.Server
}

func serve(h http.Handler) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{Addr: ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *server) Close() error { return s.srv.Close() }
