package notify

import (
	"net"
	"net/mail"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dcvd/dcvd/internal/section"
)

// keySpec describes one key of a [notify.NAME] section. A secret key k may
// also be set as k_file (a file holding it, such as one in
// $CREDENTIALS_DIRECTORY) or k_env (an environment variable holding it).
type keySpec struct {
	secret bool
	help   string
}

// commonKeys belong to every channel type.
var commonKeys = map[string]keySpec{
	"type":    {help: "webhook, smtp, wecom, dingtalk or feishu"},
	"level":   {help: "error, renewal or all (default error)"},
	"timeout": {help: "bound on one delivery attempt (default 15s)"},
}

// typeKeys are the keys of each channel type.
var typeKeys = map[string]map[string]keySpec{
	"webhook": {
		"url":    {help: "where the JSON is POSTed"},
		"secret": {secret: true, help: "HMAC key of the X-Dcvd-Signature header"},
	},
	"smtp": {
		"server":   {help: "host:port of the submission server"},
		"starttls": {help: "upgrade with STARTTLS (default true; port 465 is implicit TLS)"},
		"username": {help: "AUTH PLAIN user"},
		"password": {secret: true, help: "AUTH PLAIN password"},
		"from":     {help: "sender address"},
		"to":       {help: "list of recipient addresses"},
		"helo":     {help: "name sent in EHLO (default localhost)"},
	},
	"wecom": {
		"url": {help: "robot endpoint (default " + WeComURL + "), or the whole webhook URL with its key"},
		"key": {secret: true, help: "the robot's key"},
	},
	"dingtalk": {
		"url":          {help: "robot endpoint (default " + DingTalkURL + "), or the whole webhook URL with its access_token"},
		"access_token": {secret: true, help: "the robot's access_token"},
		"secret":       {secret: true, help: "the robot's signing secret (SEC…)"},
	},
	"feishu": {
		"url":     {help: "hook base (default " + FeishuURL + "), or the whole hook URL"},
		"hook_id": {secret: true, help: "the bot's hook ID (last segment of its webhook URL)"},
		"secret":  {secret: true, help: "the bot's signing secret"},
	},
}

// Types lists the channel types Parse knows.
func Types() []string {
	t := make([]string, 0, len(typeKeys))
	for k := range typeKeys {
		t = append(t, k)
	}
	sort.Strings(t)
	return t
}

// sectionParser reads one section, collecting every problem in s.
type sectionParser struct {
	s       *section.Section // notify.NAME
	m       map[string]any   // the section's keys, for checks of their own
	secrets []string
}

// Parse configures the channel of the [notify.NAME] section called name
// from its decoded TOML keys. It reports every problem, each as an error
// "notify.NAME.key: reason"; the warnings, in the same form, say what is
// allowed but unwise (a secret written in the config file, a token sent
// over plain http). Secrets never appear in either. A nil lookupEnv or
// readFile means os.LookupEnv or os.ReadFile. On error the Configured is
// the zero value.
//
// Every error is a *section.Error whose Key is the full key path
// ("notify.NAME.key") and whose Reason is the rest of the message, so
// that a caller can re-file it with errors.As instead of splitting the
// message at ": ".
func Parse(name string, sec map[string]any, lookupEnv func(string) (string, bool), readFile func(string) ([]byte, error)) (Configured, []string, []error) {
	p := &sectionParser{
		s: section.New("notify."+name, sec, section.Options{LookupEnv: lookupEnv, ReadFile: readFile}),
		m: sec,
	}
	if name == "" || strings.ContainsAny(name, " \t\r\n.") {
		p.s.Fail("", "the section name must be a single word")
		return Configured{}, p.s.Warnings(), p.s.Errors()
	}

	typ, isStr := sec["type"].(string)
	keys, known := typeKeys[typ]
	switch {
	case sec["type"] == nil:
		p.s.Fail("type", "missing: say which kind of channel this is (one of %s)", strings.Join(Types(), ", "))
	case !isStr || !known:
		p.s.Fail("type", "unknown channel type %v (known: %s)", sec["type"], strings.Join(Types(), ", "))
	}
	if p.s.Failed() {
		return Configured{}, p.s.Warnings(), p.s.Errors()
	}
	p.checkKeys(typ, keys)

	level := LevelError
	if v, ok := p.s.String("level"); ok {
		l, err := ParseLevel(v)
		if err != nil {
			p.s.Fail("level", "%v", err)
		} else {
			level = l
		}
	}
	timeout := DefaultTimeout
	if v, ok := p.s.String("timeout"); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > 10*time.Minute {
			p.s.Fail("timeout", "must be a duration between 1s and 10m such as \"15s\", got %q", v)
		} else {
			timeout = d
		}
	}

	var ch Channel
	switch typ {
	case "webhook":
		ch = p.webhook(name, timeout)
	case "smtp":
		ch = p.smtp(name, timeout)
	case "wecom":
		ch = p.wecom(name, timeout)
	case "dingtalk":
		ch = p.dingtalk(name, timeout)
	case "feishu":
		ch = p.feishu(name, timeout)
	}
	warns := p.s.Warnings()
	sort.Strings(warns)
	if p.s.Failed() || ch == nil {
		return Configured{}, warns, p.s.Errors()
	}
	return Configured{Channel: ch, Level: level}, warns, nil
}

// checkKeys refuses keys the type does not have, and keys of a secret set
// more than one way.
func (p *sectionParser) checkKeys(typ string, keys map[string]keySpec) {
	p.s.Unknown(func(k string) bool {
		if _, ok := commonKeys[k]; ok {
			return true
		}
		if _, ok := keys[k]; ok {
			return true
		}
		base, suffixed := strings.CutSuffix(k, section.FileSuffix)
		if !suffixed {
			base, suffixed = strings.CutSuffix(k, section.EnvSuffix)
		}
		spec, ok := keys[base]
		return suffixed && ok && spec.secret
	}, " for type "+typ+" (its keys: "+strings.Join(knownKeys(keys), ", ")+")")
}

// knownKeys lists every accepted key of a type, the secret variants
// included.
func knownKeys(keys map[string]keySpec) []string {
	var out []string
	for k := range commonKeys {
		out = append(out, k)
	}
	for k, spec := range keys {
		out = append(out, k)
		if spec.secret {
			out = append(out, k+"_file", k+"_env")
		}
	}
	sort.Strings(out)
	return out
}

// secret reads a secret from exactly one of key, key_file and key_env
// (see section.Section.Secret), refusing one of several lines, which no
// channel's token or password has. It returns "" when none is set
// (callers decide whether it is required) or when reading failed
// (reported). No message quotes the value.
func (p *sectionParser) secret(key string) (value string, set bool) {
	value, used, set := p.s.Secret(key)
	if value == "" {
		return "", set
	}
	if used == key {
		p.s.WarnInlineSecret(key)
	}
	if strings.ContainsAny(value, "\r\n") {
		p.s.Fail(used, "the secret spans several lines")
		return "", true
	}
	p.secrets = append(p.secrets, value)
	return value, true
}

// httpURL reads an http(s) URL key. A missing key yields def (which may be
// empty). Messages quote only scheme and host, since the rest may hold a
// token.
func (p *sectionParser) httpURL(key, def string) *url.URL {
	raw, ok := p.s.String(key)
	if !ok {
		if _, present := p.m[key]; present || def == "" {
			return nil
		}
		raw = def
	}
	if section.HasSpaceOrControl(raw) {
		// url.Parse takes a space in the path, and every delivery would
		// then fail. Not quoted: the URL may hold a token.
		p.s.Fail(key, "contains a space or a control character: percent-encode it (a space is %%20)")
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.Opaque != "" {
		p.s.Fail(key, "must be an absolute http:// or https:// URL")
		return nil
	}
	if u.Fragment != "" {
		p.s.Fail(key, "must not have a #fragment")
		return nil
	}
	if u.Scheme == "http" && !section.IsLoopback(u.Hostname()) {
		p.s.Warn(key, "plain http to %s: notifications (and any token in the URL) travel unencrypted", u.Host)
	}
	return u
}

// urlSecrets are the parts of a webhook URL that may be a token: query
// values and path segments long enough to be one.
func urlSecrets(u *url.URL) []string {
	var out []string
	for _, vs := range u.Query() {
		for _, v := range vs {
			if len(v) >= 4 {
				out = append(out, v)
			}
		}
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if len(seg) >= 8 {
			out = append(out, seg)
		}
	}
	return out
}

func (p *sectionParser) target(name, typ string, timeout time.Duration) httpTarget {
	return httpTarget{name: name, typ: typ, client: newHTTPClient(timeout), red: newRedactor(p.secrets...)}
}

func (p *sectionParser) webhook(name string, timeout time.Duration) Channel {
	u := p.httpURL("url", "")
	if u == nil && p.m["url"] == nil {
		p.s.Fail("url", "required: the URL to POST events to")
	}
	secret, _ := p.secret("secret")
	if u != nil && u.User != nil {
		p.secrets = append(p.secrets, u.User.String())
		if pw, ok := u.User.Password(); ok {
			p.secrets = append(p.secrets, pw)
		}
		p.s.Warn("url", "holds credentials in the config file")
	}
	if u != nil {
		// Services such as Slack put the token in the path, others in the
		// query: neither may show in an error, even one quoting a reply.
		p.secrets = append(p.secrets, urlSecrets(u)...)
	}
	if u == nil || p.s.Failed() {
		return nil
	}
	return &webhook{httpTarget: p.target(name, "webhook", timeout), url: u, secret: secret, now: time.Now}
}

// tokenInURL merges a robot's token given on its own (key, key_file,
// key_env) with one already in the URL's query parameter param, so that
// both the endpoint plus key and the pasted webhook URL work.
func (p *sectionParser) tokenInURL(u *url.URL, urlSet bool, key, param string) {
	token, tokenSet := p.secret(key)
	inURL := u.Query().Get(param)
	switch {
	case tokenSet && inURL != "":
		p.s.Fail(key, "set more than once (also in %s.url): keep one", p.s.Path())
	case tokenSet && token != "":
		q := u.Query()
		q.Set(param, token)
		u.RawQuery = q.Encode()
	case inURL != "":
		p.secrets = append(p.secrets, inURL)
		p.s.Warn("url", "holds the robot's %s in the config file; prefer url without it and %s_file or %s_env", param, key, key)
	case !tokenSet:
		how := "set " + key + "_file, " + key + "_env or " + key
		if urlSet {
			how += " (or put " + param + "= in url)"
		}
		p.s.Fail(key, "required: %s", how)
	}
}

func (p *sectionParser) wecom(name string, timeout time.Duration) Channel {
	_, urlSet := p.m["url"]
	u := p.httpURL("url", WeComURL)
	if u == nil {
		p.secret("key") // report its problems too
		return nil
	}
	p.tokenInURL(u, urlSet, "key", "key")
	if p.s.Failed() {
		return nil
	}
	return &wecom{httpTarget: p.target(name, "wecom", timeout), url: u}
}

func (p *sectionParser) dingtalk(name string, timeout time.Duration) Channel {
	_, urlSet := p.m["url"]
	u := p.httpURL("url", DingTalkURL)
	secret, _ := p.secret("secret")
	if u == nil {
		p.secret("access_token")
		return nil
	}
	p.tokenInURL(u, urlSet, "access_token", "access_token")
	q := u.Query()
	if q.Has("timestamp") || q.Has("sign") {
		p.s.Fail("url", "must not hold timestamp or sign: they are computed for each message from secret")
	}
	if p.s.Failed() {
		return nil
	}
	return &dingtalk{httpTarget: p.target(name, "dingtalk", timeout), url: u, secret: secret, now: time.Now}
}

const hookIDChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"

func (p *sectionParser) feishu(name string, timeout time.Duration) Channel {
	_, urlSet := p.m["url"]
	secret, _ := p.secret("secret")
	hook, hookSet := p.secret("hook_id")
	u := p.httpURL("url", FeishuURL)
	if u == nil {
		return nil
	}
	// The hook ID is the path's last segment, after /hook/.
	_, after, hasHook := strings.Cut(u.Path, "/hook/")
	hasHook = hasHook && strings.Trim(after, "/") != ""
	switch {
	case hookSet && hasHook:
		p.s.Fail("hook_id", "set more than once (url already ends in a hook ID): keep one")
	case hookSet && hook != "" && strings.Trim(hook, hookIDChars) != "":
		p.s.Fail("hook_id", "must hold only letters, digits, '-' and '_' (the last segment of the bot's webhook URL)")
	case hookSet && hook != "":
		u.Path = strings.TrimRight(u.Path, "/") + "/" + hook
		u.RawPath = ""
	case hookSet:
		// Reading it failed; reported.
	case urlSet && strings.Trim(u.Path, "/") != "" && !strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/hook"):
		// A full hook URL: its last segment is the secret.
		seg := u.Path[strings.LastIndexByte(strings.TrimRight(u.Path, "/"), '/')+1:]
		if seg = strings.Trim(seg, "/"); seg != "" {
			p.secrets = append(p.secrets, seg)
		}
		p.s.Warn("url", "holds the bot's hook ID in the config file; prefer hook_id_file or hook_id_env")
	default:
		how := "set hook_id_file, hook_id_env or hook_id"
		if urlSet {
			how += " (or the whole hook URL in url)"
		}
		p.s.Fail("hook_id", "required: %s", how)
	}
	if u.RawQuery != "" {
		p.s.Fail("url", "must not have a query")
	}
	if p.s.Failed() {
		return nil
	}
	return &feishu{httpTarget: p.target(name, "feishu", timeout), url: u, secret: secret, now: time.Now}
}

func (p *sectionParser) smtp(name string, timeout time.Duration) Channel {
	c := &smtpChannel{name: name, timeout: timeout, now: time.Now}

	server, ok := p.s.String("server")
	port := ""
	switch {
	case !ok && p.m["server"] == nil:
		p.s.Fail("server", "required: the submission server as host:port (such as smtp.example.com:587)")
	case ok:
		host, pt, err := net.SplitHostPort(server)
		n, perr := strconv.Atoi(pt)
		if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			p.s.Fail("server", "must be host:port, got %q", server)
		} else {
			c.addr, c.host, port = server, host, pt
		}
	}

	c.security = smtpSTARTTLS
	if v, present := p.m["starttls"]; present {
		b, isBool := v.(bool)
		switch {
		case !isBool:
			p.s.Fail("starttls", "must be true or false")
		case port == "465":
			p.s.Fail("starttls", "does not apply to port 465, which speaks implicit TLS: remove it")
		case !b:
			c.security = smtpPlain
		}
	} else if port == "465" {
		c.security = smtpImplicitTLS
	}

	if v, ok := p.s.String("username"); ok {
		if v == "" || strings.ContainsAny(v, "\r\n\x00") {
			p.s.Fail("username", "must be a non-empty single-line string")
		} else {
			c.username = v
		}
	}
	pw, pwSet := p.secret("password")
	switch {
	case c.username != "" && !pwSet:
		p.s.Fail("password", "required with username: set password_file, password_env or password")
	case c.username == "" && pwSet && p.m["username"] == nil:
		p.s.Fail("password", "set without username")
	}
	c.password = pw
	if c.username != "" && c.security == smtpPlain && c.host != "" && !section.IsLoopback(c.host) {
		p.s.Fail("starttls", "false would send the password unencrypted to %s; only a relay on this machine may go without TLS", c.host)
	}

	if v, ok := p.s.String("from"); ok {
		a, err := mail.ParseAddress(v)
		if err != nil {
			p.s.Fail("from", "not an e-mail address: %v", err)
		} else {
			c.from = a
		}
	} else if p.m["from"] == nil {
		p.s.Fail("from", "required: the sender address")
	}

	switch v := p.m["to"].(type) {
	case nil:
		p.s.Fail("to", "required: a list of recipient addresses")
	case []any, []string:
		list, isStrings := v.([]string)
		ok := true
		if !isStrings {
			for _, e := range v.([]any) {
				s, isStr := e.(string)
				if !isStr {
					ok = false
					break
				}
				list = append(list, s)
			}
		}
		switch {
		case len(list) == 0 && ok:
			p.s.Fail("to", "must list at least one address")
		case !ok:
			p.s.Fail("to", "must be a list of strings")
			list = nil
		}
		for _, s := range list {
			a, err := mail.ParseAddress(s)
			if err != nil {
				p.s.Fail("to", "%q is not an e-mail address: %v", s, err)
				continue
			}
			c.to = append(c.to, a)
		}
	default:
		p.s.Fail("to", "must be a list of addresses, such as [\"ops@example.com\"]")
	}

	if v, ok := p.s.String("helo"); ok {
		if v == "" || strings.ContainsAny(v, " \t\r\n") {
			p.s.Fail("helo", "must be a host name")
		} else {
			c.helo = v
		}
	}
	c.red = newRedactor(p.secrets...)
	if p.s.Failed() {
		return nil
	}
	return c
}
