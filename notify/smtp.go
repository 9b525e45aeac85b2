package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"strings"
	"time"
)

// smtpSecurity is how the SMTP session is protected.
type smtpSecurity int

const (
	// smtpSTARTTLS upgrades a plain connection and refuses servers that do
	// not offer STARTTLS (the default).
	smtpSTARTTLS smtpSecurity = iota
	// smtpImplicitTLS speaks TLS from the first byte (port 465).
	smtpImplicitTLS
	// smtpPlain never encrypts: for relays on the local machine only.
	smtpPlain
)

func (s smtpSecurity) String() string {
	switch s {
	case smtpImplicitTLS:
		return "implicit TLS"
	case smtpPlain:
		return "plain"
	}
	return "STARTTLS"
}

// smtpChannel sends each event as a plain-text e-mail.
type smtpChannel struct {
	name     string
	addr     string // host:port
	host     string
	security smtpSecurity
	username string
	password string
	from     *mail.Address
	to       []*mail.Address
	helo     string
	timeout  time.Duration
	red      redactor

	// tlsConfig, when set, replaces the default (system roots, ServerName
	// host); tests trust their own CA with it.
	tlsConfig *tls.Config
	now       func() time.Time
}

func (c *smtpChannel) Name() string { return c.name }

func (c *smtpChannel) prefix() string { return "notify " + c.name + " (smtp)" }

func (c *smtpChannel) tlsConf() *tls.Config {
	if c.tlsConfig != nil {
		return c.tlsConfig.Clone()
	}
	return &tls.Config{ServerName: c.host, MinVersion: tls.VersionTLS12}
}

// Send delivers the event in one SMTP session.
func (c *smtpChannel) Send(ctx context.Context, e Event) error {
	msg, err := c.message(e)
	if err != nil {
		return Permanent(c.red.failf(err, "%s: composing the message: %v", c.prefix(), err))
	}
	if err := c.session(ctx, msg); err != nil {
		return c.red.failf(err, "%s: %s (%s): %v", c.prefix(), c.addr, c.security, err)
	}
	return nil
}

// session runs one SMTP transaction. ctx bounds all of it: the connection's
// deadline is ctx's, and cancelling ctx interrupts any read or write.
func (c *smtpChannel) session(ctx context.Context, msg []byte) (err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	defer func() {
		// A cancelled or expired context surfaces as whatever I/O it
		// interrupted; say so, and keep it matchable with errors.Is.
		if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
	}()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return err
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if c.security == smtpImplicitTLS {
		tc := tls.Client(conn, c.tlsConf())
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	cl, err := smtp.NewClient(conn, c.host)
	if err != nil {
		return err
	}
	defer cl.Close()
	helo := c.helo
	if helo == "" {
		helo = "localhost"
	}
	if err := cl.Hello(helo); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if c.security == smtpSTARTTLS {
		if ok, _ := cl.Extension("STARTTLS"); !ok {
			// Sending in the clear instead would expose the password
			// and the message to anyone on the path.
			return Permanent(errors.New("the server does not offer STARTTLS (set starttls = false only for a relay on this machine)"))
		}
		if err := cl.StartTLS(c.tlsConf()); err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
	}
	if c.username != "" {
		if ok, _ := cl.Extension("AUTH"); !ok {
			return Permanent(errors.New("the server does not offer AUTH, but a username is configured"))
		}
		if err := cl.Auth(smtp.PlainAuth("", c.username, c.password, c.host)); err != nil {
			return fmt.Errorf("AUTH PLAIN as %s: %w", c.username, err)
		}
	}
	if err := cl.Mail(c.from.Address); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	for _, to := range c.to {
		if err := cl.Rcpt(to.Address); err != nil {
			return fmt.Errorf("RCPT TO %s: %w", to.Address, err)
		}
	}
	w, err := cl.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	// The message is accepted once DATA ends; a failed QUIT does not undo
	// that, so it is not an error worth a second copy.
	_ = cl.Quit()
	return nil
}

// message composes the e-mail with CRLF line endings and a
// quoted-printable UTF-8 body. Every header value passes through oneLine,
// so nothing in an event can start a header of its own.
func (c *smtpChannel) message(e Event) ([]byte, error) {
	var b bytes.Buffer
	header := func(k, v string) {
		b.WriteString(k)
		b.WriteString(": ")
		b.WriteString(v)
		b.WriteString("\r\n")
	}
	header("From", oneLine(c.from.String()))
	var to []string
	for _, a := range c.to {
		to = append(to, oneLine(a.String()))
	}
	// One recipient per folded line keeps long lists under the 998-byte
	// line limit.
	header("To", strings.Join(to, ",\r\n "))
	header("Subject", encodeSubject(e.subject()))
	header("Date", c.now().Format(time.RFC1123Z))
	id, err := messageID(c.from.Address)
	if err != nil {
		return nil, err
	}
	header("Message-ID", id)
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	header("Auto-Submitted", "auto-generated")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	body := strings.ReplaceAll(e.plainText(), "\n", "\r\n") + "\r\n"
	if _, err := qp.Write([]byte(body)); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// encodeSubject Q-encodes a subject that is not plain ASCII, folding
// between encoded words so that no line grows past the limit.
func encodeSubject(s string) string {
	enc := mime.QEncoding.Encode("utf-8", oneLine(s))
	return strings.ReplaceAll(enc, "?= =?", "?=\r\n =?")
}

// messageID makes a unique Message-ID in the sender's domain.
func messageID(from string) (string, error) {
	var r [12]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("message ID: %w", err)
	}
	domain := "dcvd.invalid"
	if i := strings.LastIndexByte(from, '@'); i >= 0 && i+1 < len(from) {
		domain = from[i+1:]
	}
	return "<" + hex.EncodeToString(r[:]) + "@" + oneLine(domain) + ">", nil
}
