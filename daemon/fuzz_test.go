package daemon

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/reseller"
)

// The fuzz targets of package daemon: the configuration loader and the
// callback handler, the two places where the daemon reads input it does not
// control. `go test` runs their seeds (f.Add and testdata/fuzz); `go test
// -fuzz` explores from them. Neither writes outside its temporary directory.

// The callback tokens of fzCallbackWorld's orders.
const (
	fzTokenActive  = "0123456789abcdef0123456789abcdef0123456789abcdef"
	fzTokenActive2 = "89abcdef0123456789abcdef0123456789abcdef01234567"
	fzTokenDone    = "feedfacefeedfacefeedfacefeedfacefeedfacefeedface"
	fzTokenFailed  = "badc0ffeebadc0ffeebadc0ffeebadc0ffeebadc0ffeeba"
)

// fzCallbackWorld is a daemon that runs nothing, with a SQLite store
// holding orders in flight, finished and failed, a live certificate and
// a history, and a wake channel registered for every order.
type fzCallbackWorld struct {
	d       *Daemon
	handler http.Handler
	// inFlight maps the token of each order in flight to its unique_id.
	inFlight map[string]string
	// waiting holds the tokens of the orders waiting for the CA (step
	// rechecked): the only ones a callback wakes.
	waiting  map[string]bool
	wake     map[string]chan wakeReason
	db       *sql.DB
	snapshot string
}

func newFzCallbackWorld(f *testing.F) *fzCallbackWorld {
	ctx := context.Background()
	dir := f.TempDir()
	dbPath := filepath.Join(dir, "dcvd.db")
	st, err := store.OpenSQLite(ctx, dbPath)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	cfg := &config.Config{
		API: config.APIConfig{BaseURL: "http://127.0.0.1:9/api/v1", AccessKeyID: "AKfuzz", AccessKeySecret: "fuzz-secret", Timeout: time.Second},
		Daemon: config.DaemonConfig{StateDir: dir, Schedule: config.DefaultSchedule, MaxConcurrent: 1, PollInterval: time.Second,
			CallbackListen: "127.0.0.1:0", CallbackURL: "https://dcvd.example.com"},
		Store: config.StoreConfig{Driver: config.StoreDriverSQLite},
	}
	d, err := New(ctx, cfg, Options{Store: st})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })

	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	names := []string{"example.com", "www.example.com"}
	orders := []*store.Order{
		{UniqueID: "fz-active", Cert: "shop", ServiceID: "o91bZ", Step: store.StepRechecked, Names: names, CallbackToken: fzTokenActive,
			DomainDCV: map[string]reseller.Method{"example.com": "dns", "www.example.com": "http"}, LastError: "none yet"},
		{UniqueID: "fz-active-2", Cert: "mail", ServiceID: "x7Kp2", Step: store.StepPublished, Names: names, CallbackToken: fzTokenActive2},
		{UniqueID: "fz-done", Cert: "shop", ServiceID: "o91bZ", Step: store.StepDone, Names: names, CallbackToken: fzTokenDone},
		{UniqueID: "fz-failed", Cert: "mail", ServiceID: "x7Kp2", Step: store.StepFailed, Names: names, CallbackToken: fzTokenFailed},
		{UniqueID: "fz-no-token", Cert: "web", ServiceID: "w1", Step: store.StepSubmitted, Names: names},
	}
	w := &fzCallbackWorld{d: d, handler: d.CallbackHandler(), inFlight: map[string]string{}, waiting: map[string]bool{},
		wake: map[string]chan wakeReason{}}
	for _, o := range orders {
		if err := st.PutOrder(ctx, o); err != nil {
			f.Fatal(err)
		}
		ch, unregister := d.wakeChan(o.UniqueID)
		f.Cleanup(unregister)
		w.wake[o.UniqueID] = ch
		if o.CallbackToken != "" && !o.Step.Terminal() {
			w.inFlight[o.CallbackToken] = o.UniqueID
			w.waiting[o.CallbackToken] = o.Step == store.StepRechecked
		}
	}
	if err := st.PutCertificate(ctx, &store.Certificate{Name: "shop", Serial: "01", Names: names, NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour),
		CertPEM: "cert", ChainPEM: "chain", KeyFile: filepath.Join(dir, "key.pem"), UniqueID: "fz-done", DeployedAt: now}); err != nil {
		f.Fatal(err)
	}
	if err := st.AddAttempt(ctx, store.Attempt{Cert: "shop", UniqueID: "fz-done", Started: now, Finished: now, Outcome: store.StepDone, Cost: 50, Serial: "01"}); err != nil {
		f.Fatal(err)
	}
	// A second, read-only connection sees every table as it is on disk.
	w.db, err = sql.Open("sqlite", "file:"+dbPath+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { w.db.Close() })
	w.snapshot = w.dump(f)
	return w
}

// dump renders every row of every table of the store.
func (w *fzCallbackWorld) dump(tb testing.TB) string {
	tb.Helper()
	ctx := context.Background()
	rows, err := w.db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	if err != nil {
		tb.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			tb.Fatal(err)
		}
		tables = append(tables, n)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	rows.Close()
	var b strings.Builder
	for _, tbl := range tables {
		rows, err := w.db.QueryContext(ctx, `SELECT * FROM "`+strings.ReplaceAll(tbl, `"`, `""`)+`"`)
		if err != nil {
			tb.Fatal(err)
		}
		cols, err := rows.Columns()
		if err != nil {
			tb.Fatal(err)
		}
		var lines []string
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				tb.Fatal(err)
			}
			lines = append(lines, fmt.Sprintf("%q", vals))
		}
		if err := rows.Err(); err != nil {
			tb.Fatal(err)
		}
		rows.Close()
		sort.Strings(lines)
		fmt.Fprintf(&b, "%s %q\n%s\n", tbl, cols, strings.Join(lines, "\n"))
	}
	return b.String()
}

// pokes drains the wake channels and returns the unique_ids poked.
func (w *fzCallbackWorld) pokes() []string {
	var out []string
	for uid, ch := range w.wake {
		select {
		case <-ch:
			out = append(out, uid)
		default:
		}
	}
	sort.Strings(out)
	return out
}

// fzErrBody is a request body whose connection breaks after data.
type fzErrBody struct{ r io.Reader }

func (b *fzErrBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Flags of FuzzCallbackHandler.
const (
	fzNearLimit  = 1 << iota // the body is padded to the limit -1, 0, +1 or +2
	fzBrokenBody             // reading the body ends with an error
	fzNoLength               // no Content-Length
)

// FuzzCallbackHandler sends fuzzed requests (method, request target,
// headers, body of any size) to the callback handler of a daemon whose
// store holds two orders in flight, a finished and a failed one, and one
// without a token. Properties: no panic and no 5xx; 200 only for a POST to
// /callback/<token> of an order in flight with a body of at most 64 KiB,
// and such a request always gets 200 (413 when its body is larger); a 200
// wakes exactly that order's driver and anything else wakes none; and no
// callback changes a row of the store.
func FuzzCallbackHandler(f *testing.F) {
	w := newFzCallbackWorld(f)
	forged := `{"service_id":"o91bZ","status":"issued","cert_pem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","not_after":"2036-01-01T00:00:00+08:00"}`
	detail := `{"cost":0,"service_id":"demo","caid":"930438135","status":"issued","cert_pem":null,"ca_pem":null,"not_before":null,"not_after":null,"dcv":{"example.com":{"type":"email","status":"valid","email":{"address":"admin@example.com"}}}}`
	hdr := "Content-Type: application/json\nUser-Agent: sandbox\n"
	for _, s := range []struct {
		method, target, header, body string
		flags                        uint8
	}{
		{"POST", "/callback/" + fzTokenActive, hdr, detail, 0},
		{"POST", "/callback/" + fzTokenActive2 + "?attempt=2", hdr, forged, fzNoLength},
		{"POST", "/callback/" + fzTokenActive, hdr, "", fzNearLimit},
		{"POST", "/callback/" + fzTokenActive, hdr, "\x00\xff{", fzBrokenBody},
		{"POST", "/callback/" + fzTokenDone, hdr, detail, 0},
		{"POST", "/callback/" + fzTokenFailed, hdr, detail, 0},
		{"POST", "/callback/", hdr, detail, 0},
		{"POST", "/callback/" + strings.ToUpper(fzTokenActive), hdr, detail, 0},
		{"POST", "/callback/" + fzTokenActive + "/x", hdr, detail, 0},
		{"POST", "/callback/%30123456789abcdef0123456789abcdef0123456789abcdef", hdr, detail, 0},
		{"POST", "http://dcvd.example.com/callback/" + fzTokenActive, "Host: evil\n", detail, 0},
		{"GET", "/callback/" + fzTokenActive, "", "", 0},
		{"PUT", "/callback/" + fzTokenActive, hdr, forged, 0},
		{"post", "/callback/" + fzTokenActive, hdr, forged, 0},
		{"POST", "/" + fzTokenActive, hdr, forged, 0},
		{"POST", "//callback/" + fzTokenActive, hdr, forged, 0},
		{"POST", "/callback/../callback/" + fzTokenActive, hdr, forged, 0},
	} {
		f.Add(s.method, s.target, s.header, []byte(s.body), uint16(1), s.flags)
	}

	f.Fuzz(func(t *testing.T, method, target, header string, body []byte, pad uint16, flags uint8) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			u = &url.URL{Path: target}
		}
		b := body
		if flags&fzNearLimit != 0 {
			size := maxCallbackBody - 1 + int(pad%4)
			b = make([]byte, size)
			n := copy(b, body)
			for i := n; i < size; i++ {
				b[i] = 'x'
			}
		}
		var rd io.Reader = bytes.NewReader(b)
		if flags&fzBrokenBody != 0 {
			rd = &fzErrBody{rd}
		}
		req := (&http.Request{
			Method: method, URL: u, RequestURI: target, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Body: io.NopCloser(rd), ContentLength: int64(len(b)), Host: u.Host,
			RemoteAddr: "192.0.2.7:4242",
		}).WithContext(context.Background())
		if flags&fzNoLength != 0 {
			req.ContentLength = -1
		}
		for _, line := range strings.Split(header, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				req.Header.Add(textproto.TrimString(k), textproto.TrimString(v))
			}
		}

		// Each input on its own: no wake is held back by the last one.
		w.d.callbacks = callbackGate{}
		rec := httptest.NewRecorder()
		w.handler.ServeHTTP(rec, req)
		code := rec.Code

		token, isCallback := strings.CutPrefix(u.Path, "/callback/")
		uid, known := w.inFlight[token]
		hit := isCallback && known && method == http.MethodPost
		switch {
		case code >= 500:
			t.Fatalf("HTTP %d for %s %q", code, method, target)
		case code == http.StatusOK && !hit:
			t.Fatalf("HTTP 200 for %s %q (path %q), which is no POST to the token of an order in flight", method, target, u.Path)
		case hit && len(b) > maxCallbackBody && code != http.StatusRequestEntityTooLarge:
			t.Fatalf("HTTP %d for a %d-byte body, want 413", code, len(b))
		case hit && len(b) <= maxCallbackBody && code != http.StatusOK:
			t.Fatalf("HTTP %d for a POST to the token of an order in flight, want 200", code)
		case code == http.StatusRequestEntityTooLarge && len(b) <= maxCallbackBody:
			t.Fatalf("HTTP 413 for a %d-byte body", len(b))
		}

		want := []string(nil)
		if code == http.StatusOK && w.waiting[token] {
			want = []string{uid}
		}
		if got := w.pokes(); !slices.Equal(got, want) {
			t.Fatalf("HTTP %d woke %q, want %q", code, got, want)
		}
		if after := w.dump(t); after != w.snapshot {
			t.Fatalf("the callback changed the store:\nbefore:\n%s\nafter:\n%s", w.snapshot, after)
		}
	})
}
