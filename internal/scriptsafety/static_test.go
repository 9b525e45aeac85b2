package scriptsafety

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// scripts are the server scripts, relative to the repository root. The
// library is among them: the kills live there.
var scripts = []string{
	"scripts/dns-servers.sh",
	"scripts/nginx.sh",
	"scripts/postgres.sh",
	"scripts/lib-servers.sh",
}

// repoRoot returns the repository's top directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append([]string{"go.mod"}, scripts...) {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("not the repository root: %v", err)
		}
	}
	return root
}

// line is one line of a script with its comment cut off, and the shell
// function it is in ("" at the top level).
type line struct {
	file string
	num  int
	fn   string
	text string
}

func (l line) String() string {
	return fmt.Sprintf("%s:%d (in %s): %s", l.file, l.num, cmp(l.fn, "top level"), strings.TrimSpace(l.text))
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

var (
	// commentRE is a comment: a # at the start or after a blank. It
	// leaves ${#a[@]}, $# and '#!/bin/sh' alone; a # inside a quoted
	// string after a blank would be cut too, which only hides text from
	// the rules, and no script has one on a line that matters.
	commentRE = regexp.MustCompile(`(^|\s)#.*$`)
	funcRE    = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)\(\) \{`)
)

// parse splits a script into lines, each with the function it is in.
// Functions are what the scripts write: "name() {" at the start of a line,
// "}" alone at the start of a line to end it.
func parse(file, text string) []line {
	var out []line
	fn := ""
	for i, raw := range strings.Split(text, "\n") {
		if m := funcRE.FindStringSubmatch(raw); m != nil {
			fn = m[1]
		}
		out = append(out, line{file: file, num: i + 1, fn: fn, text: commentRE.ReplaceAllString(raw, "")})
		if strings.HasPrefix(raw, "}") {
			fn = ""
		}
	}
	return out
}

// forbidden are the ways to stop, restart or signal a process the scripts
// did not start; none may appear in them at all.
var forbidden = []struct {
	re  *regexp.Regexp
	why string
}{
	{regexp.MustCompile(`\bsystemctl\b.*\b(stop|restart|try-restart|reload-or-restart|try-reload-or-restart|reload|kill|mask|isolate)\b`), "systemctl that stops, restarts, reloads or signals a unit"},
	{regexp.MustCompile(`\bsystemctl\b.*--now\b`), "systemctl --now (disable --now stops the unit)"},
	{regexp.MustCompile(`\bservice\s+\S+\s+(stop|restart|reload|force-reload)\b`), "service … stop/restart"},
	{regexp.MustCompile(`/etc/init\.d/\S+\s+(stop|restart|reload|force-reload)\b`), "an init script's stop/restart"},
	{regexp.MustCompile(`\b(invoke-rc\.d|deb-systemd-invoke|start-stop-daemon|pg_ctlcluster|rndc|pdns_control)\b`), "a tool that acts on the distro's services"},
	{regexp.MustCompile(`\b(pkill|killall|pgrep)\b`), "killing or finding processes by name"},
	{regexp.MustCompile(`\bfuser\b.*\s-\w*k`), "fuser -k (kills whatever holds a port or file)"},
}

var (
	killRE = regexp.MustCompile(`\bkill\b`)
	// The only kills allowed, in lib-servers.sh: stop_pid's on the pid it
	// read from our pid file and checked (program name in /proc), and
	// alive's signal-0 probe of a pid file's pid.
	stopPidKillRE = regexp.MustCompile(`\bkill\s+(-0\s+|-9\s+)?"\$pid"`)
	aliveKillRE   = regexp.MustCompile(`\bkill\s+-0\s+"\$\(cat "\$1"\)"`)
	// stop_pid is called on pid files under DIR only (alive's signal 0
	// is only a probe).
	pidCallRE    = regexp.MustCompile(`\b(stop_pid)\s+("[^"]*"|\S+)`)
	ownPidfileRE = regexp.MustCompile(`^"\$DIR/[A-Za-z0-9._-]+\.pid"$`)
	// A pid file of ours is written from $! (the process the script just
	// started) or from the postmaster.pid of our own data directory.
	pidWriteRE  = regexp.MustCompile(`>\s*"(\$DIR/[A-Za-z0-9._-]+\.pid)"`)
	okPidWrites = []*regexp.Regexp{
		regexp.MustCompile(`^\s*echo \$! >"\$DIR/[A-Za-z0-9._-]+\.pid"\s*$`),
		regexp.MustCompile(`^\s*head -n 1 "\$DIR/data/postmaster\.pid" >"\$DIR/postgres\.pid"\s*$`),
	}
	nginxSignalRE = regexp.MustCompile(`\s-s\s+(stop|quit|reload|reopen)\b`)
	pgCtlStopRE   = regexp.MustCompile(`\bpg_ctl"?\s+(-.*\s)?stop\b`)
	systemctlRE   = regexp.MustCompile(`\bsystemctl\b`)
	// The one systemctl change allowed: turning off the boot start of a
	// unit that a package installed just now enabled, when it is not
	// running; without --now, which forbidden already refuses.
	systemctlOK = regexp.MustCompile(`^\s*(systemctl is-active --quiet "\$unit" && continue|systemctl is-enabled --quiet "\$unit" 2>/dev/null \|\| continue|systemctl disable --quiet "\$unit" >/dev/null 2>&1 \|\| true|command -v systemctl >/dev/null 2>&1 && \[ -d /run/systemd/system \] \|\| return 0)\s*$`)
)

// violations returns what the scripts (file name → text) do that could
// touch a process they did not start.
func violations(files map[string]string) []string {
	var bad []string
	report := func(l line, why string) { bad = append(bad, fmt.Sprintf("%v: %s", l, why)) }
	var all []line
	for file, text := range files {
		all = append(all, parse(file, text)...)
	}
	for _, l := range all {
		for _, f := range forbidden {
			if f.re.MatchString(l.text) {
				report(l, f.why)
			}
		}
		if killRE.MatchString(l.text) {
			switch {
			case l.file == "scripts/lib-servers.sh" && l.fn == "stop_pid" && stopPidKillRE.MatchString(l.text):
			case l.file == "scripts/lib-servers.sh" && l.fn == "alive" && aliveKillRE.MatchString(l.text):
			default:
				report(l, `kill outside stop_pid/alive of lib-servers.sh, or not on "$pid" read from our pid file`)
			}
		}
		if m := pidCallRE.FindStringSubmatch(l.text); m != nil && l.fn != m[1] && !ownPidfileRE.MatchString(m[2]) {
			report(l, m[1]+` on something else than a pid file "$DIR/NAME.pid" of ours`)
		}
		if pidWriteRE.MatchString(l.text) {
			ok := false
			for _, re := range okPidWrites {
				ok = ok || re.MatchString(l.text)
			}
			if !ok {
				report(l, "a pid file of ours written from something else than $! or our own postmaster.pid")
			}
		}
		if nginxSignalRE.MatchString(l.text) && !strings.Contains(l.text, "-c $n/nginx.conf") {
			report(l, "nginx -s without this instance's configuration (-c $n/nginx.conf) signals the distro's nginx")
		}
		if pgCtlStopRE.MatchString(l.text) && !strings.Contains(l.text, `-D "$DIR/data"`) {
			report(l, `pg_ctl stop on another data directory than "$DIR/data"`)
		}
		if systemctlRE.MatchString(l.text) && !(l.file == "scripts/lib-servers.sh" && l.fn == "disable_new_units" && systemctlOK.MatchString(l.text)) {
			report(l, "systemctl outside disable_new_units' guarded disable of a unit the install just added")
		}
	}
	// stop_pid signals only what it read from the pid file, and only if
	// that pid is still the program we started (a reused pid is left
	// alone); disable_new_units never touches a running unit.
	if _, ok := files["scripts/lib-servers.sh"]; !ok {
		return bad
	}
	body := map[string]string{}
	for _, l := range all {
		if l.file == "scripts/lib-servers.sh" && l.fn != "" {
			body[l.fn] += l.text + "\n"
		}
	}
	for fn, must := range map[string][]string{
		"stop_pid":          {`pid=$(cat "$pidfile")`, `"$(cat "/proc/$pid/comm" 2>/dev/null)" = "$prog"`},
		"disable_new_units": {`systemctl is-active --quiet "$unit" && continue`},
	} {
		if fn == "disable_new_units" && body[fn] == "" {
			continue // no unit is ever disabled: nothing to guard
		}
		for _, s := range must {
			if !strings.Contains(body[fn], s) {
				bad = append(bad, fmt.Sprintf("scripts/lib-servers.sh: %s lost its guard %s", cmp(fn, "?"), s))
			}
		}
	}
	return bad
}

// TestScriptsTouchOnlyTheirOwnProcesses reads the server scripts: nothing
// in them may stop, disable-and-stop, restart or signal a process they did
// not start, and every kill is on a pid from a pid file of ours.
func TestScriptsTouchOnlyTheirOwnProcesses(t *testing.T) {
	root := repoRoot(t)
	files := map[string]string{}
	for _, f := range scripts {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = string(b)
	}
	for _, v := range violations(files) {
		t.Error(v)
	}
	// The rules above would pass on scripts that lost their stop; each
	// script must still stop its own servers through stop_pid.
	for f, want := range map[string][]string{
		"scripts/dns-servers.sh": {`stop_pid "$DIR/bind.pid" named`, `stop_pid "$DIR/pdns.pid" pdns_server`},
		"scripts/nginx.sh":       {`stop_pid "$DIR/nginx.pid" nginx`},
		"scripts/postgres.sh":    {`stop_pid "$DIR/postgres.pid" postgres`},
	} {
		for _, w := range want {
			if !strings.Contains(files[f], w) {
				t.Errorf("%s: no %s", f, w)
			}
		}
	}
}

// TestViolationsCatch proves the rules catch what the scripts did before
// issue 14 and the usual variants, so that a pass above means something.
func TestViolationsCatch(t *testing.T) {
	for _, bad := range []string{
		`      systemctl disable --now "$svc" >/dev/null 2>&1 || true`,
		`  systemctl stop nginx`,
		`  systemctl restart named`,
		`        service "$svc" stop >/dev/null 2>&1 || true`,
		`    service nginx stop >/dev/null 2>&1 || true`,
		`  /etc/init.d/nginx stop`,
		`  invoke-rc.d named stop`,
		`    kill "$pid" 2>/dev/null || true`,
		`  pkill -x nginx`,
		`  killall named`,
		`  fuser -k 80/tcp`,
		`  ss -Hltnp 'sport = :80' | grep -o 'pid=[0-9]*' | cut -d= -f2 | xargs kill`,
		`  nginx -s stop`,
		`  pg_ctlcluster 15 main stop`,
		`  "$bin/pg_ctl" -D /var/lib/postgresql/15/main -m fast stop`,
		`  stop_pid /run/nginx.pid nginx`,
		`  echo "$pid" >"$DIR/nginx.pid"`,
		`  systemctl disable nginx`,
		`  rndc stop`,
	} {
		text := "#!/usr/bin/env bash\nf() {\n" + bad + "\n}\n"
		if v := violations(map[string]string{"scripts/nginx.sh": text}); len(v) == 0 {
			t.Errorf("not caught: %s", strings.TrimSpace(bad))
		}
	}
	ok := "#!/usr/bin/env bash\n# systemctl disable --now nginx in a comment is fine\ncmd_stop() {\n  stop_pid \"$DIR/nginx.pid\" nginx\n}\n"
	if v := violations(map[string]string{"scripts/nginx.sh": ok}); len(v) != 0 {
		t.Errorf("false alarm: %v", v)
	}
}
