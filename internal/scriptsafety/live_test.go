package scriptsafety

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The decoy is this test binary started again through a symlink named like
// a distro server, so that /proc/PID/comm, ps and ss show "nginx" or
// "named": the name the scripts of old picked their victims by. These
// variables tell TestMain to be a decoy instead of running the tests.
const (
	decoyEnv        = "DCVD_SCRIPTSAFETY_DECOY"   // the name it poses as
	decoyListenEnv  = "DCVD_SCRIPTSAFETY_LISTEN"  // "tcp ADDR,udp ADDR"
	decoySignalsEnv = "DCVD_SCRIPTSAFETY_SIGNALS" // every signal caught goes here
	decoyReadyEnv   = "DCVD_SCRIPTSAFETY_READY"   // "ok" once listening, or why not
)

// caught are the signals a decoy records. SIGKILL and SIGSTOP cannot be
// caught: a killed decoy is dead and a stopped one is in state T, and the
// test checks both.
var caught = []os.Signal{
	syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGALRM,
	syscall.SIGABRT, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU,
	syscall.SIGCONT,
}

func TestMain(m *testing.M) {
	if name := os.Getenv(decoyEnv); name != "" {
		os.Exit(runDecoy(name))
	}
	os.Exit(m.Run())
}

// runDecoy listens where it is told, answers every TCP connection and UDP
// packet with "decoy NAME", records every signal and never exits on one:
// a decoy that was signalled is still there to be asked.
func runDecoy(name string) int {
	sigFile, ready := os.Getenv(decoySignalsEnv), os.Getenv(decoyReadyEnv)
	say := func(msg string) {
		_ = os.WriteFile(ready+".tmp", []byte(msg), 0o644)
		_ = os.Rename(ready+".tmp", ready)
	}
	// Before the listeners: a signal at any time counts.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, caught...)
	go func() {
		for s := range sigs {
			f, err := os.OpenFile(sigFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err == nil {
				fmt.Fprintf(f, "%s\n", s)
				f.Close()
			}
		}
	}()
	reply := []byte("decoy " + name + "\n")
	for spec := range strings.SplitSeq(os.Getenv(decoyListenEnv), ",") {
		network, addr, _ := strings.Cut(spec, " ")
		switch network {
		case "tcp":
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				say("busy: " + err.Error())
				return 3
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						continue
					}
					_, _ = c.Write(reply)
					c.Close()
				}
			}()
		case "udp":
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				say("busy: " + err.Error())
				return 3
			}
			go func() {
				buf := make([]byte, 512)
				for {
					_, from, err := pc.ReadFrom(buf)
					if err == nil {
						_, _ = pc.WriteTo(reply, from)
					}
				}
			}()
		default:
			say("bad listen spec " + spec)
			return 2
		}
	}
	say("ok")
	select {}
}

// watched is a process that must come through the scripts untouched:
// a decoy of ours, or a real server that already held a standard port.
type watched struct {
	name    string   // what it is called (comm)
	pid     int      //
	start   string   // start time in /proc/PID/stat: the same pid reused is another process
	ports   []int    // where it listens
	listen  []string // decoys only: "tcp ADDR" / "udp ADDR" to ask
	sigFile string   // decoys only
	real    bool
	told    bool // its signals are reported once, not after every step
}

func (w *watched) String() string {
	kind := "decoy"
	if w.real {
		kind = "real server already running here"
	}
	return fmt.Sprintf("%s (pid %d, %s, port %v)", w.name, w.pid, kind, w.ports)
}

// procStat returns the state and start time of a process, from
// /proc/PID/stat (fields 3 and 22; the name in field 2 may hold blanks).
func procStat(pid int) (state, start string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", "", err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return "", "", fmt.Errorf("short /proc/%d/stat: %q", pid, s)
	}
	return f[0], f[19], nil
}

// listeners returns the pids ss shows listening on port (TCP or UDP).
func listeners(t *testing.T, ss string, port int) []int {
	t.Helper()
	out, err := exec.Command(ss, "-Hltnup", fmt.Sprintf("sport = :%d", port)).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, out)
	}
	var pids []int
	for _, m := range pidRE.FindAllStringSubmatch(string(out), -1) {
		p, _ := strconv.Atoi(m[1])
		if !slices.Contains(pids, p) {
			pids = append(pids, p)
		}
	}
	return pids
}

var pidRE = regexp.MustCompile(`pid=([0-9]+)`)

// check fails the test unless w is the same process as before, running,
// listening on its ports, and (a decoy) answering and never signalled.
func (w *watched) check(t *testing.T, ss, after string) {
	t.Helper()
	state, start, err := procStat(w.pid)
	switch {
	case err != nil:
		t.Errorf("after %s: %v is gone: %v", after, w, err)
		return
	case start != w.start:
		t.Errorf("after %s: %v is gone (pid %d now belongs to another process)", after, w, w.pid)
		return
	case strings.ContainsAny(state, "TtZX"):
		t.Errorf("after %s: %v is stopped or dead (state %s)", after, w, state)
	}
	for _, p := range w.ports {
		if !slices.Contains(listeners(t, ss, p), w.pid) {
			t.Errorf("after %s: %v no longer listens on port %d", after, w, p)
		}
	}
	if w.real {
		return
	}
	if b, err := os.ReadFile(w.sigFile); err == nil && len(b) > 0 && !w.told {
		w.told = true
		t.Errorf("after %s: %v was signalled: %s", after, w, strings.Join(strings.Fields(string(b)), ", "))
	}
	for _, spec := range w.listen {
		network, addr, _ := strings.Cut(spec, " ")
		c, err := net.DialTimeout(network, addr, 2*time.Second)
		if err != nil {
			t.Errorf("after %s: %v does not answer on %s: %v", after, w, spec, err)
			continue
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if network == "udp" {
			_, _ = c.Write([]byte("?"))
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if want := "decoy " + w.name + "\n"; got != want {
			t.Errorf("after %s: %s %s answered %q (%v), want %q", after, w, spec, got, err, want)
		}
	}
}

// startDecoy starts a decoy named name listening on listen. If a port is
// taken already, the decoy cannot be there: whoever holds the port (a real
// server of this machine) is returned to be watched instead, never stopped.
func startDecoy(t *testing.T, ss, dir, name string, port int, listen []string) []*watched {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(bin, name)
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	sigFile := filepath.Join(dir, name+".signals")
	ready := filepath.Join(dir, name+".ready")
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(link)
	cmd.Env = append(os.Environ(), decoyEnv+"="+name, decoyListenEnv+"="+strings.Join(listen, ","),
		decoySignalsEnv+"="+sigFile, decoyReadyEnv+"="+ready)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session, as a daemon has: no terminal signal of the test's
	// reaches it. Pdeathsig: if this test dies, the decoy leaves the
	// standard ports with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}) // closed once the decoy has exited
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // our own decoy, by its process handle
		<-done
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(ready)
		if err == nil && string(b) == "ok" {
			break
		}
		if err == nil && strings.HasPrefix(string(b), "busy: ") {
			<-done
			return realHolders(t, ss, name, port, strings.TrimPrefix(string(b), "busy: "))
		}
		if err == nil || time.Now().After(deadline) {
			t.Fatalf("decoy %s did not start: %q", name, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	pid := cmd.Process.Pid
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if got := strings.TrimSpace(string(comm)); got != name {
		t.Fatalf("decoy %s shows as %q in /proc/%d/comm: it would not look like the distro's %s", name, got, pid, name)
	}
	if !slices.Contains(listeners(t, ss, port), pid) {
		t.Fatalf("ss does not show decoy %s (pid %d) on port %d", name, pid, port)
	}
	_, start, err := procStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	return []*watched{{name: name, pid: pid, start: start, ports: []int{port}, listen: listen, sigFile: sigFile}}
}

// realHolders returns the processes that hold port, found by ss.
func realHolders(t *testing.T, ss, name string, port int, why string) []*watched {
	t.Helper()
	pids := listeners(t, ss, port)
	if len(pids) == 0 {
		t.Fatalf("decoy %s could not listen on port %d (%s), and ss shows no process there", name, port, why)
	}
	var out []*watched
	for _, pid := range pids {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		_, start, err := procStat(pid)
		if err != nil {
			t.Fatal(err)
		}
		w := &watched{name: strings.TrimSpace(string(comm)), pid: pid, start: start, ports: []int{port}, real: true}
		t.Logf("port %d is taken (%s): watching the real %v instead of a decoy %s", port, why, w, name)
		out = append(out, w)
	}
	return out
}

// need returns the path of a program; without it the test skips, or fails
// when DCVD_TEST_REQUIRE_SERVERS is set (as in CI), where a skip would
// hide that the check never ran.
func need(t *testing.T, name, how string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(d, name); isExec(p) {
			return p
		}
	}
	if os.Getenv("DCVD_TEST_REQUIRE_SERVERS") != "" {
		t.Fatalf("%s is required (DCVD_TEST_REQUIRE_SERVERS is set): %s", name, how)
	}
	t.Skipf("%s not found (%s)", name, how)
	return ""
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// run runs a server script and fails the test with its output when it
// fails.
func run(t *testing.T, root string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", args...)
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("bash %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
}

// envPortRE finds the loopback addresses a start wrote to DIR/env.
var envPortRE = regexp.MustCompile(`127\.0\.0\.1:([0-9]+)`)

// TestScriptsLeaveForeignServersAlone runs every server script's install,
// start and stop next to decoys of the distro's servers on the standard
// ports, and checks that the decoys come through untouched.
func TestScriptsLeaveForeignServersAlone(t *testing.T) {
	root := repoRoot(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: the decoys of the distro's servers listen on the standard ports 53, 80 and 5432 (run as root, as .ci/run does)")
	}
	ss := need(t, "ss", "apt-get install iproute2")
	need(t, "bash", "apt-get install bash")

	dir := t.TempDir()
	var all []*watched
	add := func(ws []*watched) {
		for _, w := range ws {
			if !slices.ContainsFunc(all, func(o *watched) bool { return o.pid == w.pid }) {
				all = append(all, w)
			}
		}
	}
	// Two DNS servers cannot share 127.0.0.1:53; the whole of 127/8 is
	// loopback, so PowerDNS's decoy takes 127.0.0.2.
	add(startDecoy(t, ss, dir, "named", 53, []string{"tcp 127.0.0.1:53", "udp 127.0.0.1:53"}))
	add(startDecoy(t, ss, dir, "pdns_server", 53, []string{"tcp 127.0.0.2:53", "udp 127.0.0.2:53"}))
	add(startDecoy(t, ss, dir, "nginx", 80, []string{"tcp 127.0.0.1:80"}))
	add(startDecoy(t, ss, dir, "postgres", 5432, []string{"tcp 127.0.0.1:5432"}))
	checkAll := func(t *testing.T, after string) {
		t.Helper()
		for _, w := range all {
			w.check(t, ss, after)
		}
	}
	checkAll(t, "the decoys started")

	for _, s := range []struct {
		script   string
		programs []string
		pidFiles []string
	}{
		{"scripts/dns-servers.sh", []string{"named", "pdns_server"}, []string{"bind.pid", "pdns.pid"}},
		{"scripts/nginx.sh", []string{"nginx"}, []string{"nginx.pid"}},
		{"scripts/postgres.sh", []string{"pg_ctl"}, []string{"postgres.pid"}},
	} {
		t.Run(filepath.Base(s.script), func(t *testing.T) {
			// install on a machine that has the packages is the path
			// that stopped and killed the distro's servers; installing
			// them from a test is not this test's business.
			for _, p := range s.programs {
				if p == "pg_ctl" {
					if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl"); len(m) > 0 {
						continue
					}
				}
				need(t, p, "bash "+s.script+" install")
			}
			run(t, root, s.script, "install")
			checkAll(t, s.script+" install")

			// Not t.TempDir: nginx's workers run as nobody and must
			// traverse every parent of DIR, and t.TempDir's are 0700.
			sdir, err := os.MkdirTemp("", "dcvd-scriptsafety-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				// Our own instances, through the script, whatever failed.
				cmd := exec.Command("bash", s.script, "stop", sdir)
				cmd.Dir = root
				_ = cmd.Run()
				os.RemoveAll(sdir)
			})
			run(t, root, s.script, "start", sdir)
			checkAll(t, s.script+" start")
			env, err := os.ReadFile(filepath.Join(sdir, "env"))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range envPortRE.FindAllStringSubmatch(string(env), -1) {
				if m[1] == "53" || m[1] == "80" || m[1] == "5432" {
					t.Errorf("%s start put a test server on a standard port: %s", s.script, m[0])
				}
			}
			run(t, root, s.script, "stop", sdir)
			checkAll(t, s.script+" stop")
			for _, f := range s.pidFiles {
				if _, err := os.Stat(filepath.Join(sdir, f)); err == nil {
					t.Errorf("%s stop left %s: its own server may still run", s.script, f)
				}
			}
		})
	}
	checkAll(t, "all scripts")
}
