package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/reseller"
	"github.com/dcvd/dcvd/sandbox"
)

// canonCert is the certificate of the canonical-form test, validated by an
// http file served in-process: the test needs no outside server.
const canonCert = "canon"

// TestReissueWithNewlineCSRDeploys: the servers of the API family verify a
// signature over the request as their PHP middleware leaves it, strings
// trimmed (reseller-api.md, "What the server sees"), and so does the
// sandbox. dcvd's CSRs end in a newline, as PEM does. The test shows the
// sandbox refusing a reissue signed over the untrimmed CSR, then the real
// dcvd binary reissuing and deploying through the same sandbox: it sent
// the CSR trimmed, signed as the server sees it, and was charged once.
func TestReissueWithNewlineCSRDeploys(t *testing.T) {
	bin := dcvdBinary(t, "")
	ctx := testContext(t)
	dir := t.TempDir()
	webroot := filepath.Join(dir, "webroot")
	webAddr := serveWebroot(t, webroot)
	sb, _ := startSandbox(t, sandbox.Config{HTTPAddr: webAddr})

	// dcvd talks to the sandbox through a door that keeps the reissue
	// bodies as they were sent.
	var mu sync.Mutex
	var reissues [][]byte
	h := sb.Handler()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1"+reseller.PathReissue {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return // the client is gone
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			mu.Lock()
			reissues = append(reissues, body)
			mu.Unlock()
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(api.Close)
	apiURL := api.URL + "/api/v1"

	// Without this refusal the deployment below would prove nothing.
	_, csr := newCSR(t, canonCert+".example.com") // PEM: ends in a newline
	code, msg := sendUntrimmedReissue(ctx, t, sb, apiURL, csr)
	if code != sandbox.CodeSignatureInvalid || !strings.Contains(msg, "untrimmed") {
		t.Fatalf("a reissue signed over the untrimmed CSR got %q %q, want %s saying the values were untrimmed", code, msg, sandbox.CodeSignatureInvalid)
	}

	stateDir, deployDir := filepath.Join(dir, "state"), filepath.Join(dir, "deploy")
	cfgPath := writeConfig(t, dir, sb, apiURL, map[string]any{"state_dir": stateDir, "poll_interval": "100ms"}, nil,
		httpCert(canonCert, serviceID, webroot, webAddr, deployDir))
	r := runDcvd(ctx, bin, nil, "reissue", canonCert, "--wait", "--config", cfgPath)
	if r.err != nil {
		t.Fatalf("dcvd reissue %s --wait: %v\nstdout:\n%s\nstderr:\n%s", canonCert, r.err, r.stdout, r.stderr)
	}

	_, order := readState(ctx, t, stateDir, canonCert)
	if !strings.HasSuffix(order.CSR, "-----END CERTIFICATE REQUEST-----\n") {
		t.Fatalf("dcvd's CSR does not end in a newline (%q): the test proves nothing", order.CSR[max(0, len(order.CSR)-40):])
	}
	checkCharges(t, sb, order.UniqueID)
	checkDeployed(t, deployDir, sb.RootPool(), []string{canonCert + ".example.com"})

	mu.Lock()
	defer mu.Unlock()
	if len(reissues) != 2 {
		t.Fatalf("%d reissue requests reached the sandbox, want the refused one and dcvd's", len(reissues))
	}
	var sent struct {
		CSR      string `json:"csr"`
		UniqueID string `json:"unique_id"`
	}
	if err := json.Unmarshal(reissues[1], &sent); err != nil {
		t.Fatalf("dcvd's reissue body %s: %v", reissues[1], err)
	}
	if sent.UniqueID != order.UniqueID || sent.CSR != strings.TrimRight(order.CSR, "\n") {
		t.Errorf("dcvd sent unique_id %q and a CSR ending %q; want %s and its CSR without the final newline",
			sent.UniqueID, sent.CSR[max(0, len(sent.CSR)-40):], order.UniqueID)
	}
}

// sendUntrimmedReissue sends a reissue of the test's service signed as dcvd
// signed before it knew of the servers' middleware, over the CSR with its
// final newline, and returns the refusal's error code and message.
func sendUntrimmedReissue(ctx context.Context, t *testing.T, sb *sandbox.Server, apiURL, csr string) (code, msg string) {
	t.Helper()
	id, secret := sb.AccessKey()
	u, err := url.Parse(apiURL + reseller.PathReissue)
	if err != nil {
		t.Fatal(err)
	}
	body := map[string]any{"unique_id": "e2e-untrimmed", "service_id": serviceID, "csr": csr,
		"domain_dcv": map[string]any{canonCert + ".example.com": "http"}}
	q := url.Values{
		reseller.ParamAccessKeyID: {id},
		reseller.ParamNonce:       {"e2e0untrimmed0nonce0000000000000"},
		reseller.ParamTimestamp:   {reseller.FormatTimestamp(time.Now())},
	}
	signed := map[string]any{}
	for k := range q {
		signed[k] = q.Get(k)
	}
	for k, v := range body {
		signed[k] = v
	}
	q.Set(reseller.ParamSign, reseller.Sign(secret, reseller.UntrimmedStringToSign(u.Path, signed)))
	u.RawQuery = q.Encode()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env struct {
		Message   string `json:"message"`
		ErrorCode string `json:"error_code"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatalf("the sandbox's reply (HTTP %d): %v", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("HTTP %d, want 401", resp.StatusCode)
	}
	return env.ErrorCode, env.Message
}
