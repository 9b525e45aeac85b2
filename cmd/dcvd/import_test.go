package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// importWorld is an account of three services with certificates issued
// (by a first host, whose deploy directories become --adopt-from's
// sources) and a new host's main configuration with an empty conf.d.
type importWorld struct {
	*allWorld
	main, confd, adopt, deployRoot string
}

func newImportWorld(t *testing.T) *importWorld {
	t.Helper()
	w := &importWorld{allWorld: newAllWorld(t, 3)}
	// State directories are made by the installer, not by the commands.
	host := filepath.Join(w.dir, "new-host")
	for _, d := range []string{filepath.Join(w.dir, "state"), filepath.Join(host, "state")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The first host issues the three certificates: the sandbox's list
	// then shows each service's domains and methods.
	if out, errOut, err := reissueAllCmd(t, context.Background(), w.config(nil)); err != nil {
		t.Fatalf("issuing the certificates to import: %v\n%s\n%s", err, out, errOut)
	}
	// The certificates as the old host keeps them, in the three layouts
	// --adopt-from knows, under certbot-like DIR/DOMAIN/ directories.
	w.adopt = filepath.Join(w.dir, "old-host")
	read := func(name, file string) []byte {
		b, err := os.ReadFile(filepath.Join(w.deployDir(name), file))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	layouts := map[string]map[string][]byte{
		"c0": {"fullchain.pem": read("c0", "fullchain.pem"), "privkey.pem": read("c0", "privkey.pem")},
		"c1": {"cert.pem": read("c1", "cert.pem"), "chain.pem": read("c1", "chain.pem"), "privkey.pem": read("c1", "privkey.pem")},
		"c2": {"c2.example.com.crt": read("c2", "fullchain.pem"), "c2.example.com.key": read("c2", "privkey.pem")},
	}
	for name, files := range layouts {
		d := filepath.Join(w.adopt, name+".example.com")
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		for f, b := range files {
			if err := os.WriteFile(filepath.Join(d, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The new host: its own state, no certificate in the main file.
	w.confd = filepath.Join(host, "conf.d")
	w.deployRoot = filepath.Join(host, "ssl")
	keyID, _ := w.sb.AccessKey()
	text := fmt.Sprintf("include = [\"conf.d/*.toml\"]\n\n[api]\nbase_url = %q\naccess_key_id = %q\naccess_key_secret_env = \"DCVD_TEST_ALL_SECRET\"\nca_roots_file = %q\n\n[daemon]\nstate_dir = %q\npoll_interval = \"100ms\"\n",
		w.api, keyID, w.sb.RootPath(), filepath.Join(host, "state"))
	if err := os.MkdirAll(w.confd, 0o755); err != nil {
		t.Fatal(err)
	}
	w.main = filepath.Join(host, "config.toml")
	if err := os.WriteFile(w.main, []byte(text), 0o640); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *importWorld) importCmd(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = runImport(context.Background(), append([]string{"--config", w.main, "--deploy-root", w.deployRoot}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

func (w *importWorld) checkConfig() (string, error) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"check-config", "--config", w.main}, &out, &out)
	return out.String(), err
}

// TestImportThenRunAdoptsWithoutReissue is the onboarding of issue 14:
// import writes a fragment per service, check-config accepts them once the
// web root is filled in, and the first run adopts the copied certificates
// without paying for anything.
func TestImportThenRunAdoptsWithoutReissue(t *testing.T) {
	w := newImportWorld(t)
	charged := len(w.sb.Ledger())

	// The table alone: nothing written.
	out, errOut, err := w.importCmd()
	if err != nil {
		t.Fatalf("import: %v\n%s\n%s", err, out, errOut)
	}
	for _, want := range []string{"SERVICE_ID", "svc-c0", "c0.example.com,www.c0.example.com", "issued", "3 service(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if files, _ := filepath.Glob(filepath.Join(w.confd, "*")); len(files) != 0 {
		t.Fatalf("the table alone wrote %v", files)
	}

	out, errOut, err = w.importCmd("--all", "--adopt-from", w.adopt)
	if err != nil {
		t.Fatalf("import --all: %v\n%s\n%s", err, out, errOut)
	}
	t.Logf("dcvd import --all --adopt-from:\n%s%s", out, errOut)
	for _, name := range []string{"c0", "c1", "c2"} {
		frag := filepath.Join(w.confd, name+".example.com.toml")
		fi, err := os.Stat(frag)
		if err != nil {
			t.Fatalf("no fragment for %s: %v\n%s\n%s", name, err, out, errOut)
		}
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("%s has mode %04o, want 0640", frag, fi.Mode().Perm())
		}
		if !strings.Contains(out, "adopted "+filepath.Join(w.adopt, name+".example.com")) {
			t.Errorf("%s not adopted:\n%s\n%s", name, out, errOut)
		}
		if _, err := os.Stat(filepath.Join(w.deployRoot, name+".example.com", "privkey.pem")); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	// check-config flags the web root left to fill, naming the file.
	if out, err := w.checkConfig(); err == nil || !strings.Contains(out+err.Error(),
		filepath.Join(w.confd, "c0.example.com.toml")+": certificate[c0.example.com].webroot: required by the http/https-validated names") {
		t.Fatalf("check-config on unfilled fragments: %v\n%s", err, out)
	}
	for _, name := range []string{"c0", "c1", "c2"} {
		frag := filepath.Join(w.confd, name+".example.com.toml")
		b, _ := os.ReadFile(frag)
		filled := strings.Replace(string(b), "# webroot = \"/var/www/CHANGE-ME\"",
			fmt.Sprintf("webroot = %q\nhttp_connect = %q", w.webroot, w.web), 1)
		if filled == string(b) {
			t.Fatalf("%s has no webroot placeholder:\n%s", frag, b)
		}
		if err := os.WriteFile(frag, []byte(filled), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := w.checkConfig(); err != nil || !strings.Contains(out, "OK (3 certificate(s)") {
		t.Fatalf("check-config after filling the web roots: %v\n%s", err, out)
	}

	// The first run adopts the three certificates and pays for nothing.
	daemonOut := startDaemon(t, w.main)
	for deadline := time.Now().Add(30 * time.Second); strings.Count(daemonOut.String(), "adopted the certificate found in the deploy directory") < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not adopt the three certificates:\n%s", daemonOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a reissue would have been sent by now
	if n := len(w.sb.Ledger()); n != charged {
		t.Errorf("the ledger went from %d to %d charges:\n%s", charged, n, daemonOut.String())
	}
}

// TestImportRefusals: --dry-run writes nothing, an existing fragment is
// never overwritten without --force, an unknown service is a usage error,
// and a certificate that does not cover the service is not adopted.
func TestImportRefusals(t *testing.T) {
	w := newImportWorld(t)
	charged := len(w.sb.Ledger())

	out, errOut, err := w.importCmd("--service-id", "svc-c1", "--dry-run", "--adopt-from", filepath.Join(w.adopt, "c1.example.com"))
	if err != nil {
		t.Fatalf("--dry-run: %v\n%s\n%s", err, out, errOut)
	}
	t.Logf("dcvd import --dry-run:\n%s%s", out, errOut)
	for _, want := range []string{"(not written: --dry-run)", `name = "c1.example.com"`, `service_id = "svc-c1"`,
		`"www.c1.example.com" = "http"`, "would adopt", `dir = "` + filepath.Join(w.deployRoot, "c1.example.com") + `"`} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run lacks %q:\n%s", want, out)
		}
	}
	if files, _ := filepath.Glob(filepath.Join(w.confd, "*")); len(files) != 0 {
		t.Errorf("--dry-run wrote %v", files)
	}
	if _, err := os.Stat(filepath.Join(w.deployRoot, "c1.example.com")); err == nil {
		t.Error("--dry-run adopted")
	}

	for _, tt := range []struct {
		name string
		args []string
		want string
		code int
	}{
		{"unknown service", []string{"--service-id", "nope"}, "--service-id: nope not in the account's certificate list", exitUsage},
		{"both selections", []string{"--service-id", "svc-c0", "--all"}, "exclude each other", exitUsage},
		{"first write", []string{"--service-id", "svc-c0"}, "", exitOK},
		{"no overwrite", []string{"--service-id", "svc-c0"}, "already configured in " + filepath.Join(w.confd, "c0.example.com.toml"), exitFailed},
		{"forced", []string{"--service-id", "svc-c0", "--force"}, "", exitOK},
		// c1's old certificate offered for c2: it does not cover c2's names.
		{"wrong certificate", []string{"--service-id", "svc-c2", "--adopt-from", filepath.Join(w.adopt, "c1.example.com")},
			"does not cover c2.example.com, www.c2.example.com of service svc-c2", exitFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := w.importCmd(tt.args...)
			if exitCode(err) != tt.code || (tt.want != "" && !strings.Contains(fmt.Sprint(err)+errOut, tt.want)) {
				t.Errorf("%v: %v (exit %d), want exit %d with %q\n%s\n%s", tt.args, err, exitCode(err), tt.code, tt.want, out, errOut)
			}
		})
	}
	if n := len(w.sb.Ledger()); n != charged {
		t.Errorf("import charged: the ledger went from %d to %d", charged, n)
	}
}

// TestImportAsRootGivesTheServiceItsFiles: run as root where dcvd is
// installed as a service, import leaves the fragments readable by the
// service's group (root's, 0640) and the adopted deploy directories the
// service's own, so that the daemon can read the first and renew into the
// second.
func TestImportAsRootGivesTheServiceItsFiles(t *testing.T) {
	requireRoot(t)
	old := serviceUser
	serviceUser = "nobody" // installed as a service whose user is nobody
	t.Cleanup(func() { serviceUser = old })
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody on this host")
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)

	w := newImportWorld(t)
	if out, errOut, err := w.importCmd("--all", "--adopt-from", w.adopt); err != nil {
		t.Fatalf("import --all: %v\n%s\n%s", err, out, errOut)
	}
	frags, _ := filepath.Glob(filepath.Join(w.confd, "*.toml"))
	if len(frags) != 3 {
		t.Fatalf("fragments %v, want 3", frags)
	}
	for _, f := range frags {
		st := statOwner(t, f)
		if st.Uid != 0 || int(st.Gid) != gid {
			t.Errorf("%s is %d:%d, want root's with the service's group %d", f, st.Uid, st.Gid, gid)
		}
	}
	n := 0
	filepath.WalkDir(w.deployRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == w.deployRoot {
			return err
		}
		n++
		if st := statOwner(t, p); int(st.Uid) != uid || int(st.Gid) != gid {
			t.Errorf("%s is %d:%d, want the service's %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
		return nil
	})
	if n == 0 {
		t.Fatal("nothing was adopted into the deploy root")
	}
}

func statOwner(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}
