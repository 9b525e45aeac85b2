package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// robotServer records one request and answers with reply.
type robotServer struct {
	mu    sync.Mutex
	reply string
	path  string
	query url.Values
	raw   string // raw query
	body  map[string]any
	n     int
}

func (s *robotServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.path, s.query, s.raw = r.URL.Path, r.URL.Query(), r.URL.RawQuery
	s.body = nil
	if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") ||
		json.Unmarshal(b, &s.body) != nil {
		http.Error(w, "not a JSON POST", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, s.reply)
}

func newRobot(t *testing.T, reply string) (*robotServer, string) {
	t.Helper()
	rs := &robotServer{reply: reply}
	srv := httptest.NewServer(rs)
	t.Cleanup(srv.Close)
	return rs, srv.URL
}

// get walks a decoded JSON object.
func get(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		o, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = o[p]
	}
	return v
}

// closedURL is an address where nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

func TestWeCom(t *testing.T) {
	const key = "693a91f6-wecom-key-do-not-leak"
	rs, base := newRobot(t, `{"errcode":0,"errmsg":"ok"}`)
	ch := mustParse(t, "wx", map[string]any{"type": "wecom", "url": base + "/cgi-bin/webhook/send", "key": key})
	if err := ch.Send(context.Background(), testEvent()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if rs.path != "/cgi-bin/webhook/send" || rs.query.Get("key") != key || len(rs.query) != 1 {
		t.Errorf("path %q query %v", rs.path, rs.query)
	}
	if get(rs.body, "msgtype") != "markdown" {
		t.Errorf("msgtype = %v", get(rs.body, "msgtype"))
	}
	content, _ := get(rs.body, "markdown", "content").(string)
	for _, want := range []string{"### [dcvd] shop: 证书重签失败", "请检查 DNS 记录。", "- **unique_id**: dcvd-shop-0001", "- **step**: submitted"} {
		if !strings.Contains(content, want) {
			t.Errorf("content lacks %q:\n%s", want, content)
		}
	}

	// Over-long text is cut to WeCom's 4096 bytes.
	long := testEvent()
	long.Text = strings.Repeat("长", 3000)
	if err := ch.Send(context.Background(), long); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if c, _ := get(rs.body, "markdown", "content").(string); len(c) > 4096 || !strings.HasSuffix(c, "…") {
		t.Errorf("content is %d bytes", len(c))
	}

	// The pasted webhook URL works too, with a warning.
	c, warns, errs := Parse("wx", map[string]any{"type": "wecom", "url": base + "/cgi-bin/webhook/send?key=" + key}, nil, nil)
	if len(errs) > 0 || len(warns) != 1 || !strings.Contains(warns[0], "notify.wx.url") {
		t.Fatalf("Parse = %v %v", warns, errs)
	}
	assertNoSecret(t, warns, key)
	if err := c.Channel.Send(context.Background(), testEvent()); err != nil || rs.query.Get("key") != key {
		t.Errorf("Send via pasted URL: %v, key %q", err, rs.query.Get("key"))
	}
}

func TestRobotErrors(t *testing.T) {
	const token = "robot-token-do-not-leak"
	const secret = "SECrobot-secret-do-not-leak"
	for _, tc := range []struct {
		name    string
		typ     string
		section func(base string) map[string]any
		reply   string
		want    string
	}{
		{"wecom errcode echoing key", "wecom", func(b string) map[string]any {
			return map[string]any{"url": b, "key": token}
		}, `{"errcode":93000,"errmsg":"invalid webhook url, key ` + token + `"}`, "errcode 93000: invalid webhook url, key [redacted]"},
		{"wecom reply without errcode", "wecom", func(b string) map[string]any {
			return map[string]any{"url": b, "key": token}
		}, `{"ok":true}`, "no errcode"},
		{"wecom HTML from a proxy", "wecom", func(b string) map[string]any {
			return map[string]any{"url": b, "key": token}
		}, `<html>login ` + token + `</html>`, "not the robot's JSON"},
		{"dingtalk sign mismatch", "dingtalk", func(b string) map[string]any {
			return map[string]any{"url": b, "access_token": token, "secret": secret}
		}, `{"errcode":310000,"errmsg":"sign not match, more: [` + secret + `]"}`, "errcode 310000: sign not match"},
		{"feishu sign mismatch", "feishu", func(b string) map[string]any {
			return map[string]any{"url": b + "/hook", "hook_id": token, "secret": secret}
		}, `{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time","data":{}}`, "code 19021: sign match fail"},
		{"feishu old StatusCode error", "feishu", func(b string) map[string]any {
			return map[string]any{"url": b + "/hook", "hook_id": token}
		}, `{"StatusCode":9499,"StatusMessage":"Bad Request"}`, "StatusCode 9499: Bad Request"},
		{"feishu reply without code", "feishu", func(b string) map[string]any {
			return map[string]any{"url": b + "/hook", "hook_id": token}
		}, `{}`, "no code"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, base := newRobot(t, tc.reply)
			s := tc.section(base)
			s["type"] = tc.typ
			ch := mustParse(t, "im", s)
			err := ch.Send(context.Background(), testEvent())
			if err == nil {
				t.Fatal("Send succeeded")
			}
			if rs.n != 1 {
				t.Errorf("%d requests", rs.n)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			assertNoSecret(t, []string{err.Error()}, token, secret, url.QueryEscape(secret))

			// The same channel against a dead address: still no token.
			s["url"] = closedURL(t)
			if tc.typ == "feishu" {
				s["url"] = s["url"].(string) + "/hook"
			}
			err = mustParse(t, "im", s).Send(context.Background(), testEvent())
			if err == nil {
				t.Fatal("Send to a closed port succeeded")
			}
			assertNoSecret(t, []string{err.Error()}, token, secret)
		})
	}
}

func TestDingTalkSigned(t *testing.T) {
	const token = "ding-access-token-do-not-leak"
	const secret = "SEC0123456789abcdef-do-not-leak"
	rs, base := newRobot(t, `{"errcode":0,"errmsg":"ok"}`)
	ch := mustParse(t, "ding", map[string]any{"type": "dingtalk", "url": base + "/robot/send", "access_token": token, "secret": secret})
	ch.(*dingtalk).now = fixedClock
	if err := ch.Send(context.Background(), testEvent()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	ms := strconv.FormatInt(fixedNow.UnixMilli(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ms + "\n" + secret))
	wantSign := base64.StdEncoding.EncodeToString(mac.Sum(nil))

	if rs.path != "/robot/send" {
		t.Errorf("path = %q", rs.path)
	}
	if rs.query.Get("access_token") != token || rs.query.Get("timestamp") != ms || rs.query.Get("sign") != wantSign {
		t.Errorf("query = %v, want timestamp %s sign %s", rs.query, ms, wantSign)
	}
	// The base64 is URL-encoded exactly once: '+', '/' and '=' never travel raw.
	for _, kv := range strings.Split(rs.raw, "&") {
		if v, ok := strings.CutPrefix(kv, "sign="); ok && strings.ContainsAny(v, "+/=") {
			t.Errorf("sign not URL-encoded: %q", v)
		}
	}
	if got := DingTalkSign(secret, fixedNow.UnixMilli()); got != wantSign {
		t.Errorf("DingTalkSign = %q, want %q", got, wantSign)
	}
	if get(rs.body, "msgtype") != "markdown" || get(rs.body, "markdown", "title") != "[dcvd] shop: 证书重签失败" {
		t.Errorf("body = %v", rs.body)
	}
	if text, _ := get(rs.body, "markdown", "text").(string); !strings.Contains(text, "- **cert**: shop") {
		t.Errorf("text = %q", text)
	}

	// Without a secret: no timestamp or sign, and the default-URL layout
	// with the token in the query.
	rs2, base2 := newRobot(t, `{"errcode":0,"errmsg":"ok"}`)
	ch = mustParse(t, "ding", map[string]any{"type": "dingtalk", "url": base2 + "/robot/send?access_token=" + token})
	if err := ch.Send(context.Background(), testEvent()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if rs2.query.Get("access_token") != token || rs2.query.Has("sign") || rs2.query.Has("timestamp") {
		t.Errorf("query = %v", rs2.query)
	}
}

func TestFeishuSigned(t *testing.T) {
	const hook = "5f1b2c3d-feishu-hook-do-not-leak"
	const secret = "feishu-secret-do-not-leak"
	for _, reply := range []string{
		`{"code":0,"msg":"success","data":{},"Extra":null,"StatusCode":0,"StatusMessage":"success"}`,
		`{"Extra":null,"StatusCode":0,"StatusMessage":"success"}`,
	} {
		rs, base := newRobot(t, reply)
		ch := mustParse(t, "fs", map[string]any{"type": "feishu", "url": base + "/open-apis/bot/v2/hook", "hook_id": hook, "secret": secret})
		ch.(*feishu).now = fixedClock
		if err := ch.Send(context.Background(), testEvent()); err != nil {
			t.Fatalf("Send (reply %s): %v", reply, err)
		}
		if rs.path != "/open-apis/bot/v2/hook/"+hook || len(rs.query) != 0 {
			t.Errorf("path %q query %v", rs.path, rs.query)
		}
		ts := strconv.FormatInt(fixedNow.Unix(), 10)
		mac := hmac.New(sha256.New, []byte(ts+"\n"+secret))
		wantSign := base64.StdEncoding.EncodeToString(mac.Sum(nil))
		if get(rs.body, "timestamp") != ts || get(rs.body, "sign") != wantSign {
			t.Errorf("timestamp %v sign %v, want %s %s", get(rs.body, "timestamp"), get(rs.body, "sign"), ts, wantSign)
		}
		if FeishuSign(secret, fixedNow.Unix()) != wantSign {
			t.Error("FeishuSign disagrees")
		}
		if get(rs.body, "msg_type") != "text" {
			t.Errorf("msg_type = %v", get(rs.body, "msg_type"))
		}
		text, _ := get(rs.body, "content", "text").(string)
		for _, want := range []string{"[dcvd] shop: 证书重签失败", "请检查 DNS 记录。", "unique_id: dcvd-shop-0001"} {
			if !strings.Contains(text, want) {
				t.Errorf("text lacks %q: %q", want, text)
			}
		}
	}

	// Unsigned, with the pasted hook URL: no timestamp or sign fields.
	rs, base := newRobot(t, `{"code":0,"msg":"success"}`)
	ch := mustParse(t, "fs", map[string]any{"type": "feishu", "url": base + "/open-apis/bot/v2/hook/" + hook})
	if err := ch.Send(context.Background(), testEvent()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if rs.path != "/open-apis/bot/v2/hook/"+hook || get(rs.body, "sign") != nil || get(rs.body, "timestamp") != nil {
		t.Errorf("path %q body %v", rs.path, rs.body)
	}
}
