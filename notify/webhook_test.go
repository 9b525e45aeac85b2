package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fixedNow is the injected clock of the signature tests.
var fixedNow = time.Date(2026, 3, 1, 8, 30, 0, 0, time.UTC)

func fixedClock() time.Time { return fixedNow }

// testEvent has non-ASCII text, fields and an order, like real events.
func testEvent() Event {
	return Event{
		Kind:     ReissueFailed,
		Level:    LevelError,
		Cert:     "shop",
		UniqueID: "dcvd-shop-0001",
		Title:    "shop: 证书重签失败",
		Text:     "The CA refused the reissue.\n请检查 DNS 记录。",
		Fields:   map[string]string{"step": "submitted", "attempts": "5"},
		Time:     time.Date(2026, 3, 1, 8, 29, 0, 0, time.UTC),
	}
}

// assertNoSecret fails when any of the texts contains any of the secrets.
func assertNoSecret(t *testing.T, texts []string, secrets ...string) {
	t.Helper()
	for _, text := range texts {
		for _, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("secret %q leaked in %q", s, text)
			}
		}
	}
}

// mustParse configures a channel from a section that must be valid.
func mustParse(t *testing.T, name string, section map[string]any) Channel {
	t.Helper()
	c, _, errs := Parse(name, section, func(string) (string, bool) { return "", false }, nil)
	if len(errs) > 0 {
		t.Fatalf("Parse: %v", errs)
	}
	return c.Channel
}

// webhookReceiver checks the signature with its own secret, as a receiver
// would, and records the payloads it accepted.
type webhookReceiver struct {
	secret string
	mu     sync.Mutex
	got    []map[string]any
	header []http.Header
	errs   []string
}

func (rcv *webhookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	fail := func(code int, why string) {
		rcv.mu.Lock()
		rcv.errs = append(rcv.errs, why)
		rcv.mu.Unlock()
		http.Error(w, why, code)
	}
	if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		fail(http.StatusBadRequest, "not a JSON POST")
		return
	}
	ts := r.Header.Get("X-Dcvd-Timestamp")
	mac := hmac.New(sha256.New, []byte(rcv.secret))
	mac.Write([]byte(ts + "." + string(body)))
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(r.Header.Get("X-Dcvd-Signature"))) {
		fail(http.StatusUnauthorized, "bad signature")
		return
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		fail(http.StatusBadRequest, "bad JSON")
		return
	}
	rcv.mu.Lock()
	rcv.got = append(rcv.got, m)
	rcv.header = append(rcv.header, r.Header.Clone())
	rcv.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func TestWebhookSignedJSON(t *testing.T) {
	const secret = "whsec-Zq8-do-not-leak"
	rcv := &webhookReceiver{secret: secret}
	srv := httptest.NewServer(rcv)
	defer srv.Close()

	ch := mustParse(t, "hook", map[string]any{"type": "webhook", "url": srv.URL + "/dcvd?x=1", "secret": secret})
	ch.(*webhook).now = fixedClock
	if err := ch.Send(context.Background(), testEvent()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(rcv.got) != 1 {
		t.Fatalf("receiver got %d requests (%v)", len(rcv.got), rcv.errs)
	}
	m := rcv.got[0]
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	if got := strings.Join(slices.Sorted(slices.Values(keys)), ","); got != "cert,fields,kind,level,text,time,title,unique_id" {
		t.Errorf("JSON keys = %s", got)
	}
	want := map[string]any{
		"kind": "reissue_failed", "level": "error", "cert": "shop", "unique_id": "dcvd-shop-0001",
		"title": "shop: 证书重签失败", "text": "The CA refused the reissue.\n请检查 DNS 记录。",
		"time": "2026-03-01T08:29:00Z",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if f, _ := m["fields"].(map[string]any); f["step"] != "submitted" || f["attempts"] != "5" {
		t.Errorf("fields = %v", m["fields"])
	}
	h := rcv.header[0]
	if h.Get("X-Dcvd-Timestamp") != strconv.FormatInt(fixedNow.Unix(), 10) {
		t.Errorf("timestamp = %q", h.Get("X-Dcvd-Timestamp"))
	}
	if h.Get("X-Dcvd-Event") != "reissue_failed" {
		t.Errorf("X-Dcvd-Event = %q", h.Get("X-Dcvd-Event"))
	}
	if got := WebhookSignature(secret, fixedNow.Unix(), []byte("{}")); !strings.HasPrefix(got, "sha256=") || len(got) != 7+64 {
		t.Errorf("WebhookSignature = %q", got)
	}
}

func TestWebhookWithoutSecretHasNoSignature(t *testing.T) {
	var sig []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sig = r.Header.Values("X-Dcvd-Signature")
		var m map[string]any
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil || m["fields"] == nil {
			http.Error(w, "bad", http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	ch := mustParse(t, "hook", map[string]any{"type": "webhook", "url": srv.URL})
	e := testEvent()
	e.Fields = nil // still sent as {}
	if err := ch.Send(context.Background(), e); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(sig) != 0 {
		t.Errorf("signature without a secret: %v", sig)
	}
}

func TestWebhookWrongSecretRejected(t *testing.T) {
	const secret = "whsec-ours-do-not-leak"
	rcv := &webhookReceiver{secret: "theirs"}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	ch := mustParse(t, "hook", map[string]any{"type": "webhook", "url": srv.URL, "secret": secret})
	err := ch.Send(context.Background(), testEvent())
	if err == nil {
		t.Fatal("Send succeeded against a receiver with another secret")
	}
	if !IsPermanent(err) {
		t.Errorf("HTTP 401 should not be retried: %v", err)
	}
	if !strings.Contains(err.Error(), "HTTP 401") || !strings.Contains(err.Error(), "notify hook (webhook)") {
		t.Errorf("error = %v", err)
	}
	assertNoSecret(t, []string{err.Error()}, secret)
}

func TestWebhookFailures(t *testing.T) {
	const secret = "whsec-fail-do-not-leak"
	const pathToken = "T0KEN-in-path-do-not-leak"
	var status int
	var reply string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status == http.StatusFound {
			http.Redirect(w, r, "http://elsewhere.invalid/", status)
			return
		}
		w.WriteHeader(status)
		io.WriteString(w, reply)
	}))
	defer srv.Close()
	ch := mustParse(t, "hook", map[string]any{"type": "webhook", "url": srv.URL + "/hooks/" + pathToken, "secret": secret})

	// A closed port: the network error must not carry the URL.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String() + "/hooks/" + pathToken
	ln.Close()
	dead := mustParse(t, "dead", map[string]any{"type": "webhook", "url": closedURL, "secret": secret})

	for _, tc := range []struct {
		name      string
		ch        Channel
		status    int
		reply     string
		permanent bool
		want      string
	}{
		{"server error echoes token", ch, 503, "upstream down for " + pathToken, false, "HTTP 503: upstream down for [redacted]"},
		{"too many requests", ch, 429, "slow down", false, "HTTP 429"},
		{"not found", ch, 404, "no such hook", true, "HTTP 404"},
		{"redirect", ch, http.StatusFound, "", true, "redirects are not followed"},
		{"huge reply", ch, 500, strings.Repeat("x", 1<<20), false, "…"},
		{"connection refused", dead, 0, "", false, "POST http://127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, reply = tc.status, tc.reply
			err := tc.ch.Send(context.Background(), testEvent())
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if IsPermanent(err) != tc.permanent {
				t.Errorf("permanent = %v, want %v (%v)", IsPermanent(err), tc.permanent, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			if len(err.Error()) > 600 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
			assertNoSecret(t, []string{err.Error()}, secret, pathToken)
			if strings.Contains(err.Error(), "/hooks/") {
				t.Errorf("error names the URL's path: %v", err)
			}
		})
	}
}

func TestWebhookHonoursContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ch := mustParse(t, "hook", map[string]any{"type": "webhook", "url": srv.URL})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := ch.Send(ctx, testEvent())
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("Send with a cancelled context = %v", err)
	}
}
