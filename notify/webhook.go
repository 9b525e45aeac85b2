package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Headers of the generic webhook.
const (
	// HeaderTimestamp carries the Unix time (seconds) the request was signed at.
	HeaderTimestamp = "X-Dcvd-Timestamp"
	// HeaderSignature carries "sha256=" and the hex HMAC-SHA256, keyed with
	// the secret, of the timestamp, ".", and the body.
	HeaderSignature = "X-Dcvd-Signature"
	// HeaderEvent carries the event's kind, for routing without parsing.
	HeaderEvent = "X-Dcvd-Event"
)

// WebhookPayload is the JSON body of the generic webhook. The names are
// stable: receivers parse them.
type WebhookPayload struct {
	Kind     Kind              `json:"kind"`
	Level    string            `json:"level"`
	Cert     string            `json:"cert"`
	UniqueID string            `json:"unique_id"`
	Title    string            `json:"title"`
	Text     string            `json:"text"`
	Fields   map[string]string `json:"fields"`
	Time     string            `json:"time"` // RFC 3339, UTC
}

// payload converts e to the webhook's body.
func payload(e Event) WebhookPayload {
	fields := e.Fields
	if fields == nil {
		fields = map[string]string{}
	}
	return WebhookPayload{
		Kind:     e.Kind,
		Level:    e.Level.String(),
		Cert:     e.Cert,
		UniqueID: e.UniqueID,
		Title:    e.Title,
		Text:     e.Text,
		Fields:   fields,
		Time:     e.Time.UTC().Format(time.RFC3339),
	}
}

// WebhookSignature computes the X-Dcvd-Signature value for a body sent at
// timestamp (Unix seconds, as in X-Dcvd-Timestamp). Receivers compute the
// same and compare with hmac.Equal, and should refuse old timestamps.
func WebhookSignature(secret string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte("."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// webhook posts the event as JSON to a URL of the admin's choice.
type webhook struct {
	httpTarget
	url    *url.URL
	secret string
	now    func() time.Time
}

func (w *webhook) Name() string { return w.name }

// Send posts the event; any 2xx reply is success.
func (w *webhook) Send(ctx context.Context, e Event) error {
	body, err := json.Marshal(payload(e))
	if err != nil {
		return Permanent(fmt.Errorf("%s: encoding the event: %w", w.prefix(), err))
	}
	ts := w.now().Unix()
	h := http.Header{}
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderEvent, string(e.Kind))
	if w.secret != "" {
		h.Set(HeaderSignature, WebhookSignature(w.secret, ts, body))
	}
	_, err = w.post(ctx, w.url, h, body)
	return err
}
