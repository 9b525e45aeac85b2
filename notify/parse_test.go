package notify

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Secrets the parse tests put in sections; none may appear in a message.
const (
	inlineSecret = "inline-S3CRET-do-not-leak"
	fileSecret   = "file-S3CRET-do-not-leak"
	envSecret    = "env-S3CRET-do-not-leak"
)

var parseSecrets = []string{inlineSecret, fileSecret, envSecret}

func testEnv(name string) (string, bool) {
	switch name {
	case "DCVD_TEST_SECRET":
		return envSecret, true
	case "DCVD_TEST_EMPTY":
		return "", true
	}
	return "", false
}

func testReadFile(path string) ([]byte, error) {
	switch path {
	case "/run/credentials/dcvd.service/secret":
		return []byte(fileSecret + "\r\n"), nil
	case "/empty":
		return []byte("\n"), nil
	case "/two-lines":
		return []byte(fileSecret + "\nsecond line\n"), nil
	}
	return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
}

func parse(section map[string]any) (Configured, []string, []error) {
	return Parse("ops", section, testEnv, testReadFile)
}

func TestParseValid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		section map[string]any
		level   Level
		warns   []string // substrings, one per expected warning
		check   func(t *testing.T, c Channel)
	}{
		{"webhook minimal", map[string]any{"type": "webhook", "url": "https://hooks.example.com/dcvd"}, LevelError, nil,
			func(t *testing.T, c Channel) {
				w := c.(*webhook)
				if w.secret != "" || w.url.String() != "https://hooks.example.com/dcvd" || w.client.Timeout != DefaultTimeout {
					t.Errorf("%+v", w)
				}
			}},
		{"webhook secret from file, level all, timeout", map[string]any{"type": "webhook", "url": "https://hooks.example.com/",
			"secret_file": "/run/credentials/dcvd.service/secret", "level": "all", "timeout": "5s"}, LevelAll, nil,
			func(t *testing.T, c Channel) {
				w := c.(*webhook)
				if w.secret != fileSecret || w.client.Timeout != 5*time.Second {
					t.Errorf("secret %q timeout %v", w.secret, w.client.Timeout)
				}
			}},
		{"webhook inline secret warns", map[string]any{"type": "webhook", "url": "https://hooks.example.com/", "secret": inlineSecret},
			LevelError, []string{"notify.ops.secret: a secret written in the config file"}, nil},
		{"webhook plain http warns", map[string]any{"type": "webhook", "url": "http://hooks.example.com/"},
			LevelError, []string{"notify.ops.url: plain http"}, nil},
		{"webhook plain http to loopback is fine", map[string]any{"type": "webhook", "url": "http://127.0.0.1:9000/"}, LevelError, nil, nil},
		{"wecom key from env", map[string]any{"type": "wecom", "key_env": "DCVD_TEST_SECRET", "level": "renewal"}, LevelRenewal, nil,
			func(t *testing.T, c Channel) {
				w := c.(*wecom)
				if w.url.Host != "qyapi.weixin.qq.com" || w.url.Path != "/cgi-bin/webhook/send" || w.url.Query().Get("key") != envSecret {
					t.Errorf("url %s", w.url.Redacted())
				}
			}},
		{"wecom whole URL warns", map[string]any{"type": "wecom", "url": WeComURL + "?key=" + inlineSecret},
			LevelError, []string{"notify.ops.url: holds the robot's key"}, nil},
		{"dingtalk default URL", map[string]any{"type": "dingtalk", "access_token_file": "/run/credentials/dcvd.service/secret",
			"secret_env": "DCVD_TEST_SECRET"}, LevelError, nil,
			func(t *testing.T, c Channel) {
				d := c.(*dingtalk)
				if d.url.Host != "oapi.dingtalk.com" || d.url.Query().Get("access_token") != fileSecret || d.secret != envSecret {
					t.Errorf("%s %q", d.url.Redacted(), d.secret)
				}
			}},
		{"feishu hook ID", map[string]any{"type": "feishu", "hook_id_env": "DCVD_TEST_SECRET"}, LevelError, nil,
			func(t *testing.T, c Channel) {
				if got := c.(*feishu).url.String(); got != FeishuURL+"/"+envSecret {
					t.Errorf("url %s", got)
				}
			}},
		{"feishu whole URL warns", map[string]any{"type": "feishu", "url": FeishuURL + "/" + inlineSecret},
			LevelError, []string{"notify.ops.url: holds the bot's hook ID"}, nil},
		{"lark", map[string]any{"type": "feishu", "url": "https://open.larksuite.com/open-apis/bot/v2/hook", "hook_id_env": "DCVD_TEST_SECRET"},
			LevelError, nil, nil},
		{"smtp starttls default", map[string]any{"type": "smtp", "server": "smtp.example.com:587", "username": "u",
			"password_file": "/run/credentials/dcvd.service/secret", "from": "dcvd@example.com", "to": []any{"a@example.com"}}, LevelError, nil,
			func(t *testing.T, c Channel) {
				s := c.(*smtpChannel)
				if s.security != smtpSTARTTLS || s.host != "smtp.example.com" || s.password != fileSecret {
					t.Errorf("%v %q", s.security, s.host)
				}
			}},
		{"smtp 465 implicit", map[string]any{"type": "smtp", "server": "smtp.example.com:465", "from": "dcvd@example.com",
			"to": []string{"a@example.com", "b@example.com"}}, LevelError, nil,
			func(t *testing.T, c Channel) {
				s := c.(*smtpChannel)
				if s.security != smtpImplicitTLS || len(s.to) != 2 {
					t.Errorf("%v %v", s.security, s.to)
				}
			}},
		{"smtp local relay", map[string]any{"type": "smtp", "server": "localhost:25", "starttls": false, "helo": "cert.example.com",
			"from": "dcvd@example.com", "to": []any{"root@localhost"}}, LevelError, nil,
			func(t *testing.T, c Channel) {
				if s := c.(*smtpChannel); s.security != smtpPlain || s.helo != "cert.example.com" {
					t.Errorf("%v", s.security)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, warns, errs := parse(tc.section)
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			if c.Channel == nil || c.Level != tc.level || c.Channel.Name() != "ops" {
				t.Fatalf("Configured = %+v", c)
			}
			if len(warns) != len(tc.warns) {
				t.Errorf("warnings %q, want %d", warns, len(tc.warns))
			}
			for i := range min(len(warns), len(tc.warns)) {
				if !strings.Contains(warns[i], tc.warns[i]) {
					t.Errorf("warning %q lacks %q", warns[i], tc.warns[i])
				}
			}
			assertNoSecret(t, warns, parseSecrets...)
			if tc.check != nil {
				tc.check(t, c.Channel)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	hook := map[string]any{"type": "webhook", "url": "https://hooks.example.com/"}
	with := func(base map[string]any, kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		return m
	}
	mail := map[string]any{"type": "smtp", "server": "smtp.example.com:587", "from": "dcvd@example.com", "to": []any{"ops@example.com"}}
	for _, tc := range []struct {
		name    string
		section map[string]any
		keys    []string // each expected error's key, in order
		reason  string   // in the first error
	}{
		{"no type", map[string]any{"url": "https://x.example/"}, []string{"type"}, "missing"},
		{"unknown type", map[string]any{"type": "slack"}, []string{"type"}, "unknown channel type slack"},
		{"type not a string", map[string]any{"type": 3}, []string{"type"}, "unknown channel type"},
		{"unknown key", with(hook, "secrt", "x"), []string{"secrt"}, "unknown key for type webhook"},
		{"key of another type", with(hook, "access_token", "x"), []string{"access_token"}, "unknown key"},
		{"_file of a non-secret", with(hook, "url_file", "/x"), []string{"url_file"}, "unknown key"},
		{"bad level", with(hook, "level", "warning"), []string{"level"}, "unknown level"},
		{"level not a string", with(hook, "level", 1), []string{"level"}, "must be a string"},
		{"bad timeout", with(hook, "timeout", "forever"), []string{"timeout"}, "duration"},
		{"webhook no url", map[string]any{"type": "webhook"}, []string{"url"}, "required"},
		{"webhook ftp url", with(hook, "url", "ftp://x.example/"), []string{"url"}, "http:// or https://"},
		{"webhook relative url", with(hook, "url", "/hook"), []string{"url"}, "http:// or https://"},
		{"secret twice", with(hook, "secret", inlineSecret, "secret_env", "DCVD_TEST_SECRET"), []string{"secret"}, "set more than once (notify.ops.secret, notify.ops.secret_env)"},
		{"secret file missing", with(hook, "secret_file", "/nope"), []string{"secret_file"}, "cannot read the secret"},
		{"secret file empty", with(hook, "secret_file", "/empty"), []string{"secret_file"}, "empty"},
		{"secret file two lines", with(hook, "secret_file", "/two-lines"), []string{"secret_file"}, "several lines"},
		{"secret env unset", with(hook, "secret_env", "DCVD_TEST_UNSET"), []string{"secret_env"}, "DCVD_TEST_UNSET is not set"},
		{"secret env empty", with(hook, "secret_env", "DCVD_TEST_EMPTY"), []string{"secret_env"}, "not set"},
		{"secret empty", with(hook, "secret", ""), []string{"secret"}, "must not be empty"},
		{"secret not a string", with(hook, "secret", 42), []string{"secret"}, "must be a string"},
		{"wecom no key", map[string]any{"type": "wecom"}, []string{"key"}, "required"},
		{"wecom key twice", map[string]any{"type": "wecom", "url": WeComURL + "?key=" + inlineSecret, "key_env": "DCVD_TEST_SECRET"}, []string{"key"}, "set more than once"},
		{"dingtalk no token", map[string]any{"type": "dingtalk", "secret_env": "DCVD_TEST_SECRET"}, []string{"access_token"}, "required"},
		{"dingtalk sign in url", map[string]any{"type": "dingtalk", "url": DingTalkURL + "?sign=x", "access_token_env": "DCVD_TEST_SECRET"}, []string{"url"}, "timestamp or sign"},
		{"feishu no hook", map[string]any{"type": "feishu", "secret_env": "DCVD_TEST_SECRET"}, []string{"hook_id"}, "required"},
		{"feishu base url without hook", map[string]any{"type": "feishu", "url": FeishuURL}, []string{"hook_id"}, "required"},
		{"feishu hook twice", map[string]any{"type": "feishu", "url": FeishuURL + "/" + inlineSecret, "hook_id_env": "DCVD_TEST_SECRET"}, []string{"hook_id"}, "set more than once"},
		{"feishu hook with a slash", map[string]any{"type": "feishu", "hook_id": "a/b"}, []string{"hook_id"}, "only letters"},
		{"smtp nothing", map[string]any{"type": "smtp"}, []string{"server", "from", "to"}, "required"},
		{"smtp bad server", with(mail, "server", "smtp.example.com"), []string{"server"}, "host:port"},
		{"smtp bad port", with(mail, "server", "smtp.example.com:99999"), []string{"server"}, "host:port"},
		{"smtp starttls not bool", with(mail, "starttls", "yes"), []string{"starttls"}, "true or false"},
		{"smtp starttls on 465", with(mail, "server", "smtp.example.com:465", "starttls", true), []string{"starttls"}, "implicit TLS"},
		{"smtp password in clear to a remote host", with(mail, "starttls", false, "username", "u", "password_env", "DCVD_TEST_SECRET"), []string{"starttls"}, "unencrypted"},
		{"smtp username without password", with(mail, "username", "u"), []string{"password"}, "required with username"},
		{"smtp password without username", with(mail, "password_env", "DCVD_TEST_SECRET"), []string{"password"}, "without username"},
		{"smtp bad from", with(mail, "from", "not an address"), []string{"from"}, "not an e-mail address"},
		{"smtp injected from", with(mail, "from", "a@example.com\r\nBcc: b@example.com"), []string{"from"}, "not an e-mail address"},
		{"smtp to a string", with(mail, "to", "ops@example.com"), []string{"to"}, "list"},
		{"smtp to empty", with(mail, "to", []any{}), []string{"to"}, "at least one"},
		{"smtp to not strings", with(mail, "to", []any{1}), []string{"to"}, "list of strings"},
		{"smtp bad recipient", with(mail, "to", []any{"ops@example.com", "nobody"}), []string{"to"}, `"nobody"`},
		{"smtp bad helo", with(mail, "helo", "two words"), []string{"helo"}, "host name"},
		{"several problems at once", with(mail, "level", "loud", "server", nil, "frm", "x", "password_file", "/nope"),
			[]string{"frm", "level", "server", "password_file", "password"}, "unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, warns, errs := parse(tc.section)
			if len(errs) == 0 {
				t.Fatalf("no error (warnings %v)", warns)
			}
			if c.Channel != nil {
				t.Error("a channel came with errors")
			}
			var got []string
			for _, err := range errs {
				msg := err.Error()
				key, _, ok := strings.Cut(strings.TrimPrefix(msg, "notify.ops."), ": ")
				if !strings.HasPrefix(msg, "notify.ops.") || !ok {
					t.Errorf("error %q is not notify.ops.KEY: reason", msg)
				}
				got = append(got, key)
			}
			if strings.Join(got, " ") != strings.Join(tc.keys, " ") {
				t.Errorf("error keys %v, want %v\n%v", got, tc.keys, errors.Join(errs...))
			}
			if !strings.Contains(errs[0].Error(), tc.reason) {
				t.Errorf("error %q lacks %q", errs[0], tc.reason)
			}
			var texts []string
			for _, err := range errs {
				texts = append(texts, err.Error())
			}
			assertNoSecret(t, append(texts, warns...), parseSecrets...)
		})
	}
}

// TestParseURLsMustBeUsable: a webhook or robot URL that would make every
// delivery fail (a space or a control character, which url.Parse lets
// through in a path or query; no host) is refused, naming the key, without
// quoting the URL, which may hold a token.
func TestParseURLsMustBeUsable(t *testing.T) {
	token := inlineSecret
	for _, tc := range []struct {
		name, typ, url, reason string
	}{
		{"space in the path", "webhook", "https://hooks.example.com/services/" + token + "/dcvd alerts", "a space or a control character"},
		{"space in the query", "webhook", "https://hooks.example.com/hook?token=" + token + "&room=ops team", "a space or a control character"},
		{"trailing space", "webhook", "https://hooks.example.com/" + token + " ", "a space or a control character"},
		{"tab", "webhook", "https://hooks.example.com/\t" + token, "a space or a control character"},
		{"newline", "webhook", "https://hooks.example.com/" + token + "\n", "a space or a control character"},
		{"NUL", "webhook", "https://hooks.example.com/\x00" + token, "a space or a control character"},
		{"non-breaking space", "webhook", "https://hooks.example.com/\u00a0" + token, "a space or a control character"},
		{"no host name", "webhook", "https://:8443/" + token, "absolute http:// or https:// URL"},
		{"no scheme", "webhook", "hooks.example.com/" + token, "absolute http:// or https:// URL"},
		{"wecom with a space", "wecom", WeComURL + "?key=" + token + " ", "a space or a control character"},
		{"dingtalk with a space", "dingtalk", DingTalkURL + "?access_token=" + token + "%20x y", "a space or a control character"},
		{"feishu with a space", "feishu", FeishuURL + "/" + token + " x", "a space or a control character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, warns, errs := parse(map[string]any{"type": tc.typ, "url": tc.url})
			if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "notify.ops.url: ") || !strings.Contains(errs[0].Error(), tc.reason) {
				t.Fatalf("errors %v, want one of notify.ops.url saying %q", errs, tc.reason)
			}
			assertNoSecret(t, append([]string{errs[0].Error()}, warns...), token)
		})
	}
	// Percent-encoded, the same URLs are fine.
	for _, u := range []string{"https://hooks.example.com/dcvd%20alerts", "https://hooks.example.com/hook?room=ops+team"} {
		if _, _, errs := parse(map[string]any{"type": "webhook", "url": u}); len(errs) != 0 {
			t.Errorf("%s: %v", u, errs)
		}
	}
}

func TestParseSectionName(t *testing.T) {
	for _, name := range []string{"", "a.b", "two words"} {
		if _, _, errs := Parse(name, map[string]any{"type": "webhook", "url": "https://x.example/"}, nil, nil); len(errs) == 0 {
			t.Errorf("section name %q accepted", name)
		}
	}
}

// Every secret given by any means stays out of every Send error, even
// when the receiver echoes it.
func TestParsedChannelsRedactSecrets(t *testing.T) {
	echo := strings.Join(parseSecrets, " ")
	rs, base := newRobot(t, `{"errcode":1,"code":1,"errmsg":"`+echo+`","msg":"`+echo+`"}`)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, echo, http.StatusInternalServerError)
	}))
	defer failing.Close()
	for _, tc := range []struct {
		section map[string]any
		secrets []string // the channel's own
	}{
		{map[string]any{"type": "webhook", "url": failing.URL + "/x?token=" + inlineSecret, "secret_env": "DCVD_TEST_SECRET"}, []string{inlineSecret, envSecret}},
		{map[string]any{"type": "wecom", "url": base, "key_file": "/run/credentials/dcvd.service/secret"}, []string{fileSecret}},
		{map[string]any{"type": "dingtalk", "url": base + "?access_token=" + inlineSecret, "secret_env": "DCVD_TEST_SECRET"}, []string{inlineSecret, envSecret}},
		{map[string]any{"type": "feishu", "url": base + "/hook/" + inlineSecret, "secret_file": "/run/credentials/dcvd.service/secret"}, []string{inlineSecret, fileSecret}},
	} {
		typ := tc.section["type"]
		c, _, errs := parse(tc.section)
		if len(errs) > 0 {
			t.Fatalf("%v: %v", typ, errs)
		}
		err := c.Channel.Send(t.Context(), testEvent())
		if err == nil {
			t.Fatalf("%v: Send succeeded", typ)
		}
		if strings.Count(err.Error(), "[redacted]") != len(tc.secrets) {
			t.Errorf("%v: want %d secrets replaced: %v", typ, len(tc.secrets), err)
		}
		assertNoSecret(t, []string{err.Error()}, tc.secrets...)
	}
	if rs.n != 3 {
		t.Errorf("robot got %d requests, want 3", rs.n)
	}
}

// The Notifier's logs of failing real channels carry no secret, even when
// the receivers echo them back.
func TestNotifierLogsNoSecrets(t *testing.T) {
	// The receiver echoes the request line and body, as some error pages do.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		echo := strings.NewReplacer(`"`, "", `\`, "").Replace(r.URL.String() + " " + string(body))
		fmt.Fprintf(w, `{"errcode":40001,"code":19021,"errmsg":"%s","msg":"%s"}`, echo, echo)
	}))
	defer srv.Close()
	base := srv.URL
	var chans []Configured
	for _, section := range []map[string]any{
		{"type": "wecom", "url": base + "?key=" + inlineSecret},
		{"type": "dingtalk", "url": base, "access_token_env": "DCVD_TEST_SECRET", "secret": inlineSecret},
		{"type": "feishu", "url": base + "/hook", "hook_id_file": "/run/credentials/dcvd.service/secret", "secret_env": "DCVD_TEST_SECRET", "level": "all"},
	} {
		c, _, errs := parse(section)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		chans = append(chans, c)
	}
	core, logs := observer.New(zap.DebugLevel)
	n := NewWithOptions(chans, zap.New(core), Options{MaxAttempts: 2, Backoff: []time.Duration{time.Millisecond}})
	n.Notify(testEvent())
	closeNotifier(t, n)
	if s := n.Stats(); s.Failed != 3 {
		t.Errorf("stats = %+v", s)
	}
	var texts []string
	for _, e := range logs.All() {
		texts = append(texts, e.Message)
		for k, v := range e.ContextMap() {
			texts = append(texts, k+"="+fmt.Sprint(v))
		}
	}
	if !strings.Contains(strings.Join(texts, "\n"), "[redacted]") {
		t.Errorf("the receiver's echo was not redacted (vacuous test?):\n%s", strings.Join(texts, "\n"))
	}
	if !strings.Contains(strings.Join(texts, "\n"), "errcode 40001") {
		t.Errorf("logs lack the failure:\n%s", strings.Join(texts, "\n"))
	}
	assertNoSecret(t, texts, parseSecrets...)
}
