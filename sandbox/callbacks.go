package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// The callback format is not public. The sandbox POSTs the order exactly as
// detail's data shows it, on every status change after the order was placed
// (pending → issued, issued → revoked), and retries until a 2xx.

// notifyLocked schedules the callback of o's current state, if o has a
// notify_url. The body is taken now, under the lock; delivery runs in a
// goroutine tracked by Close.
func (s *Server) notifyLocked(o *orderState) {
	if o.NotifyURL == "" || s.closed {
		return
	}
	body, err := json.Marshal(s.orderViewLocked(o, 0))
	if err != nil {
		s.log.Error("encode callback", zap.String("unique_id", o.UniqueID), zap.Error(err))
		return
	}
	s.wg.Add(1)
	go s.deliver(o.NotifyURL, body, o.UniqueID, o.Status)
}

// deliver POSTs body to url until it is accepted (2xx), at most
// callbackAttempts times, waiting CallbackBackoff before the first retry and
// doubling the wait each time. Close abandons it.
func (s *Server) deliver(url string, body []byte, uid, status string) {
	defer s.wg.Done()
	log := s.log.With(zap.String("notify_url", url), zap.String("unique_id", uid), zap.String("status", status))
	wait := s.cfg.CallbackBackoff
	for attempt := 1; ; attempt++ {
		err := s.post(url, body)
		if err == nil {
			log.Info("callback delivered", zap.Int("attempt", attempt))
			return
		}
		if attempt == callbackAttempts {
			log.Warn("callback abandoned", zap.Int("attempts", attempt), zap.Error(err))
			return
		}
		log.Info("callback failed; will retry", zap.Int("attempt", attempt), zap.Duration("retry_in", wait), zap.Error(err))
		t := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			t.Stop()
			log.Info("callback abandoned: sandbox closed", zap.Int("attempts", attempt))
			return
		case <-t.C:
		}
		wait *= 2
	}
}

func (s *Server) post(url string, body []byte) error {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("callback request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dcvd-sandbox-callback")
	resp, err := s.cb.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("callback answered %s", resp.Status)
	}
	return nil
}
