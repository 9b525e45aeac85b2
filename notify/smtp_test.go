package notify

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/internal/testpki"
)

// smtpServer is a minimal SMTP server for tests: EHLO, STARTTLS (when
// given a certificate), AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
type smtpServer struct {
	ln net.Listener

	tlsConf   *tls.Config // offers STARTTLS when set (and not implicit)
	implicit  bool        // the listener already speaks TLS
	authReply string      // reply to AUTH; default 235
	rcptReply string      // reply to RCPT; default 250
	silent    bool        // accept, then say nothing
	accepted  chan struct{}

	mu       sync.Mutex
	user     string
	pass     string
	authed   bool
	tlsUsed  bool
	from     string
	rcpts    []string
	data     []byte // raw DATA as sent, dot-stuffing undone
	sessions int
}

func startSMTP(t *testing.T, s *smtpServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if s.implicit {
		ln = tls.NewListener(ln, s.tlsConf)
	}
	s.ln = ln
	s.accepted = make(chan struct{}, 16)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted <- struct{}{}
			go s.serve(c)
		}
	}()
	return ln.Addr().String()
}

func (s *smtpServer) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait))
	s.mu.Lock()
	s.sessions++
	if s.implicit {
		s.tlsUsed = true
	}
	s.mu.Unlock()
	if s.silent {
		_, _ = io.Copy(io.Discard, c)
		return
	}
	r := bufio.NewReader(c)
	say := func(line string) { _, _ = io.WriteString(c, line+"\r\n") }
	say("220 test.local ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(strings.SplitN(cmd, " ", 2)[0])
		switch verb {
		case "EHLO", "HELO":
			s.mu.Lock()
			tlsOn := s.tlsUsed
			s.mu.Unlock()
			say("250-test.local")
			if s.tlsConf != nil && !tlsOn {
				say("250-STARTTLS")
			}
			say("250-8BITMIME")
			say("250 AUTH PLAIN")
		case "STARTTLS":
			if s.tlsConf == nil {
				say("502 no")
				continue
			}
			say("220 go ahead")
			tc := tls.Server(c, s.tlsConf)
			if err := tc.Handshake(); err != nil {
				return
			}
			c, r = tc, bufio.NewReader(tc)
			s.mu.Lock()
			s.tlsUsed = true
			s.mu.Unlock()
		case "AUTH":
			f := strings.Fields(cmd)
			if len(f) != 3 || strings.ToUpper(f[1]) != "PLAIN" {
				say("504 PLAIN with an initial response only")
				continue
			}
			raw, err := base64.StdEncoding.DecodeString(f[2])
			parts := strings.Split(string(raw), "\x00")
			if err != nil || len(parts) != 3 {
				say("501 bad PLAIN")
				continue
			}
			s.mu.Lock()
			s.user, s.pass = parts[1], parts[2]
			s.mu.Unlock()
			if s.authReply != "" {
				say(s.authReply)
				continue
			}
			s.mu.Lock()
			s.authed = true
			s.mu.Unlock()
			say("235 2.7.0 ok")
		case "MAIL":
			s.mu.Lock()
			s.from = strings.TrimSuffix(strings.TrimPrefix(cmd[len("MAIL FROM:"):], "<"), ">")
			if i := strings.Index(s.from, "> "); i >= 0 {
				s.from = s.from[:i]
			}
			s.mu.Unlock()
			say("250 ok")
		case "RCPT":
			if s.rcptReply != "" {
				say(s.rcptReply)
				continue
			}
			s.mu.Lock()
			s.rcpts = append(s.rcpts, strings.TrimSuffix(strings.TrimPrefix(cmd[len("RCPT TO:"):], "<"), ">"))
			s.mu.Unlock()
			say("250 ok")
		case "DATA":
			say("354 end with .")
			var data bytes.Buffer
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				if strings.HasPrefix(l, "..") {
					l = l[1:]
				}
				data.WriteString(l)
			}
			s.mu.Lock()
			s.data = data.Bytes()
			s.mu.Unlock()
			say("250 queued")
		case "RSET", "NOOP":
			say("250 ok")
		case "QUIT":
			say("221 bye")
			return
		default:
			say("500 unknown")
		}
	}
}

// testCert makes a self-signed certificate for 127.0.0.1 and a pool
// trusting it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key := testpki.Key(t)
	leaf := testpki.SelfSigned(t, key, "test smtp", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), "127.0.0.1")
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, pool
}

const smtpPassword = "smtp-Pa55word-do-not-leak"

func smtpSection(t *testing.T, addr string, extra map[string]any) map[string]any {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "smtp-password")
	if err := os.WriteFile(pw, []byte(smtpPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := map[string]any{
		"type":          "smtp",
		"server":        addr,
		"starttls":      false,
		"username":      "dcvd@example.com",
		"password_file": pw,
		"from":          "dcvd <dcvd@example.com>",
		"to":            []any{"ops@example.com", "王工 <wang@example.com>"},
	}
	for k, v := range extra {
		if v == nil {
			delete(s, k)
		} else {
			s[k] = v
		}
	}
	return s
}

func smtpChan(t *testing.T, section map[string]any) *smtpChannel {
	t.Helper()
	c := mustParse(t, "mail", section).(*smtpChannel)
	c.now = fixedClock
	return c
}

func TestSMTPMessage(t *testing.T) {
	srv := &smtpServer{}
	addr := startSMTP(t, srv)
	c := smtpChan(t, smtpSection(t, addr, nil))

	e := testEvent()
	e.Title = "shop: 证书重签失败\r\nBcc: victim@example.com"
	e.Text = "first line\n.hidden line starts with a dot\n请检查 DNS 记录。"
	if err := c.Send(context.Background(), e); err != nil {
		t.Fatalf("Send: %v", err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()

	if srv.user != "dcvd@example.com" || srv.pass != smtpPassword || !srv.authed {
		t.Errorf("AUTH PLAIN got %q/%q", srv.user, srv.pass)
	}
	if srv.from != "dcvd@example.com" {
		t.Errorf("MAIL FROM %q", srv.from)
	}
	if strings.Join(srv.rcpts, ",") != "ops@example.com,wang@example.com" {
		t.Errorf("RCPT TO %v", srv.rcpts)
	}
	raw := srv.data
	if bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\n")) ||
		bytes.Contains(bytes.ReplaceAll(raw, []byte("\r\n"), nil), []byte("\r")) {
		t.Errorf("bare CR or LF in the message:\n%q", raw)
	}
	for _, l := range strings.Split(string(raw), "\r\n") {
		if len(l) > 998 {
			t.Errorf("line of %d bytes", len(l))
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("ReadMessage: %v\n%s", err, raw)
	}
	h := msg.Header
	if len(h["Bcc"]) != 0 {
		t.Errorf("header injection: Bcc %v", h["Bcc"])
	}
	subj := h.Get("Subject")
	if !strings.HasPrefix(subj, "=?utf-8?q?") {
		t.Errorf("Subject not Q-encoded: %q", subj)
	}
	dec, err := new(mime.WordDecoder).DecodeHeader(subj)
	if err != nil || dec != "[dcvd] shop: 证书重签失败 Bcc: victim@example.com" {
		t.Errorf("Subject decodes to %q (%v)", dec, err)
	}
	from, err := h.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Address != "dcvd@example.com" || from[0].Name != "dcvd" {
		t.Errorf("From %v (%v)", from, err)
	}
	to, err := h.AddressList("To")
	if err != nil || len(to) != 2 || to[1].Name != "王工" || to[1].Address != "wang@example.com" {
		t.Errorf("To %v (%v)", to, err)
	}
	if d, err := h.Date(); err != nil || !d.Equal(fixedNow) {
		t.Errorf("Date %v (%v)", d, err)
	}
	if !regexp.MustCompile(`^<[0-9a-f]{24}@example\.com>$`).MatchString(h.Get("Message-ID")) {
		t.Errorf("Message-ID %q", h.Get("Message-ID"))
	}
	for k, want := range map[string]string{
		"Mime-Version": "1.0", "Content-Type": "text/plain; charset=utf-8",
		"Content-Transfer-Encoding": "quoted-printable", "Auto-Submitted": "auto-generated",
	} {
		if h.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, h.Get(k), want)
		}
	}
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"first line\r\n.hidden line starts with a dot\r\n请检查 DNS 记录。",
		"cert: shop\r\n", "unique_id: dcvd-shop-0001\r\n", "attempts: 5\r\n", "time: 2026-03-01T08:29:00Z"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
}

func TestSMTPStartTLS(t *testing.T) {
	cert, pool := testCert(t)
	srv := &smtpServer{tlsConf: &tls.Config{Certificates: []tls.Certificate{cert}}}
	addr := startSMTP(t, srv)
	c := smtpChan(t, smtpSection(t, addr, map[string]any{"starttls": nil}))
	if c.security != smtpSTARTTLS {
		t.Fatalf("default security = %v", c.security)
	}
	c.tlsConfig = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if err := c.Send(context.Background(), testEvent()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if !srv.tlsUsed || srv.pass != smtpPassword || len(srv.data) == 0 {
		t.Errorf("tls %v pass %q data %d bytes", srv.tlsUsed, srv.pass, len(srv.data))
	}
}

func TestSMTPImplicitTLS(t *testing.T) {
	cert, pool := testCert(t)
	srv := &smtpServer{implicit: true, tlsConf: &tls.Config{Certificates: []tls.Certificate{cert}}}
	addr := startSMTP(t, srv)
	c := smtpChan(t, smtpSection(t, addr, map[string]any{"starttls": nil}))
	c.security = smtpImplicitTLS // as port 465 would choose
	c.tlsConfig = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if err := c.Send(context.Background(), testEvent()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	srv.mu.Lock()
	if !srv.tlsUsed || len(srv.data) == 0 {
		t.Errorf("tls %v data %d bytes", srv.tlsUsed, len(srv.data))
	}
	srv.mu.Unlock()

	// A certificate the client does not trust fails the handshake.
	c.tlsConfig = nil
	err := c.Send(context.Background(), testEvent())
	if err == nil || !strings.Contains(err.Error(), "TLS handshake") {
		t.Errorf("untrusted certificate: %v", err)
	}
}

func TestSMTPFailures(t *testing.T) {
	for _, tc := range []struct {
		name      string
		srv       *smtpServer
		extra     map[string]any
		want      string
		permanent bool
		noAuth    bool // the password must not have been sent
	}{
		{"auth rejected", &smtpServer{authReply: "535 5.7.8 bad credentials"}, nil, "AUTH PLAIN as dcvd@example.com: 535", false, false},
		{"recipient rejected", &smtpServer{rcptReply: "550 5.1.1 no such user"}, nil, "RCPT TO ops@example.com: 550", false, false},
		{"no STARTTLS offered", &smtpServer{}, map[string]any{"starttls": nil}, "does not offer STARTTLS", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startSMTP(t, tc.srv)
			c := smtpChan(t, smtpSection(t, addr, tc.extra))
			err := c.Send(context.Background(), testEvent())
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "notify mail (smtp): ") {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			if IsPermanent(err) != tc.permanent {
				t.Errorf("permanent = %v", IsPermanent(err))
			}
			tc.srv.mu.Lock()
			defer tc.srv.mu.Unlock()
			if tc.noAuth && tc.srv.pass != "" {
				t.Error("the password was sent without TLS")
			}
			if len(tc.srv.data) != 0 {
				t.Error("a message was accepted")
			}
			assertNoSecret(t, []string{err.Error()}, smtpPassword, base64.StdEncoding.EncodeToString([]byte("\x00dcvd@example.com\x00"+smtpPassword)))
		})
	}
}

func TestSMTPHonoursContext(t *testing.T) {
	srv := &smtpServer{silent: true}
	addr := startSMTP(t, srv)
	c := smtpChan(t, smtpSection(t, addr, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Send(ctx, testEvent()) }()
	select {
	case <-srv.accepted:
	case <-time.After(wait):
		t.Fatal("no connection")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Send = %v, want context canceled", err)
		}
	case <-time.After(wait):
		t.Fatal("Send ignored the cancelled context")
	}
}

func TestEncodeSubject(t *testing.T) {
	if got := encodeSubject("[dcvd] shop renewed"); got != "[dcvd] shop renewed" {
		t.Errorf("ASCII subject changed: %q", got)
	}
	long := strings.Repeat("证书", 60)
	enc := encodeSubject(long)
	for _, l := range strings.Split(enc, "\r\n") {
		if len(l) > 78 {
			t.Errorf("encoded line of %d bytes: %q", len(l), l)
		}
	}
	dec, err := new(mime.WordDecoder).DecodeHeader(strings.ReplaceAll(enc, "\r\n", ""))
	if err != nil || dec != long {
		t.Errorf("round trip = %q, %v", dec, err)
	}
}
